"""`edgesdk new`: templates come from the plugins, render without questions into a new or empty
directory, and bad input is one `error:` line with exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

import edgesdk
from edgesdk.plugin import manager as plugin_manager
from edgesdk.verbs.new import parse_data, templates

BUILTIN_TEMPLATES = files("edgesdk_templates")
PLUGIN_FILES = ["README.md", "pyproject.toml", "src/edgesdk_acme_npu/__init__.py", "src/edgesdk_acme_npu/acme-npu.yaml", "tests/test_device.py"]


def serve_template(make_plugin, name: str, path: Path, kind: str = "plugin") -> str:
    """A test plugin serving one template; returns the plugin's name."""
    return make_plugin(
        f"""
        from edgesdk.plugin import Template, hookimpl

        @hookimpl
        def edgesdk_templates():
            return [Template(name={name!r}, kind={kind!r}, description="a test template", path={str(path)!r})]
        """,
        stem="templates_plugin",
    )


def tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_the_builtin_templates_are_listed_with_their_plugin():
    offered = templates()
    assert [(offer.template.name, offer.template.kind, offer.plugin) for offer in offered] == [("app", "app", "templates"), ("plugin", "plugin", "templates")]
    assert all((offer.template.path / "copier.yml").is_file() for offer in offered)


def test_new_list_prints_both_templates(run_cli):
    code, out, err = run_cli("new", "--list")
    assert code == 0 and err == ""
    assert "app" in out and "plugin" in out and "templates" in out
    code, out, err = run_cli("new", "--list", "--json")
    assert code == 0 and err == ""
    assert [(record["name"], record["kind"], record["plugin"]) for record in json.loads(out)] == [
        ("app", "app", "templates"),
        ("plugin", "plugin", "templates"),
    ]


