"""The built-in `templates` plugin: it serves `app` and `plugin` through `edgesdk_templates`, like
any plugin, and what they render works: the generated plugin's own tests pass, and the generated
app deploys the bundled example model to its devices."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path

import onnx
import pytest
import yaml

import edgesdk
from edgesdk_plugins import templates as templates_plugin

REPO = Path(__file__).resolve().parents[2]


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, **env}, check=False)


def test_the_hook_serves_app_and_plugin_from_the_templates_package():
    served = templates_plugin.edgesdk_templates()
    assert [(template.name, template.kind) for template in served] == [("app", "app"), ("plugin", "plugin")]
    for template in served:
        assert isinstance(template, edgesdk.Template) and template.description
        assert template.path == Path(str(files("edgesdk_templates"))) / template.name
        assert (template.path / "copier.yml").is_file() and (template.path / "project").is_dir()


def test_it_is_a_builtin_plugin_of_the_public_group():
    (declared,) = [ep for ep in entry_points(group="edgesdk") if ep.name == "templates"]
    assert declared.value == "edgesdk_plugins.templates" and declared.dist.name == "edgesdk"
    info = {info.name: info for info in edgesdk.plugins()}["templates"]
    assert info.builtin and info.hooks == ("edgesdk_templates",) and info.error is None


@pytest.mark.slow
def test_the_generated_plugins_own_tests_pass(tmp_path):
    """As a plugin author runs them before installing: src on PYTHONPATH, the module in EDGESDK_PLUGINS."""
    project = edgesdk.new("plugin", "acme-npu", tmp_path / "acme-npu")
    result = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], project,
        PYTHONPATH=str(project / "src"), EDGESDK_PLUGINS="edgesdk_acme_npu",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


@pytest.mark.slow
def test_the_generated_app_deploys_the_bundled_example_to_each_device(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from make_example import hand_tracker

    model = tmp_path / "hand_tracker.onnx"
    onnx.save(hand_tracker(), model)
    project = edgesdk.new(
        "app", "hand-demo", tmp_path / "hand-demo",
        {"model": str(model), "input_shapes": "frames=1,3,96,96", "devices": "pc,xr-headset"},
    )  # fmt: skip

    tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout

    command = run([sys.executable, "-m", "hand_demo"], project)
    assert command.returncode == 0, command.stderr
    assert [line.split(": verified, ")[0] for line in command.stdout.splitlines()] == ["pc", "xr-headset"]
    for device in ("pc", "xr-headset"):
        assert edgesdk.load_artifact(project / "build" / f"hand_tracker-{device}").manifest.verification.passed

    # A device that fails stops only itself, and the exit code says how the worst one failed.
    config = yaml.safe_load((project / "deploy.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**config, "model": str(model), "devices": ["nope", "pc"]}))
    command = run([sys.executable, "-m", "hand_demo", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "out")], project)
    assert command.returncode == 2
    assert command.stderr.startswith("nope: error: unknown device 'nope'")
    assert command.stdout.startswith("pc: verified, max abs err ")
