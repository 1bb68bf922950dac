"""Partitioning and simulation of real compiled models (the kernel analysis comes from TVM)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgesdk

pytestmark = pytest.mark.slow


def topk_head() -> onnx.ModelProto:
    """Scores -> ReLU -> TopK(5): TopK is a sort, which no phone NPU or GPU profile runs."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 100)).astype(np.float32), "w")
    k = numpy_helper.from_array(np.array([5], np.int64), "k")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["scores"]),
        helper.make_node("Relu", ["scores"], ["relu"]),
        helper.make_node("TopK", ["relu", "k"], ["values", "indices"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "topk_head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, [1, 5]), helper.make_tensor_value_info("indices", TensorProto.INT64, [1, 5])],
        [weight, k],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_topk_on_the_phone_falls_back_to_the_cpu_and_pays_a_transfer(tmp_path):
    artifact = edgesdk.deploy(topk_head(), "phone", tmp_path / "a")
    assert artifact.manifest.verification.passed  # int64 indices match exactly
    fallbacks = {(f.op, f.from_unit, f.to_unit): f.reason for f in artifact.manifest.partition.fallbacks}
    assert fallbacks[("topk", "npu", "cpu")] == "unsupported op class sort"
    assert fallbacks[("topk", "gpu", "cpu")] == "unsupported op class sort"
    # The float32 matmul skips the NPU for its dtype: placed, not fallen back.
    assert [(p.op, p.from_unit, p.to_unit) for p in artifact.manifest.partition.placements] == [("fused_matmul_relu", "npu", "gpu")]
    assert all(f.op == "topk" for f in artifact.manifest.partition.fallbacks)
    layers = {layer.name: layer for layer in artifact.manifest.estimate.per_layer}
    assert layers["topk"].unit == "cpu" and layers["fused_matmul_relu"].unit == "gpu"
    link = edgesdk.get_device("phone").interconnect
    assert layers["topk"].transfer_ms == pytest.approx((100 * 4 / link.bandwidth_bytes_per_s + link.latency_s) * 1e3)
    # The GPU takes the model's input from the application on the CPU: one crossing.
    (spec,) = artifact.inputs
    input_bytes = 4 * int(np.prod(spec.shape))
    assert layers["fused_matmul_relu"].transfer_ms == pytest.approx((input_bytes / link.bandwidth_bytes_per_s + link.latency_s) * 1e3)


def test_calibrate_fits_this_host_and_later_estimates_use_it(run_cli, tmp_path, monkeypatch):
    import json

    from edgesdk.testing.models import mlp
    from edgesdk.verbs.calibrate import micro_benchmarks

    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))
    onnx.save(mlp(), tmp_path / "mlp.onnx")
    profile_mlp = ("profile", str(tmp_path / "mlp.onnx"), "--device", "pc", "--input-shape", "features=1,64")
    code, out, err = run_cli(*profile_mlp)
    assert code == 0, err
    assert "figures: calibrated (cpu default calibration shipped with the profile, measured on" in " ".join(out.split())
    code, out, err = run_cli("calibrate", "--device", "pc", "--repeat", "5", "--json")
    assert code == 0, err
    fitted = json.loads(out)
    assert len(fitted["samples"]) == len(micro_benchmarks())  # the second, warm call of each operator
    assert {"conv", "depthwise_conv", "matmul"} <= set(fitted["feature_weights"])
    assert all(0 < value <= 1 for value in fitted["efficiency"].values())
    assert 0 < fitted["launch_overhead_s"] < 1e-3
    code, out, _ = run_cli(*profile_mlp, "--json")
    estimate = json.loads(out)["estimate"]
    assert estimate["calibrated_utc"] == fitted["created_utc"] and estimate["figures"] == "calibrated"
    assert "shipped" not in estimate["figures_source"]
    code, out, _ = run_cli("profile", str(tmp_path / "mlp.onnx"), "--device", "phone", "--input-shape", "features=1,64")
    assert "figures: fitted (Qualcomm AI Hub published latencies" in " ".join(out.split())
    code, _, err = run_cli("calibrate", "--device", "phone")
    assert code == 2 and err.startswith("error: calibrate: code for 'phone' does not run on this host")