def test_new_plugin_renders_the_package_and_nothing_else(tmp_path):
    path = edgesdk.new("plugin", "acme-npu", tmp_path / "acme")
    assert path == tmp_path / "acme"
    assert sorted(tree(path)) == PLUGIN_FILES  # no copier answers file, no copier.yml
    assert [item.name for item in tmp_path.iterdir()] == ["acme"]  # the staging directory is gone
    pyproject = tomllib.loads((path / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "edgesdk-acme-npu"
    assert pyproject["project"]["entry-points"]["edgesdk"] == {"acme-npu": "edgesdk_acme_npu"}
    profile = yaml.safe_load((path / "src/edgesdk_acme_npu/acme-npu.yaml").read_text())
    assert profile == {
        "id": "acme-npu",
        "extends": "phone",
        "name": "Acme Npu",
        "description": "A device that starts from edgesdk's phone profile.",
        "backend": "acme-npu",
    }


@pytest.mark.parametrize(
    ("extends", "emit", "toolchain"),
    [("phone", "shared_library", "aarch64-linux-gnu"), ("pc", "shared_library", "x86_64-linux-gnu"), ("mcu", "c_source", "arm-none-eabi-gcc")],
)
def test_the_rendered_plugin_adds_its_device_and_backend(tmp_path, monkeypatch, extends, emit, toolchain):
    name = f"board-{extends}"
    path = edgesdk.new("plugin", name, tmp_path / name, {"extends": extends, "title": "Board's test"})
    monkeypatch.syspath_prepend(str(path / "src"))
    monkeypatch.setenv("EDGESDK_PLUGINS", f"edgesdk_board_{extends}")
    plugin_manager.reset()
    device = edgesdk.get_device(name)
    assert device.name == "Board's test" and device.target == edgesdk.get_device(extends).target
    (backend,) = [backend for plugin, backend in plugin_manager.collect("edgesdk_backends") if plugin == f"edgesdk_board_{extends}"]
    assert backend.serves(device) and backend.emit == emit
    assert toolchain in backend.toolchain.model_dump_json()


def test_new_app_writes_a_config_from_the_answers(run_cli, tmp_path):
    out = tmp_path / "demo"
    code, stdout, err = run_cli(
        "new", "app", "hand-demo", "-o", str(out), "--json",
        "--data", "model=/models/hand.onnx", "--data", "input_shapes=frames=1,3,96,96 extra=2,8", "--data", "devices=pc,xr-headset",
        "--data", "quantize=int8", "--data", "calibration=samples.npz",
    )  # fmt: skip
    assert code == 0 and err == ""
    record = json.loads(stdout)
    assert record == {
        "template": "app",
        "name": "hand-demo",
        "path": str(out),
        "files": ["README.md", "deploy.yaml", "hand_demo/__init__.py", "hand_demo/__main__.py", "pyproject.toml", "tests/test_deploy.py"],
    }
    config = yaml.safe_load((out / "deploy.yaml").read_text())
    assert config == {
        "model": "/models/hand.onnx",
        "input_shapes": {"frames": [1, 3, 96, 96], "extra": [2, 8]},
        "devices": ["pc", "xr-headset"],
        "quantize": "int8",
        "calibration": "samples.npz",
        "out": "build",
    }


def test_new_app_defaults(tmp_path):
    config = yaml.safe_load((edgesdk.new("app", "demo", tmp_path / "demo") / "deploy.yaml").read_text())
    assert config == {"model": "model.onnx", "input_shapes": {}, "devices": ["pc", "phone"], "quantize": "none", "calibration": None, "out": "build"}


def test_the_default_destination_is_name_in_the_current_directory(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("new", "plugin", "acme-npu")
    assert code == 0 and err == ""
    assert out.splitlines()[0] == f"created {tmp_path / 'acme-npu'} from the template 'plugin':"
    assert sorted(tree(tmp_path / "acme-npu")) == PLUGIN_FILES


def test_an_empty_destination_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    assert sorted(tree(edgesdk.new("plugin", "acme-npu", tmp_path / "empty"))) == PLUGIN_FILES


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["nope", "acme"], "error: unknown template 'nope'"),
        (["plugin", "Acme_NPU"], "error: name 'Acme_NPU': use lowercase letters and digits, words joined by single hyphens (e.g. acme-npu)"),
        (["plugin", "acme--npu"], "error: name 'acme--npu': use lowercase letters and digits, words joined by single hyphens (e.g. acme-npu)"),
        (["plugin", "acme", "--data", "extends"], "error: --data 'extends': expected KEY=VALUE, KEY one of the template's questions"),
        (["plugin", "acme", "--data", "=pc"], "error: --data '=pc': expected KEY=VALUE, KEY one of the template's questions"),
        (["plugin", "acme", "--data", "extends=pc", "--data", "extends=mcu"], "error: --data extends: given twice"),
        (
            ["plugin", "acme", "--data", "extend=pc"],
            "error: template 'plugin' has no question 'extend'; it asks: description, distribution, extends, module, title",
        ),
        (["plugin", "acme", "--data", "name=other"], "error: name: give it as NAME, not in --data"),
        (
            ["plugin", "acme", "--data", "extends=laptop"],
            "error: template 'plugin': Invalid choice for 'extends': 'laptop' is not in ['phone', 'pc', 'xr-headset', 'automotive', 'iot', 'mcu']",
        ),
        (
            ["app", "demo", "--data", "input_shapes=frames"],
            "error: template 'app': Validation error for question 'input_shapes': 'frames': expected NAME=D1,D2,...",
        ),
        (["plugin"], "error: give a TEMPLATE and a NAME, e.g. `edgesdk new plugin acme-npu`"),
        (["plugin", "acme", "--list"], "error: --list takes no TEMPLATE or NAME"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(run_cli, tmp_path, args, error):
    code, out, err = run_cli("new", *args, "-o", str(tmp_path / "out"), "--json")
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0] == error and all(line.startswith("hint: ") for line in lines[1:2]) and len(lines) <= 2
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging left behind


def test_a_non_empty_destination_is_refused_and_left_untouched(run_cli, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (mine / "README.md").write_text("my readme")
    before = tree(mine)
    code, out, err = run_cli("new", "plugin", "acme-npu", "-o", str(mine))
    assert code == 2 and out == ""
    assert err.splitlines()[0] == f"error: {mine}: exists and is not empty; refusing to write into it"
    assert tree(mine) == before and [item.name for item in tmp_path.iterdir()] == ["mine"]
    with pytest.raises(edgesdk.UserInputError, match="exists and is not empty"):
        edgesdk.new("app", "demo", mine)
    assert tree(mine) == before


def test_a_file_as_destination_is_refused(run_cli, tmp_path):
    (tmp_path / "file").write_text("keep")
    code, _, err = run_cli("new", "app", "demo", "-o", str(tmp_path / "file"))
    assert code == 2 and err.splitlines()[0] == f"error: {tmp_path / 'file'}: exists and is not a directory; refusing to replace it"
    assert (tmp_path / "file").read_text() == "keep"


def test_two_plugins_serving_one_template_name_is_an_error_naming_both(make_plugin, run_cli, tmp_path):
    other = serve_template(make_plugin, "plugin", BUILTIN_TEMPLATES / "plugin")
    for args in (["new", "--list"], ["new", "app", "demo", "-o", str(tmp_path / "demo")]):
        code, out, err = run_cli(*args)
        assert code == 2 and out == ""
        assert err.splitlines()[0] == f"error: template 'plugin' is served by two plugins, 'templates' and '{other}'"
    with pytest.raises(edgesdk.UserInputError, match=f"'templates' and '{other}'"):
        templates()
    assert not (tmp_path / "demo").exists()


def test_a_plugins_template_renders_from_a_directory_outside_git_with_no_git_installed(make_plugin, tmp_path):
    """A third-party template, copied out of edgesdk's git checkout; `git` is not on PATH."""
    template = tmp_path / "board-template"
    shutil.copytree(BUILTIN_TEMPLATES / "plugin", template)
    plugin = serve_template(make_plugin, "board", template)
    no_git = tmp_path / "bin"
    no_git.mkdir()
    env = {**os.environ, "PATH": str(no_git), "PYTHONPATH": os.pathsep.join([str(tmp_path / "third_party"), os.environ.get("PYTHONPATH", "")])}
    assert shutil.which("git", path=env["PATH"]) is None
    result = subprocess.run(
        [sys.executable, "-m", "edgesdk", "new", "board", "acme-npu", "-o", str(tmp_path / "out"), "--data", "extends=pc", "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout)["files"] == PLUGIN_FILES
    assert yaml.safe_load((tmp_path / "out/src/edgesdk_acme_npu/acme-npu.yaml").read_text())["extends"] == "pc"
    assert plugin in os.environ["EDGESDK_PLUGINS"]


def test_a_template_that_fails_to_render_leaves_nothing_and_names_its_plugin(make_plugin, run_cli, tmp_path):
    template = tmp_path / "broken"
    (template / "project").mkdir(parents=True)
    (template / "copier.yml").write_text("_subdirectory: project\nname:\n  type: str\n")
    (template / "project" / "README.md.jinja").write_text("# {{ name }\n")  # a Jinja syntax error
    plugin = serve_template(make_plugin, "broken", template)
    code, out, err = run_cli("new", "broken", "demo", "-o", str(tmp_path / "out" / "demo"))
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith("error: template 'broken' failed to render: TemplateSyntaxError: ")
    assert lines[1] == f"hint: the template is served by the plugin '{plugin}'; report it to its authors"
    assert list((tmp_path / "out").iterdir()) == []


def test_a_template_without_copier_yml_is_reported_with_its_plugin(make_plugin, run_cli, tmp_path):
    (tmp_path / "empty-template").mkdir()
    plugin = serve_template(make_plugin, "bare", tmp_path / "empty-template")
    code, _, err = run_cli("new", "bare", "demo", "-o", str(tmp_path / "demo"))
    assert code == 1
    assert err.splitlines() == [
        f"error: template 'bare': {tmp_path / 'empty-template'} has no copier.yml",
        f"hint: the plugin '{plugin}' serves a template edgesdk cannot render; report it to its authors",
    ]


def test_a_hook_item_that_is_not_a_template_is_skipped_with_a_warning(make_plugin, caplog):
    name = make_plugin(
        """
        from edgesdk.plugin import hookimpl

        @hookimpl
        def edgesdk_templates():
            return ["not a template"]
        """
    )
    assert [offer.template.name for offer in templates()] == ["app", "plugin"]
    assert f"plugin '{name}': edgesdk_templates returned a str, not an edgesdk.Template; skipped" in caplog.text


def test_parse_data_keeps_equals_signs_in_values():
    assert parse_data(["input_shapes=frames=1,3,96,96", "description="]) == {"input_shapes": "frames=1,3,96,96", "description": ""}
