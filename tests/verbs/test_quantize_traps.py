"""`edgesdk quantize` and friends without traps: each test is one trap a user fell into."""

import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edgesdk
from edgesdk.errors import UserInputError
from edgesdk.frontend.model import TensorSpec
from edgesdk.frontend.tensors import as_dtype
from edgesdk.testing.models import mlp, opset_net


def _dims(path) -> list:
    value = onnx.load(str(path)).graph.input[0]
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.fixture
def mlp_file(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp(), path)
    return path


def test_weight_only_schemes_need_no_calibration(mlp_file, tmp_path, run_cli):
    code, out, err = run_cli("quantize", str(mlp_file), "--scheme", "w4a16", "--input-shape", "features=1,64", "-o", str(tmp_path / "w4.onnx"))
    assert code == 0, err
    assert "accuracy not measured: no --calibration" in out
    assert (tmp_path / "w4.onnx").is_file() and (tmp_path / "w4.encodings.json").is_file()
    report = edgesdk.quantize(mlp_file, None, tmp_path / "w8.onnx", scheme="w8a16", input_shapes={"features": [1, 64]})
    assert report.accuracy is None and report.drop_pt is None


def test_calibration_defines_the_input_shape_and_the_export_keeps_dynamic_dims(mlp_file, tmp_path):
    samples = {"features": np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)}  # stacked on the dynamic batch
    report = edgesdk.quantize(mlp_file, samples, tmp_path / "q.onnx", scheme="int8")  # no input_shapes
    assert report.samples == 32 and report.accuracy.top1_agreement > 0.9
    assert _dims(tmp_path / "q.onnx") == ["N", 64]
    batch = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    (logits,) = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"features": batch})
    assert logits.shape == (5, 10)


def test_an_opset_11_export_keeps_its_dynamic_batch_at_the_opset_int8_needs(tmp_path):
    onnx.save(opset_net(11), tmp_path / "net.onnx")
    samples = {"image": np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)}
    edgesdk.quantize(tmp_path / "net.onnx", samples, tmp_path / "q.onnx", scheme="w4a8")
    exported = onnx.load(str(tmp_path / "q.onnx"))
    onnx.checker.check_model(exported, full_check=True)
    assert _dims(tmp_path / "q.onnx") == ["N", 3, 16, 16]
    (probs,) = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": samples["image"][:3]})
    assert probs.shape == (3, 10)


def test_fewer_than_16_calibration_samples_is_a_warning_naming_the_risk(mlp_file, tmp_path, run_cli):
    np.savez(tmp_path / "few.npz", features=np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32))
    code, _, err = run_cli("quantize", str(mlp_file), "--calibration", str(tmp_path / "few.npz"), "-o", str(tmp_path / "q.onnx"))
    assert code == 0, err
    assert "warning: only 4 calibration samples (fewer than 16): activation ranges fitted to so few inputs" in err


def test_a_failure_inside_our_own_step_is_a_bug_report_naming_the_file(mlp_file, tmp_path, run_cli, monkeypatch):
    import edgesdk.quantization.schemes as schemes

    def broken(*args, **kwargs):
        raise RuntimeError("index out of range\nmore detail")

    monkeypatch.setattr(schemes, "quantize_int8", broken)
    np.savez(tmp_path / "cal.npz", features=np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32))
    code, out, err = run_cli("quantize", str(mlp_file), "--calibration", str(tmp_path / "cal.npz"), "-o", str(tmp_path / "q.onnx"))
    assert (code, out) == (1, "")
    assert err.splitlines()[0] == f"error: quantize: {mlp_file}: RuntimeError: index out of range"
    assert "this is a bug in edgesdk, please report it" in err
    assert not (tmp_path / "q.onnx").exists()


def test_bad_input_stays_exit_2_and_names_the_file(mlp_file, tmp_path, run_cli):
    np.savez(tmp_path / "cal.npz", features=np.zeros((16, 65), np.float32))
    code, _, err = run_cli("quantize", str(mlp_file), "--calibration", str(tmp_path / "cal.npz"), "-o", str(tmp_path / "q.onnx"))
    assert code == 2
    assert (
        err.splitlines()[0] == f"error: {mlp_file}: the calibration samples of 'features' [16, 65]: shape [1, 65] contradicts the model's fixed dims ['N', 64]"
    )


SPEC = TensorSpec("x", (2,), "float32")


def test_conversions_that_keep_every_value_are_silent(caplog):
    with caplog.at_level(logging.WARNING, logger="edgesdk"):
        assert as_dtype(np.array([1, 2], np.int8), SPEC, "in.npz").dtype == np.float32
        assert as_dtype(np.array([1, 2], np.float16), SPEC, "in.npz").dtype == np.float32
    assert caplog.records == []


def test_float64_to_float32_is_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="edgesdk"):
        assert as_dtype(np.array([0.1, 0.2]), SPEC, "in.npz").dtype == np.float32
    assert [r.getMessage() for r in caplog.records] == ["in.npz: input 'x' is float64, converted to the model's float32"]


def test_int64_to_float32_is_an_error_unless_cast(caplog):
    big = np.array([2**40 + 1, 3], np.int64)
    with pytest.raises(UserInputError, match="input 'x' is int64, the model expects float32; converting could change its values"):
        as_dtype(big, SPEC, "in.npz")
    with caplog.at_level(logging.WARNING, logger="edgesdk"):
        assert as_dtype(big, SPEC, "in.npz", cast=True).dtype == np.float32
    assert len(caplog.records) == 1


