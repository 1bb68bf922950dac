"""Docs stay true: every hook is documented, every command has a section, references are current,
and the site builds with mkdocs --strict."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgesdk import reference_docs
from edgesdk.cli.app import make_app
from edgesdk.plugin import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"
HOOKS = [name for name in hookspecs.__all__ if name.startswith("edgesdk_")]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_documented_heading_and_signature(hook):
    guide = (DOCS / "plugin-guide.md").read_text()
    assert f"### {hook}\n" in guide
    assert re.search(rf"def {hook}\(", guide), f"plugin-guide.md shows no signature for {hook}"


def test_every_builtin_command_is_in_the_cli_reference():
    reference, generated = ((DOCS / "reference" / name).read_text() for name in ("cli.md", "commands.md"))
    for command in make_app().registered_commands:
        assert f"## edgesdk {command.name}\n" in reference
        assert f"## `edgesdk {command.name}`\n" in generated


@pytest.mark.parametrize("filename", sorted(reference_docs.PAGES))
def test_generated_reference_is_current(filename):
    committed = (DOCS / "reference" / filename).read_text()
    assert committed == reference_docs.PAGES[filename](), "regenerate with: python -m edgesdk.reference_docs docs/reference"


def test_relative_links_resolve():
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(DOCS)} links to missing {target}"


def test_the_site_builds_with_strict_checks(tmp_path):
    """`make docs`: a broken link or anchor, or a page missing from the nav, fails the build."""
    config = DOCS.parent / "mkdocs.yml"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    for page in DOCS.rglob("*.md"):
        assert (tmp_path / "site" / page.relative_to(DOCS).with_suffix(".html")).is_file(), page
    # The check can fail: a copy of the docs with a page linking to nothing does not build.
    shutil.copytree(DOCS, tmp_path / "copy" / "docs")
    shutil.copy(config, tmp_path / "copy" / "mkdocs.yml")
    (tmp_path / "copy" / "docs" / "reports.md").write_text("# Reports\n\n[nothing](nothing.md)\n")
    failed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(tmp_path / "copy" / "mkdocs.yml"), "--site-dir", str(tmp_path / "broken")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert failed.returncode != 0 and "nothing.md" in failed.stderr
