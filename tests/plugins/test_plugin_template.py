"""The plugin template is a working third-party plugin, shipped with edgesdk."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.resources import files

TEMPLATE = files("edgesdk_templates") / "plugin"


def test_template_declares_the_entry_point_group():
    pyproject = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["edgesdk"] == {"example-board": "edgesdk_example_board"}


def test_template_plugin_loads_and_its_own_test_passes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TEMPLATE / "src"), "EDGESDK_PLUGINS": "edgesdk_example_board"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(TEMPLATE / "tests")],
        capture_output=True, text=True, env=env, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