def test_devices_rank_as_their_peaks_say_and_fp16_runs_on_the_phone_npu():
    """The mcu is the slowest device. At fp16 the phone's NPU takes the kernels; on a large
    convolutional net it beats the phone's CPU, on a tiny one its per-op and
    CPU<->NPU fixed costs lose. Per-layer units match the partition."""
    from edgesdk.testing.models import large_spatial_net, tiny_cnn

    model, shapes = large_spatial_net(), {"image": [1, 3, 224, 224]}
    latency = {
        device: edgesdk.profile(model, device, input_shapes=shapes).estimate.latency_ms for device in ["phone", "pc", "xr-headset", "automotive", "iot", "mcu"]
    }
    assert max(latency, key=latency.get) == "mcu"

    npu = edgesdk.profile(model, "phone", input_shapes=shapes, quantize="fp16")
    cpu = edgesdk.profile(model, "phone", input_shapes=shapes, quantize="fp16", unit="cpu")
    units = [layer.unit for layer in npu.estimate.per_layer]
    assert {unit: units.count(unit) for unit in set(units)} == npu.partition.units
    assert {layer.dtype for layer in npu.estimate.per_layer if layer.unit == "npu"} == {"float16"}
    assert npu.partition.units["npu"] >= len(units) - 2  # all but the float32 casts at the edges
    phone = edgesdk.get_device("phone").compute_units
    assert phone["npu"].peak_ops_per_s["float16"] > 10 * phone["cpu"].peak_ops_per_s["float16"]
    assert npu.estimate.latency_ms < cpu.estimate.latency_ms
    on_npu = [index for index, unit in enumerate(units) if unit == "npu"]
    compute = lambda report: sum(report.estimate.per_layer[i].compute_ms for i in on_npu)  # noqa: E731
    # Its 8 channels fill a quarter of the NPU's 32-channel tiles, and it computes the padding
    # (edgesdk.simulate.layout): faster than the CPU, by less than the peaks say.
    assert compute(cpu) / 10 < compute(npu) < compute(cpu) / 2
    assert "npu" not in edgesdk.profile(model, "phone", input_shapes=shapes).partition.units  # the NPU computes no float32

    small, small_shapes = tiny_cnn(), {"image": [1, 3, 32, 32]}
    small_npu = edgesdk.profile(small, "phone", input_shapes=small_shapes, quantize="fp16").estimate
    small_cpu = edgesdk.profile(small, "phone", input_shapes=small_shapes, quantize="fp16", unit="cpu").estimate
    assert small_npu.latency_ms > small_cpu.latency_ms
    assert sum(layer.transfer_ms for layer in small_npu.per_layer) > small_cpu.latency_ms


def test_an_fp16_deploy_runs_in_half_precision_and_is_checked_against_the_fp32_model(tmp_path, run_cli):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    from make_example import hand_tracker

    onnx.save(hand_tracker(), tmp_path / "hand.onnx")
    code, out, err = run_cli(
        "deploy",
        str(tmp_path / "hand.onnx"),
        "--device",
        "phone",
        "--quantize",
        "fp16",
        "--input-shape",
        "frames=1,3,96,96",
        "-o",
        str(tmp_path / "a"),
        "--json",
    )
    assert code == 0, err
    manifest = json.loads(out)
    quantization = manifest["quantization"]
    assert quantization["scheme"] == "fp16"
    assert quantization["weight_bytes"] < 0.51 * quantization["float_weight_bytes"]  # float weights halve; int64 shapes stay
    check = manifest["verification"]
    assert check["passed"] and 0 < check["max_abs_err"] <= check["outputs"][0]["tolerance"] and check["cosine"] > 0.999
    params = np.load(tmp_path / "a" / "params.npz", allow_pickle=False)
    assert {params[key].dtype for key in params.files if params[key].dtype.kind == "f"} == {np.dtype("float16")}
    assert manifest["partition"]["units"].get("npu", 0) > 0
    code, out, err = run_cli("verify", str(tmp_path / "a"), "--json")
    assert code == 0, err
    code, _, err = run_cli("profile", str(tmp_path / "a"), "--quantize", "none")
    assert code == 2 and "was deployed with --quantize fp16" in err


def test_less_on_chip_memory_tiles_more_and_never_costs_less(profile_dir):
    """Phones with 8 MB, 1 MB and 128 KB of on-chip memory (a user profile `extends: phone`):
    DRAM traffic for tiles and spills and the simulated latency never fall as the memory shrinks,
    and at 128 KB the 224x224 layers run in tiles that fit, paying for their DRAM traffic."""
    sizes = {"phone-8mb": 8 * 2**20, "phone-1mb": 2**20, "phone-128kb": 128 * 2**10}
    for name, size in sizes.items():
        profile_dir(f"{name}.yaml", f"extends: phone\non_chip_memory_bytes: {size}\n")
    model = edgesdk.testing.models.large_spatial_net()
    estimates = [edgesdk.profile(model, name, input_shapes={"image": [1, 3, 224, 224]}).estimate for name in sizes]
    spills = [estimate.memory.spill_bytes for estimate in estimates]
    latencies = [estimate.latency_ms for estimate in estimates]
    assert spills == sorted(spills) and spills[0] < spills[-1]
    assert latencies == sorted(latencies) and latencies[0] < latencies[-1]
    small = estimates[-1]
    tiled = [layer for layer in small.per_layer if layer.tiles > 1]
    assert tiled and all(not layer.spilled and layer.offchip_bytes > 0 for layer in tiled)
    assert all(layer.tiling != "fits" for layer in tiled)
    assert all(layer.tiling == "fits" and layer.offchip_bytes == 0 for layer in estimates[0].per_layer)
