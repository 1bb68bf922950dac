"""`edgesdk calibrate`: fit a profile's efficiency and overhead factors from micro-benchmarks here.

Only a device whose code runs on this host (pc) can be calibrated by measurement. Each
micro-benchmark is a one-operator ONNX model (convolutions, depthwise convolutions, matmuls,
elementwise, softmax, pooling, normalization, reductions, copies) of a few sizes, deployed through
the normal pipeline and measured kernel by kernel (edgesdk.measure). The fit inverts the cost
model (docs/simulator.md) on those measurements:

- ``launch_overhead_s``: the median time of the tiniest kernels (a few elements each);
- ``efficiency[class]``: the median, over that class's kernels, of
  ``ops / (peak_ops_per_s x (measured time - overhead))``, clipped to (0, 1].

The models you evaluate with are never used. The result is a small JSON file in the edgesdk cache
(``<cache>/calibration/<device>.json``); the device registry applies it to that profile from then
on (``EDGESDK_NO_CALIBRATION=1`` ignores it). For your own board, write the same numbers into a
profile that ``extends`` yours: docs/simulator.md says how.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydantic import BaseModel, ConfigDict

from edgesdk.build_cache import cache_root
from edgesdk.errors import UserInputError
from edgesdk.kernels import ModelAnalysis

NO_CALIBRATION_ENV = "EDGESDK_NO_CALIBRATION"
TINY_ELEMENTS = 256


def _single_op(name: str, op: str, x_shape: list[int], weights: dict[str, np.ndarray] | None = None, **attrs) -> onnx.ModelProto:
    initializers = [numpy_helper.from_array(array.astype(np.float32), key) for key, array in (weights or {}).items()]
    node = helper.make_node(op, ["x", *(weights or {})], ["y"], **attrs)
    graph = helper.make_graph(
        [node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)  # gives `y` its shape


def _weights(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape) * 0.1


def micro_benchmarks() -> dict[str, Callable[[], onnx.ModelProto]]:
    """One-operator models, a few sizes per op class (none of them a model we evaluate with)."""
    conv = lambda cin, cout, k, hw, groups=1: _single_op(  # noqa: E731
        f"conv_{cin}_{cout}_{k}_{hw}_{groups}", "Conv", [1, cin, hw, hw], {"w": _weights(cout, cin // groups, k, k), "b": _weights(cout)},
        pads=[k // 2] * 4, group=groups,
    )
    return {
        "conv3x3_16_32_56": lambda: conv(16, 32, 3, 56),
        "conv3x3_64_64_28": lambda: conv(64, 64, 3, 28),
        "conv1x1_64_128_28": lambda: conv(64, 128, 1, 28),
        "conv1x1_256_256_7": lambda: conv(256, 256, 1, 7),
        "dwconv3x3_32_56": lambda: conv(32, 32, 3, 56, groups=32),
        "dwconv3x3_128_14": lambda: conv(128, 128, 3, 14, groups=128),
        "matmul_64x256x256": lambda: _single_op("matmul_a", "MatMul", [64, 256], {"w": _weights(256, 256)}),
        "matmul_1x512x1000": lambda: _single_op("matmul_b", "MatMul", [1, 512], {"w": _weights(512, 1000)}),
        "matmul_128x64x128": lambda: _single_op("matmul_c", "MatMul", [128, 64], {"w": _weights(64, 128)}),
        "add_64x56x56": lambda: _single_op("add_a", "Add", [1, 64, 56, 56], {"w": _weights(1, 64, 56, 56)}),
        "add_tiny": lambda: _single_op("add_tiny", "Add", [1, TINY_ELEMENTS], {"w": _weights(1, TINY_ELEMENTS)}),
        "relu_tiny": lambda: _single_op("relu_tiny", "Relu", [1, TINY_ELEMENTS]),
        "sigmoid_32x28x28": lambda: _single_op("sigmoid", "Sigmoid", [1, 32, 28, 28]),
        "softmax_16x1000": lambda: _single_op("softmax", "Softmax", [16, 1000], axis=-1),
        "maxpool_32x56": lambda: _single_op("maxpool", "MaxPool", [1, 32, 56, 56], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        "layernorm_64x256": lambda: _single_op("layernorm", "LayerNormalization", [64, 256], {"s": _weights(256) + 1, "b": _weights(256)}, axis=-1),
        "mean_64x28x28": lambda: _single_op("gap", "GlobalAveragePool", [1, 64, 28, 28]),
        "transpose_64x56x56": lambda: _single_op("transpose", "Transpose", [1, 64, 56, 56], perm=[0, 2, 3, 1]),
    }


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    benchmark: str
    kernel: str
    op_class: str
    ops: int
    measured_ms: float


class Calibration(BaseModel):
    """Fitted factors of one device's compute unit, with the measurements they come from."""

    model_config = ConfigDict(extra="forbid")

    device: str
    unit: str
    created_utc: str
    host: str
    launch_overhead_s: float
    efficiency: dict[str, float]
    samples: list[Sample]