def test_fp16_says_once_what_it_clamped_instead_of_a_warning_per_tensor(recwarn):
    from onnx import numpy_helper

    from edgesdk.frontend.model import load_model
    from edgesdk.quantization.recipe import recipe
    from edgesdk.quantization.schemes import apply_scheme

    proto = mlp()
    weight = proto.graph.initializer[0]
    tiny = numpy_helper.to_array(weight).copy()
    tiny.flat[0] = 1e-12  # below float16's smallest subnormal
    weight.CopyFrom(numpy_helper.from_array(tiny, weight.name))
    precision = apply_scheme(load_model(proto, {"features": [1, 64]}), recipe("fp16", None, None))
    assert [w for w in recwarn if "truncated" in str(w.message)] == []
    assert any(note.startswith("weights beyond float16's range clamped to it in ") for note in precision.compiled.notes)


def test_integer_schemes_pass_a_few_one_step_strays_but_not_a_wrong_output():
    from edgesdk.frontend.agreement import compare

    reference = np.random.default_rng(0).random(10_000).astype(np.float32)
    stray = reference.copy()
    stray[:5] += 0.2  # five values a few steps apart: what rounding flips through a network do
    assert not compare(stray, reference).passed
    check = compare(stray, reference, float_rtol=5e-2, stray_share=1e-3)
    assert check.passed and check.beyond_tolerance == 5
    broad = reference + np.where(np.arange(reference.size) % 50 == 0, 0.2, 0.0).astype(np.float32)  # 2% of values off
    assert not compare(broad, reference, float_rtol=5e-2, stray_share=1e-3).passed


def _constant_weights_and_a_cast_into_range() -> onnx.ModelProto:
    """What Paddle2ONNX and PyTorch export and the first exports tripped on: a conv weight held by a
    Constant node (PP-OCR), and an int64 -> float Cast feeding Range (YOLOv8n's anchors)."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(weight, "w")),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["c"], ["shape"]),
        helper.make_node("Gather", ["shape", "three"], ["width"], axis=0),
        helper.make_node("Cast", ["width"], ["width_f"], to=TensorProto.FLOAT),
        helper.make_node("Range", ["zero", "width_f", "one"], ["ramp"]),
        helper.make_node("Add", ["c", "ramp"], ["y"]),
    ]
    constants = [
        numpy_helper.from_array(np.array(3, np.int64), "three"),
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
        numpy_helper.from_array(np.array(1, np.float32), "one"),
    ]
    graph = helper.make_graph(
        nodes, "exported", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])], constants,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("scheme", ["w4a16", "int8"])
def test_exported_weights_in_constant_nodes_are_quantized_and_the_export_loads(tmp_path, scheme):
    source = tmp_path / "exported.onnx"
    onnx.save(_constant_weights_and_a_cast_into_range(), source)
    samples = {"x": np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32)}
    report = edgesdk.quantize(source, samples, tmp_path / "q.onnx", scheme=scheme)
    written = onnx.load(str(tmp_path / "q.onnx"))
    # The Constant-node weight was found and quantized (it used to stay float, silently).
    assert list(json.loads((tmp_path / "q.encodings.json").read_text())["param_encodings"]) == ["w"]
    assert any(node.op_type == "DequantizeLinear" and node.input[0] == "w_quantized" for node in written.graph.node)
    # onnxruntime loads and runs it (float16's converter had left the Cast declaring one type, making another).
    (y,) = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": samples["x"][:2]})
    assert y.shape == (2, 8, 16, 16) and report.accuracy.cosine > 0.99


def test_a_model_with_nothing_to_quantize_says_so(tmp_path, caplog):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "relu.onnx")
    with caplog.at_level(logging.WARNING, logger="edgesdk"):
        edgesdk.quantize(tmp_path / "relu.onnx", None, tmp_path / "q.onnx", scheme="w4a16")
    assert "no conv/matmul weight could be quantized (w4a16)" in caplog.text


def test_analyze_lists_only_layers_the_scheme_can_quantize(tmp_path):
    from edgesdk.quantization.ptq import named_nodes
    from edgesdk.testing.models import transformer_block

    proto = transformer_block(d_model=32, heads=2, ffn=64)
    onnx.save(proto, tmp_path / "block.onnx")
    samples = {"tokens": np.random.default_rng(0).standard_normal((16, 8, 32)).astype(np.float32)}
    report = edgesdk.quantize(tmp_path / "block.onnx", samples, tmp_path / "q.onnx", scheme="w4a16", analyze=True)
    proto = named_nodes(proto)  # the names quantize gives unnamed nodes
    weights = {init.name for init in proto.graph.initializer}
    with_weights = {node.name for node in proto.graph.node if node.op_type in ("MatMul", "Gemm") and node.input[1] in weights}
    computed = {node.name for node in proto.graph.node if node.op_type == "MatMul" and node.input[1] not in weights}
    listed = {layer.node for layer in report.sensitivity}
    # Attention's Q x K^T and P x V multiply two activations: nothing for a weight-only scheme to quantize.
    assert computed and not listed & computed and listed == with_weights
