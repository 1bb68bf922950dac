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

    from edgesdk.frontend.model import load_model

    onnx.save(load_model(tiny_cnn(), SHAPES).proto, tmp_path / "fp32.onnx")
    samples = iter([{"image": x[None]} for x in calibration()["image"]])

    class Reader:
        def get_next(self):
            return next(samples, None)

    quantize_static(
        str(tmp_path / "fp32.onnx"),
        str(tmp_path / "qdq.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=getattr(QuantType, activations),
        weight_type=QuantType.QInt8,
    )
    return tmp_path / "qdq.onnx"


def integer_blocks(path, shapes):
    """Per kernel of the lowered TIR that has a conv/matmul reduction: (its block's name, dtypes of
    the operands it reads, dtype of the accumulator it writes). Read after scheduling, where a
    reduction may be split into an init, an update into a local accumulator and a write-back."""
    import tvm

    from edgesdk.compile.lowering import import_onnx, optimize

    mod, _, _, _ = import_onnx(path, shapes)
    lowered, _ = optimize(mod, {"kind": "llvm"})
    found = []
    for _global_var, func in lowered.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        schedule = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
        blocks = [schedule.get(rv) for rv in schedule.get_child_blocks(schedule.get_sblock("root", "main"))]
        reductions = [
            block for block in blocks
            if re.match(r"(group_)?conv2d|(NT_)?matmul", block.name_hint) and any(var.iter_type == tvm.tirx.IterVar.CommReduce for var in block.iter_vars)
        ]  # fmt: skip
        if reductions:
            block = reductions[0]
            accumulator = str(block.writes[0].source.dtype)
            operands = {str(r.source.dtype) for r in block.reads if not r.source.same_as(block.writes[0].source)}
            found.append((block.name_hint, operands, accumulator))
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
    """Read the TIR itself: the conv/matmul blocks of an int8 deploy cast int8 operands (or their
    16-bit packs) and write int32 accumulators, for at least 90% of them."""
    from edgesdk.frontend.model import load_model
    from edgesdk.quantization.recipe import Recipe
    from edgesdk.quantization.schemes import apply_scheme

    prepared = load_model(depthwise_net(), {"image": [1, 3, 96, 96]})
    precision = apply_scheme(prepared, Recipe("int8", range_method="minmax"), calibration(8, (3, 96, 96)))
    onnx.save(precision.compiled.proto, tmp_path / "int8.onnx")
    blocks = integer_blocks(tmp_path / "int8.onnx", {"image": [1, 3, 96, 96]})
    assert len(blocks) == 12  # 11 convolutions (6 depthwise) and the classifier's matmul
    # int16: 8-bit values widened as they are packed for the pairwise multiply-add (schedules.integer).
    integer = [name for name, operands, accumulator in blocks if operands in ({"int8"}, {"int16"}) and accumulator == "int32"]
    assert len(integer) / len(blocks) >= 0.9, blocks

    fp32 = tmp_path / "fp32.onnx"
    onnx.save(prepared.proto, fp32)
    assert {(frozenset(operands), accumulator) for _, operands, accumulator in integer_blocks(fp32, {"image": [1, 3, 96, 96]})} == {
        (frozenset({"float32"}), "float32")
    }


def test_int8_deploy_from_the_cli_records_scheme_layers_and_accuracy(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: the summary's lines unwrapped
    onnx.save(tiny_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", **calibration(32))
    code, out, err = run_cli(
        "deploy",
        str(tmp_path / "m.onnx"),
        "--device",
        "phone",
        "--input-shape",
        "image=1,3,32,32",
        "--quantize",
        "int8",
        "--calibration",
        str(tmp_path / "cal.npz"),
        "--range-method",
        "percentile",
        "-o",
        str(tmp_path / "a"),
        "--json",
    )
    assert code == 0, err
    quantization = json.loads(out)["quantization"]
    assert quantization["scheme"] == "int8" and quantization["range_method"] == "percentile"
    assert quantization["weight_bytes"] < 0.6 * quantization["float_weight_bytes"]
    accuracy = quantization["accuracy"]
    assert accuracy["samples"] == 32 and accuracy["outputs"][0]["top1_agreement"] >= 0.9 and accuracy["outputs"][0]["cosine"] > 0.99
    code, out, err = run_cli(
        "deploy",
        str(tmp_path / "m.onnx"),
        "--device",
        "phone",
        "--input-shape",
        "image=1,3,32,32",
        "--quantize",
        "auto",
        "--calibration",
        str(tmp_path / "cal.npz"),
        "-o",
        str(tmp_path / "auto"),
        "--json",
    )
    assert code == 0, err
    assert (json.loads(out)["quantization"]["scheme"], json.loads(out)["quantization"]["range_method"]) == ("int8", "percentile")  # the phone's recipe
    code, _, err = run_cli("verify", str(tmp_path / "a"))
    assert code == 0, err
    code, out, err = run_cli(
        "deploy", str(tmp_path / "m.onnx"), "--device", "phone", "--input-shape", "image=1,3,32,32",
        "--quantize", "w4a16", "--calibration", str(tmp_path / "cal.npz"),
        "-o", str(tmp_path / "w4"),
    )  # fmt: skip
    assert code == 0, err
    assert "accuracy" in out and "vs the float model on 32 calibration samples" in out  # the summary says it
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
        nodes,
        "outlier_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
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


def test_digits_cnn_w4a16_w8a16_vq_w4a8_on_the_phone_keep_accuracy_with_packed_weights(tmp_path, digits):
    fp32 = edgesdk.deploy(digits.model, "phone", tmp_path / "fp32")
    accuracy_fp32 = heldout_top1(fp32, digits)
    w4 = edgesdk.deploy(digits.model, "phone", tmp_path / "w4", quantize="w4a16", calibration=digits.calibration())
    assert accuracy_fp32 - heldout_top1(w4, digits) <= 0.015  # the artifact itself, on 540 held-out digits
    quantization = w4.manifest.quantization
    assert quantization.group_size == 32 and quantization.weight_bytes <= 0.16 * quantization.float_weight_bytes
    assert [(layer.weight_dtype, layer.compute_dtype) for layer in quantization.layers] == [("int4", "float16")] * 5
    assert quantization.accuracy.outputs[0].top1_agreement >= 0.97 and w4.manifest.verification.inputs == "calibration"
    # The artifact's weights are the packed bytes and float16 scales; no float copy of a weight.
    with np.load(w4.path / "params.npz", allow_pickle=False) as weights:
        arrays = {name: weights[name] for name in weights.files}
    packed = {name: a for name, a in arrays.items() if name.endswith("_packed")}
    assert len(packed) == 5 and all(a.dtype == np.uint8 for a in packed.values())
    assert sum(a.size for a in packed.values()) * 2 >= 47_000 > max(a.size for a in arrays.values() if a.dtype != np.uint8) * 20
    assert w4.manifest.estimate.latency_ms < fp32.manifest.estimate.latency_ms  # fp16 on the NPU, not fp32 on the GPU
    w4.verify()

    w8 = edgesdk.deploy(digits.model, "phone", tmp_path / "w8", quantize="w8a16")
    assert accuracy_fp32 - heldout_top1(w8, digits) <= 0.005
    assert [(layer.weight_dtype, layer.compute_dtype) for layer in w8.manifest.quantization.layers] == [("int8", "float16")] * 5
    assert w8.manifest.quantization.weight_bytes <= 0.27 * w8.manifest.quantization.float_weight_bytes

    vq = edgesdk.deploy(digits.model, "phone", tmp_path / "vq", quantize="vq", vq_dim=2, vq_bits=8)
    assert accuracy_fp32 - heldout_top1(vq, digits) <= 0.015
    # The first conv (depth 9) is not a multiple of 2 weights: it stays float16.
    assert [layer.weight_dtype for layer in vq.manifest.quantization.layers] == ["float16"] + ["vq8"] * 4
    assert vq.manifest.quantization.weight_bytes <= 0.16 * vq.manifest.quantization.float_weight_bytes

    w4a8 = edgesdk.deploy(digits.model, "phone", tmp_path / "w4a8", quantize="w4a8", calibration=digits.calibration())
    assert accuracy_fp32 - heldout_top1(w4a8, digits) <= 0.015
    assert [(layer.weight_dtype, layer.compute_dtype) for layer in w4a8.manifest.quantization.layers] == [("int4", "int8")] * 5
    assert w4a8.manifest.quantization.weight_bytes <= 0.16 * w4a8.manifest.quantization.float_weight_bytes


def test_lowered_tir_reads_packed_int4_weights_inside_the_conv_and_matmul_loops(tmp_path, digits):
    """The TIR of a w4a16 model: every conv/matmul block reads a uint8 buffer of half the layer's
    weights (two per byte) and float16 scales, and main takes no float weight of a layer."""
    from edgesdk.compile.lowering import import_onnx
    from edgesdk.frontend.model import load_model
    from edgesdk.quantization.recipe import Recipe
    from edgesdk.quantization.schemes import apply_scheme

    precision = apply_scheme(load_model(digits.model), Recipe("w4a16", group_size=32))
    onnx.save(precision.compiled.proto, tmp_path / "w4.onnx")
    blocks = integer_blocks(tmp_path / "w4.onnx", {"digits": [1, 1, 8, 8]})
    assert len(blocks) == 5 and all(operands == {"float16", "uint8"} for _, operands, _ in blocks), blocks
    mod, weights, names, _ = import_onnx(tmp_path / "w4.onnx", {"digits": [1, 1, 8, 8]})
    rows_by_depth = [(16, 9), (32, 144), (32, 288), (64, 512), (10, 64)]  # output channels x reduction length
    packed = sorted(a.shape for a, name in zip(weights, names, strict=False) if name.endswith("_packed"))
    assert packed == sorted((rows, -(-depth // 2)) for rows, depth in rows_by_depth)  # a row of odd length pads one nibble
    rest = [a for a, name in zip(weights, names, strict=False) if not name.endswith("_packed")]  # scales and biases
    assert all(a.dtype == np.float16 for a in rest) and sum(a.size for a in rest) < sum(r * d for r, d in rows_by_depth) / 16

    # w4a8: int8 activations times unpacked int4 weights, summed in int32 per group of weights.
    precision = apply_scheme(load_model(digits.model), Recipe("w4a8", range_method="minmax", group_size=32), digits.calibration(16))
    onnx.save(precision.compiled.proto, tmp_path / "w4a8.onnx")
    blocks = integer_blocks(tmp_path / "w4a8.onnx", {"digits": [1, 1, 8, 8]})
    sums = [(operands, accumulator) for name, operands, accumulator in blocks if name.endswith("_int_groups")]
    assert sums == [({"int8", "uint8"}, "int32")] * 5, blocks


def test_compare_shows_each_precision_on_each_device(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # a wide terminal: the table's cells unwrapped
    onnx.save(tiny_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", **calibration(8))
    args = ["compare", str(tmp_path / "m.onnx"), "--input-shape", "image=1,3,32,32", "--calibration", str(tmp_path / "cal.npz")]
    code, out, err = run_cli(*args, "--devices", "phone,mcu", "--quantize", "none,int8,w4a16", "--json")
    assert code == 0, err
    rows = {(row["device"], row["scheme"]): row for row in json.loads(out)["rows"]}
    assert list(rows) == [(d, s) for d in ("phone", "mcu") for s in ("none", "int8", "w4a16")]
    for device in ("phone", "mcu"):
        none, int8, w4 = (rows[(device, s)] for s in ("none", "int8", "w4a16"))
        assert none["speedup"] == 1.0 and int8["speedup"] == pytest.approx(none["latency_ms"] / int8["latency_ms"])
        assert w4["weight_bytes"] < int8["weight_bytes"] < none["weight_bytes"] / 2  # a tiny model: scales and biases weigh in
    assert "npu" in rows[("phone", "int8")]["units"] and "npu" not in rows[("phone", "none")]["units"]  # the NPU computes no fp32
    assert rows[("mcu", "w4a16")]["units"] == {"cpu": rows[("mcu", "w4a16")]["units"]["cpu"]}
    # the accuracy is where people look: every quantized row has it, the float row has none
    assert rows[("phone", "none")]["accuracy"] is None
    for scheme in ("int8", "w4a16"):
        accuracy = rows[("phone", scheme)]["accuracy"]
        assert accuracy["samples"] == 8 and accuracy["outputs"][0]["top1_agreement"] >= 0.75 and accuracy["outputs"][0]["cosine"] > 0.99
    np.savez(tmp_path / "heldout.npz", **calibration(12, seed=7))
    code, out, err = run_cli(*args, "--devices", "phone", "--quantize", "none,int8", "--eval", str(tmp_path / "heldout.npz"))
    assert code == 0, err
    assert "(--eval)" in out and "(calibration)" not in out and "top-1 " in out  # one agreement column: the held-out one
    code, out, err = run_cli(*args, "--devices", "phone", "--quantize", "none,int8", "--eval", str(tmp_path / "heldout.npz"), "--wide")
    assert code == 0 and "(calibration)" in out and "(--eval)" in out and "fall-" in out
    code, out, err = run_cli(*args, "--devices", "phone", "--quantize", "int8", "--eval", str(tmp_path / "heldout.npz"), "--json")
    assert json.loads(out)["rows"][0]["eval_accuracy"]["samples"] == 12
    code, out, err = run_cli(*args, "--devices", "phone,nowhere")
    assert code == 2 and "unknown device 'nowhere'" in err
    code, out, err = run_cli(*args, "--quantize", "none,int3")
    assert code == 2 and err.startswith("error: --quantize int3: unknown scheme")


def test_adaround_and_bias_correction_from_the_cli_are_recorded_and_need_samples(tmp_path, run_cli):
    onnx.save(tiny_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", **calibration(16))
    args = ["deploy", str(tmp_path / "m.onnx"), "--device", "phone", "--input-shape", "image=1,3,32,32", "--quantize", "w4a16", "--bias-correction"]
    code, out, err = run_cli(*args, "--adaround", "2", "--calibration", str(tmp_path / "cal.npz"), "-o", str(tmp_path / "a"), "--json")
    assert code == 0, err
    manifest = json.loads(out)
    quantization = manifest["quantization"]
    assert quantization["bias_correction"] and quantization["adaround_seconds"] == 2 and manifest["verification"]["passed"]
    notes = manifest["build"]["notes"]
    assert any(note.startswith("AdaRound re-rounded") for note in notes) and any(note.startswith("biases of 4 layers corrected") for note in notes)
    # per layer: the four conv/Gemm layers, 4-bit weights with their scales, each output's error, and the chart of it in the report
    layers = quantization["layer_errors"]
    assert [layer["node"] for layer in layers] == ["Conv_0", "Conv_2", "Conv_4", "Gemm_9"]
    assert all(4 < layer["bits_per_weight"] < 16 and layer["sqnr_db"] > 10 for layer in layers)
    report = (tmp_path / "a" / "report.html").read_text()
    assert "<h3>Per layer</h3>" in report and report.count("<svg") == 4 and "Gemm_9" in report
    code, _, err = run_cli(*args, "-o", str(tmp_path / "b"))
    assert code == 2 and err.startswith("error: --bias-correction needs a quantized scheme and --calibration samples")
    code, _, err = run_cli(*args[:-2], "vq", "--adaround", "5", "--calibration", str(tmp_path / "cal.npz"), "-o", str(tmp_path / "c"))
    assert code == 2 and err.startswith("error: --adaround needs a scheme with integer weights")


def test_an_exported_w4a16_model_deploys_as_it_is_with_packed_int4_kernels(tmp_path, digits):
    report = edgesdk.quantize(digits.model, digits.calibration(32), tmp_path / "w4.onnx", scheme="w4a16", group_size=64)
    assert report.drop_pt <= 3.2  # at most one of the 32 samples changes class
    artifact = edgesdk.deploy(tmp_path / "w4.onnx", "phone", tmp_path / "a")  # no --quantize: the model's own precision
    layers = artifact.manifest.quantization.layers
    assert artifact.manifest.quantization.scheme == "none" and [(layer.weight_dtype, layer.compute_dtype) for layer in layers] == [("int4", "float16")] * 5
    assert artifact.manifest.verification.passed
    artifact.verify()
