"""int8 quantization end to end: QDQ models become integer kernels, checked in the lowered TIR."""

import json
import re

import numpy as np
import onnx
import pytest

import edgesdk
from edgesdk.testing.models import depthwise_net, tiny_cnn

pytestmark = pytest.mark.slow

SHAPES = {"image": [1, 3, 32, 32]}


def calibration(n=16, shape=(3, 32, 32), seed=0):
    return {"image": np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)}


def ort_qdq_model(tmp_path, activations="QInt8"):
    """tiny_cnn quantized by onnxruntime's own quantize_static (QDQ, per-channel int8 weights)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgesdk.model import load_model

    onnx.save(load_model(tiny_cnn(), SHAPES).proto, tmp_path / "fp32.onnx")
    samples = iter([{"image": x[None]} for x in calibration()["image"]])

    class Reader:
        def get_next(self):
            return next(samples, None)

    quantize_static(
        str(tmp_path / "fp32.onnx"), str(tmp_path / "qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=getattr(QuantType, activations), weight_type=QuantType.QInt8,
    )
    return tmp_path / "qdq.onnx"


def integer_blocks(path, shapes):
    """Per conv/matmul block of the lowered TIR: (block name, dtypes of the buffers it reads,
    dtype of the buffer it accumulates into)."""
    import tvm

    from edgesdk.lowering import import_onnx, optimize

    mod, _, _ = import_onnx(path, shapes)
    lowered, _ = optimize(mod, {"kind": "llvm"})
    found = []
    for global_var, func in lowered.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        schedule = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
        for block_rv in schedule.get_child_blocks(schedule.get_sblock("root", "main")):
            block = schedule.get(block_rv)
            if re.match(r"(group_)?conv2d|(NT_)?matmul", block.name_hint):
                found.append((block.name_hint, {str(r.source.dtype) for r in block.reads}, str(block.writes[0].source.dtype)))
    return found


@pytest.mark.parametrize("activations", ["QInt8", "QUInt8"])
def test_an_onnxruntime_qdq_model_deploys_with_integer_kernels(tmp_path, activations):
    qdq = ort_qdq_model(tmp_path, activations)
    artifact = edgesdk.deploy(qdq, "phone", tmp_path / "a")
    check = artifact.manifest.verification
    assert check.passed and check.max_abs_err <= 2 / 255  # within two output steps of onnxruntime's integer reference
    layers = artifact.manifest.quantization.layers
    assert len(layers) == 4 and all(layer.compute_dtype == "int8" for layer in layers)  # uint8 x int8 runs at the int8 rate
    assert {layer.unit for layer in artifact.manifest.estimate.per_layer if layer.op_class in ("conv", "depthwise_conv", "matmul")} == {"npu"}
    artifact.verify()  # model.onnx is the QDQ model: the reference again


def test_lowered_tir_multiplies_int8_and_accumulates_int32(tmp_path):
    """Read the TIR itself: the conv/matmul blocks of an int8 deploy cast int8 operands and write
    int32 accumulators, for at least 90% of them."""
    from edgesdk.model import load_model
    from edgesdk.precision import apply_scheme

    prepared = load_model(depthwise_net(), {"image": [1, 3, 96, 96]})
    precision = apply_scheme(prepared, "int8", calibration(8, (3, 96, 96)))
    onnx.save(precision.compiled.proto, tmp_path / "int8.onnx")
    blocks = integer_blocks(tmp_path / "int8.onnx", {"image": [1, 3, 96, 96]})
    assert len(blocks) == 12  # 11 convolutions (6 depthwise) and the classifier's matmul
    integer = [name for name, operands, accumulator in blocks if operands == {"int8"} and accumulator == "int32"]
    assert len(integer) / len(blocks) >= 0.9, blocks

    fp32 = tmp_path / "fp32.onnx"
    onnx.save(prepared.proto, fp32)
    assert {(frozenset(operands), accumulator) for _, operands, accumulator in integer_blocks(fp32, {"image": [1, 3, 96, 96]})} == {(frozenset({"float32"}), "float32")}


def test_int8_deploy_from_the_cli_records_scheme_layers_and_accuracy(tmp_path, run_cli):
    onnx.save(tiny_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", **calibration(32))
    code, out, err = run_cli(
        "deploy", str(tmp_path / "m.onnx"), "--device", "phone", "--input-shape", "image=1,3,32,32", "--quantize", "int8",
        "--calibration", str(tmp_path / "cal.npz"), "--range-method", "percentile", "-o", str(tmp_path / "a"), "--json",
    )
    assert code == 0, err
    quantization = json.loads(out)["quantization"]
    assert quantization["scheme"] == "int8" and quantization["range_method"] == "percentile"
    assert quantization["weight_bytes"] < 0.6 * quantization["float_weight_bytes"]
    accuracy = quantization["accuracy"]
    assert accuracy["samples"] == 32 and accuracy["outputs"][0]["top1_agreement"] >= 0.9 and accuracy["outputs"][0]["cosine"] > 0.99
    code, out, err = run_cli(
        "deploy", str(tmp_path / "m.onnx"), "--device", "phone", "--input-shape", "image=1,3,32,32", "--quantize", "auto",
        "--calibration", str(tmp_path / "cal.npz"), "-o", str(tmp_path / "auto"), "--json",
    )
    assert code == 0, err
    assert (json.loads(out)["quantization"]["scheme"], json.loads(out)["quantization"]["range_method"]) == ("int8", "percentile")  # the phone's recipe
    code, _, err = run_cli("verify", str(tmp_path / "a"))
    assert code == 0, err
    code, _, err = run_cli("deploy", str(tmp_path / "m.onnx"), "--device", "phone", "--input-shape", "image=1,3,32,32", "--quantize", "int8")
    assert code == 2 and err.startswith("error: --quantize int8 needs calibration data")


@pytest.fixture(scope="module")
def digits():
    """The digits CNN, trained here in a few seconds (seeded), with its held-out split."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    from digits import train_digits_cnn

    return train_digits_cnn()


