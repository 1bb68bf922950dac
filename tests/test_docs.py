"""Docs stay true: every hook is documented, every command has a section, references are current."""

from __future__ import annotations

import re
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
    reference = (DOCS / "reference" / "cli.md").read_text()
    for command in make_app().registered_commands:
        assert f"## edgesdk {command.name}\n" in reference


@pytest.mark.parametrize("filename", sorted(reference_docs.PAGES))
def test_generated_reference_is_current(filename):
    committed = (DOCS / "reference" / filename).read_text()
    assert committed == reference_docs.PAGES[filename](), "regenerate with: python -m edgesdk.reference_docs docs/reference"


def test_relative_links_resolve():
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(DOCS)} links to missing {target}"