def calibration_file(device_id: str) -> Path:
    return cache_root() / "calibration" / f"{device_id}.json"


def stored_calibration(device_id: str) -> Calibration | None:
    """The stored calibration of ``device_id``, unless EDGESDK_NO_CALIBRATION is set."""
    path = calibration_file(device_id)
    if os.environ.get(NO_CALIBRATION_ENV) or not path.is_file():
        return None
    try:
        return Calibration.model_validate_json(path.read_text())
    except ValueError:
        return None  # a file from another version: ignored, `calibrate` rewrites it


def fit(samples: list[Sample], peak_ops_per_s: float) -> tuple[float, dict[str, float]]:
    tiny = [s.measured_ms for s in samples if s.benchmark.endswith("_tiny")]
    overhead_s = statistics.median(tiny) * 1e-3
    by_class: dict[str, list[float]] = {}
    for sample in samples:
        if sample.benchmark.endswith("_tiny"):
            continue
        busy_s = max(sample.measured_ms * 1e-3 - overhead_s, 1e-9)
        by_class.setdefault(sample.op_class, []).append(min(1.0, sample.ops / (peak_ops_per_s * busy_s)))
    efficiency = {op_class: statistics.median(values) for op_class, values in by_class.items()}
    efficiency["default"] = statistics.median(efficiency.values())
    return overhead_s, efficiency


def calibrate(device: str = "pc", *, repeat: int = 30, on_stage: Callable[[str], None] | None = None) -> Calibration:
    """Measure the micro-benchmarks on this host, fit, store and return the calibration."""
    from edgesdk.deploy import deploy, runs_here
    from edgesdk.device_registry import get_device
    from edgesdk.measure import measure
    from edgesdk.model import random_inputs

    os.environ[NO_CALIBRATION_ENV] = "1"  # fit from the shipped figures, not an older fit
    try:
        profile = get_device(device)
    finally:
        os.environ.pop(NO_CALIBRATION_ENV)
    if not runs_here(profile.target):
        raise UserInputError(f"calibrate: code for '{device}' does not run on this host", hint="only devices whose code runs here (pc) can be measured")
    unit_name = next(name for name, unit in profile.compute_units.items() if unit.kind == "cpu")
    unit = profile.compute_units[unit_name]
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="edgesdk-calibrate-") as scratch:
        for name, build in micro_benchmarks().items():
            if on_stage:
                on_stage(f"measuring {name}")
            artifact = deploy(build(), device, Path(scratch) / name)
            analysis = ModelAnalysis.model_validate_json((artifact.path / "analysis.json").read_text())
            measured = measure(artifact.runner, random_inputs(artifact.inputs, seed=0), analysis, repeat)
            for kernel, timing in zip(analysis.kernels, measured.per_kernel):
                samples.append(Sample(benchmark=name, kernel=kernel.name, op_class=kernel.op_class, ops=kernel.ops, measured_ms=timing.measured_ms))
    overhead_s, efficiency = fit(samples, unit.peak_ops_per_s["float32"])
    result = Calibration(
        device=profile.id,
        unit=unit_name,
        created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        host=f"{platform.machine()} {platform.processor() or platform.platform()} ({os.cpu_count()} cpus)",
        launch_overhead_s=overhead_s,
        efficiency=efficiency,
        samples=samples,
    )
    path = calibration_file(profile.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.model_dump(mode="json"), indent=1) + "\n")
    return result