def heldout_top1(artifact, digits) -> float:
    images, labels = digits.heldout
    logits = np.stack([artifact.run({"digits": image[None]})["logits"] for image in images])
    return float(np.mean(logits.reshape(len(labels), -1).argmax(axis=1) == labels))


def test_digits_cnn_int8_on_the_phone_keeps_its_accuracy_with_a_quarter_of_the_weights(tmp_path, digits):
    fp32 = edgesdk.deploy(digits.model, "phone", tmp_path / "fp32")
    int8 = edgesdk.deploy(digits.model, "phone", tmp_path / "int8", quantize="int8", calibration=digits.calibration())
    accuracy_fp32, accuracy_int8 = heldout_top1(fp32, digits), heldout_top1(int8, digits)
    assert accuracy_fp32 > 0.95  # a real classifier: 540 held-out digits
    assert accuracy_fp32 - accuracy_int8 <= 0.005  # the artifact itself, not onnxruntime, was run
    quantization = int8.manifest.quantization
    assert quantization.weight_bytes <= 0.27 * quantization.float_weight_bytes
    assert all(layer.compute_dtype == "int8" for layer in quantization.layers) and len(quantization.layers) == 5
    assert int8.manifest.estimate.latency_ms < fp32.manifest.estimate.latency_ms
    assert int8.manifest.estimate.energy_mj < fp32.manifest.estimate.energy_mj
    agreement = quantization.accuracy.outputs[0]
    assert agreement.top1_agreement >= 0.97 and quantization.accuracy.samples == 200


def outlier_mlp() -> onnx.ModelProto:
    """x -> MatMul -> Relu -> MatMul -> logits for inputs whose first feature is 1000x larger than
    the rest (its weights 1000x smaller): per-tensor int8 on the input flattens every other
    feature, so quantizing the first layer breaks the classifier; the second is harmless."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w1, w2 = rng.standard_normal((16, 64)).astype(np.float32), rng.standard_normal((64, 10)).astype(np.float32)
    w1[0, :] /= 1000
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="hidden"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["logits"], name="classifier"),
    ]
    graph = helper.make_graph(
        nodes, "outlier_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def outlier_inputs(n=64):
    x = np.random.default_rng(4).standard_normal((n, 16)).astype(np.float32)
    x[:, 0] *= 1000
    return x


def test_quantize_finds_the_sensitive_layer_and_keeps_it_float_to_meet_the_budget(tmp_path, run_cli):
    onnx.save(outlier_mlp(), tmp_path / "mlp.onnx")
    np.savez(tmp_path / "cal.npz", x=outlier_inputs())
    args = ["quantize", str(tmp_path / "mlp.onnx"), "--calibration", str(tmp_path / "cal.npz"), "--json"]
    code, out, err = run_cli(*args, "-o", str(tmp_path / "all.onnx"))
    assert code == 0, err
    full = json.loads(out)
    assert full["drop_pt"] > 10  # fully int8, the classifier breaks
    code, out, err = run_cli(*args, "-o", str(tmp_path / "mixed.onnx"), "--analyze", "--max-drop", "2")
    assert code == 0, err
    mixed = json.loads(out)
    assert [layer["node"] for layer in mixed["sensitivity"]] == ["hidden", "classifier"] and mixed["sensitivity"][0]["drop_pt"] > 10
    assert mixed["float_layers"] == ["hidden"] and mixed["drop_pt"] <= 2 and mixed["max_drop_met"]
    encodings = json.loads((tmp_path / "mixed.encodings.json").read_text())
    assert set(encodings["param_encodings"]) == {"w2"} and len(encodings["param_encodings"]["w2"]) == 10  # per output channel
    assert all(entry["bitwidth"] == 8 for entries in encodings["activation_encodings"].values() for entry in entries)
    # The mixed model deploys: the hidden layer in float, the classifier integer.
    artifact = edgesdk.deploy(tmp_path / "mixed.onnx", "phone", tmp_path / "a")
    assert [layer.compute_dtype for layer in artifact.manifest.quantization.layers] == ["float32", "int8"]
    code, _, err = run_cli(*args, "-o", str(tmp_path / "mixed.onnx"))
    assert code == 2 and "the file exists; edgesdk does not overwrite it" in err
