"""Plugin passes (`edgesdk_passes`): chosen with --pass NAME[=JSON] / deploy(passes=...), configs
validated by each pass's own model, run at their stage, listed in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgesdk
from edgesdk.plugin import manager as plugin_manager
from edgesdk.plugin.passes import choose, parse_pass_options
from edgesdk.testing.models import tiny_cnn

HERE = Path(__file__).parent


@pytest.fixture
def sample_passes(monkeypatch):
    """tests/plugin/sample_passes.py as an installed plugin, for this process and the TVM worker."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    monkeypatch.setenv("EDGESDK_PLUGINS", "sample_passes")
    plugin_manager.reset()


def test_choices_are_validated_by_each_pass_own_config_model(sample_passes):
    scale, floor = choose({"scale-outputs": '{"factor": 3}', "relu-as-maximum": None})
    assert (scale.plugin, scale.stage, scale.config) == ("sample_passes", "onnx", {"factor": 3.0})
    assert (floor.stage, floor.config) == ("relax", {"floor": 0.0})
    with pytest.raises(edgesdk.UserInputError, match=r"^--pass nope: no installed plugin offers it$") as caught:
        choose({"nope": None})
    assert caught.value.hint == "installed passes: relu-as-maximum, scale-outputs"
    with pytest.raises(edgesdk.UserInputError, match=r"^--pass scale-outputs: factor: Input should be a valid number"):
        choose({"scale-outputs": {"factor": "big"}})
    with pytest.raises(edgesdk.UserInputError, match=r"^--pass scale-outputs: .*[Ee]xtra inputs are not permitted"):
        choose({"scale-outputs": {"factr": 2}})
    with pytest.raises(edgesdk.UserInputError, match=r"^--pass scale-outputs: its config is not JSON"):
        choose({"scale-outputs": "{factor: 2"})
    assert parse_pass_options(["a", 'b={"x": 1}']) == {"a": None, "b": '{"x": 1}'}
    with pytest.raises(edgesdk.UserInputError, match="given twice"):
        parse_pass_options(["a", "a=1"])


def test_a_pass_name_offered_by_two_plugins_is_an_error_naming_both(sample_passes, make_plugin, monkeypatch):
    other = make_plugin(
        """
        from pydantic import BaseModel
        from edgesdk.plugin import Pass, hookimpl

        class Same(Pass):
            name = "scale-outputs"
            stage = "onnx"
            config_model = BaseModel

            def run(self, module, config):
                return module

        @hookimpl
        def edgesdk_passes():
            return [Same()]
        """
    )
    monkeypatch.setenv("EDGESDK_PLUGINS", f"sample_passes,{other}")
    plugin_manager.reset()
    with pytest.raises(edgesdk.UserInputError, match="pass 'scale-outputs' is provided by two plugins: ") as caught:
        choose({"scale-outputs": None})
    assert sorted(str(caught.value).rsplit(": ", 1)[1].split(" and ")) == sorted(["sample_passes", other])


@pytest.mark.slow
def test_passes_change_the_artifact_at_their_stage_and_are_verified(sample_passes, tmp_path):
    model = tiny_cnn()
    shapes = {"image": [1, 3, 32, 32]}
    x = {"image": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    plain = edgesdk.deploy(model, "pc", tmp_path / "plain", input_shapes=shapes)
    scaled = edgesdk.deploy(model, "pc", tmp_path / "scaled", input_shapes=shapes, passes={"scale-outputs": {"factor": 3}})
    # onnx stage: the reference is the transformed model, so it verifies, and its outputs are 3x.
    assert scaled.manifest.verification.passed
    np.testing.assert_allclose(scaled.run(x)["probs"], 3 * plain.run(x)["probs"], rtol=1e-5, atol=1e-6)
    assert [(p.name, p.plugin, p.stage, p.config) for p in scaled.manifest.passes] == [("scale-outputs", "sample_passes", "onnx", {"factor": 3.0})]
    assert "Mul" in [node.op_type for node in onnx.load(str(scaled.path / "model.onnx")).graph.node] and plain.manifest.passes == []

    # relax stage: the same meaning, other kernels (relu became maximum); still verified.
    rewritten = edgesdk.deploy(model, "pc", tmp_path / "relax", input_shapes=shapes, passes={"relu-as-maximum": None})
    kernels = lambda artifact: [k["name"] for k in json.loads((artifact.path / "analysis.json").read_text())["kernels"]]  # noqa: E731
    assert any("relu" in name for name in kernels(plain)) and not any("relu" in name for name in kernels(rewritten))
    assert any("maximum" in name for name in kernels(rewritten))
    assert rewritten.manifest.verification.passed and rewritten.manifest.build.cache_key != plain.manifest.build.cache_key
    np.testing.assert_allclose(rewritten.run(x)["probs"], plain.run(x)["probs"], rtol=1e-5, atol=1e-6)

    # A relax pass that changes the meaning is caught by verification (exit 1).
    with pytest.raises(edgesdk.CheckFailed, match="numerics differ from onnxruntime"):
        edgesdk.deploy(model, "pc", tmp_path / "wrong", input_shapes=shapes, passes={"relu-as-maximum": {"floor": 0.5}})


@pytest.mark.slow
def test_the_pass_option_on_the_command_line(sample_passes, tmp_path, run_cli):
    onnx.save(tiny_cnn(), tmp_path / "cnn.onnx")
    code, out, err = run_cli(
        "deploy",
        str(tmp_path / "cnn.onnx"),
        "--device",
        "pc",
        "--input-shape",
        "image=1,3,32,32",
        "--pass",
        'scale-outputs={"factor": 0.5}',
        "-o",
        str(tmp_path / "a"),
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["passes"] == [{"name": "scale-outputs", "plugin": "sample_passes", "stage": "onnx", "config": {"factor": 0.5}}]
    code, out, err = run_cli(
        "deploy", str(tmp_path / "cnn.onnx"), "--device", "pc", "--input-shape", "image=1,3,32,32", "--pass", "nope", "-o", str(tmp_path / "b")
    )
    assert (code, out) == (2, "") and err.splitlines()[0] == "error: --pass nope: no installed plugin offers it"
    assert not (tmp_path / "b").exists()
