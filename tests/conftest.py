"""Fixtures shared by every test: a clean plugin/profile environment and helpers to make plugins."""

from __future__ import annotations

import os
import shutil
import textwrap
import uuid
from pathlib import Path

import pytest

from edgesdk.cli.app import main
from edgesdk.plugin import manager as plugin_manager

BUILTIN_DEVICES = ["phone", "pc", "xr-headset", "automotive", "iot", "mcu"]


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One compile cache for the whole run: tests share builds, the user's cache is untouched."""
    return tmp_path_factory.mktemp("edgesdk-cache")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, session_cache):
    """No user plugins or profiles leak in from the machine; plugins load afresh per test."""
    for name in ("EDGESDK_PLUGINS", "EDGESDK_PROFILE_PATH", "EDGESDK_TRACE_PLUGINS", "EDGESDK_DEBUG", "EDGESDK_TEST_CRASH", "EDGESDK_COMPILE_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(session_cache))
    plugin_manager.reset()
    yield
    plugin_manager.reset()


@pytest.fixture
def make_plugin(tmp_path, monkeypatch):
    """Write a plugin module outside the repo and add it to EDGESDK_PLUGINS; returns its name."""
    directory = tmp_path / "third_party"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    names: list[str] = []

    def make(source: str, stem: str = "plugin") -> str:
        name = f"{stem}_{uuid.uuid4().hex[:8]}"
        (directory / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        monkeypatch.setenv("EDGESDK_PLUGINS", ",".join(names))
        plugin_manager.reset()
        return name

    return make


@pytest.fixture
def profile_dir(tmp_path, monkeypatch):
    """A directory on EDGESDK_PROFILE_PATH; write(name, yaml_text) adds a profile file to it."""
    directory = tmp_path / "profiles"
    directory.mkdir()
    monkeypatch.setenv("EDGESDK_PROFILE_PATH", str(directory))

    def write(filename: str, text: str) -> Path:
        path = directory / filename
        path.write_text(textwrap.dedent(text))
        return path

    write.directory = directory
    return write


@pytest.fixture
def run_cli(capsys):
    """Run the real entry point in-process: returns (exit_code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def pytest_runtest_setup(item):
    """Tests marked `emulator` need QEMU and the ARM compiler, tests marked `browser` Chromium:
    skipped where they are missing, except in CI, where `make test` installs them and a missing
    tool is a failure."""
    if item.get_closest_marker("browser") is not None and shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: chromium not found")
        pytest.skip("chromium not found (Debian: apt-get install chromium)")
    if item.get_closest_marker("emulator") is None:
        return
    from edgesdk.artifact.emulation import LINUX_USER, missing_tools

    missing = missing_tools() or missing_tools(LINUX_USER["aarch64"])
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the emulation tests: {missing}")
        pytest.skip(missing)
