"""`edgesdk calibrate`: fit a profile's efficiency and overhead factors from micro-benchmarks here.

Only a device whose code runs on this host (pc) can be calibrated by measurement. Each
micro-benchmark is a one-operator ONNX model (convolutions, depthwise convolutions, matmuls,
elementwise, softmax, pooling, normalization, reductions, copies) of a few sizes, deployed through
the normal pipeline and measured kernel by kernel (edgesdk.measure). The fit inverts the cost
model (docs/simulator.md) on those measurements:

- ``launch_overhead_s``: the median time of the tiniest kernels (a few elements each);
- ``efficiency[class]``: the median, over that class's kernels, of
  ``ops / (peak_ops_per_s x (measured time - overhead))``, clipped to (0, 1];
- and every sample's own efficiency with its shape features, so that the simulator can
  interpolate a kernel's efficiency from the measured kernels of its class nearest in shape
  (``shape_efficiency``): untuned code's efficiency depends on shape far more than on class.

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


def _conv(cin: int, cout: int, k: int, hw: int, groups: int = 1) -> onnx.ModelProto:
    return _single_op(
        f"conv_{cin}_{cout}_{k}_{hw}_{groups}", "Conv", [1, cin, hw, hw], {"w": _weights(cout, cin // groups, k, k), "b": _weights(cout)},
        pads=[k // 2] * 4, group=groups,
    )


def _sweep(seed: int = 2026) -> dict[str, Callable[[], onnx.ModelProto]]:
    """Seeded random shapes for the compute-heavy classes, kept under ~30 MFLOP each so that a
    calibration takes a couple of minutes: efficiency varies with shape, not only with class."""
    rng = np.random.default_rng(seed)
    channels = [3, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    sides = [5, 7, 10, 14, 20, 28, 40, 56]
    found: dict[str, Callable[[], onnx.ModelProto]] = {}
    while sum(name.startswith("conv") for name in found) < 32:
        cin, cout = int(rng.choice(channels)), int(rng.choice(channels[1:]))
        k, hw = int(rng.choice([1, 3, 3, 5])), int(rng.choice(sides))
        if 2 * cin * cout * k * k * hw * hw <= 30e6:
            found[f"conv{k}x{k}_{cin}_{cout}_{hw}"] = lambda a=(cin, cout, k, hw): _conv(*a)
    while sum(name.startswith("dwconv") for name in found) < 10:
        c, k, hw = int(rng.choice(channels[1:])), int(rng.choice([3, 5])), int(rng.choice(sides))
        found[f"dwconv{k}x{k}_{c}_{hw}"] = lambda a=(c, k, hw): _conv(a[0], a[0], a[1], a[2], groups=a[0])
    while sum(name.startswith("matmul") for name in found) < 12:
        m, kk, n = (int(rng.choice([1, 4, 16, 64, 128, 256])), int(rng.choice([16, 64, 128, 256, 512])), int(rng.choice([16, 64, 128, 256, 512, 1000])))
        if 2 * m * kk * n <= 30e6:
            found[f"matmul_{m}x{kk}x{n}"] = lambda a=(m, kk, n): _single_op(f"matmul_{a}", "MatMul", [a[0], a[1]], {"w": _weights(a[1], a[2])})
    return found


def micro_benchmarks() -> dict[str, Callable[[], onnx.ModelProto]]:
    """One-operator models: a seeded sweep of conv/depthwise/matmul shapes, and a few sizes of the
    other classes (none of them a model we evaluate with)."""
    return {
        **_sweep(),
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
    features: tuple[float, float, float]  # Kernel.shape_features
    measured_ms: float
    efficiency: float = 0.0  # filled by fit()


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
    """Fit the overhead and per-class efficiencies; also set each sample's own efficiency."""
    tiny = [s.measured_ms for s in samples if s.benchmark.endswith("_tiny")]
    overhead_s = statistics.median(tiny) * 1e-3
    by_class: dict[str, list[float]] = {}
    for sample in samples:
        if sample.benchmark.endswith("_tiny"):
            continue
        busy_s = max(sample.measured_ms * 1e-3 - overhead_s, 1e-9)
        sample.efficiency = min(1.0, sample.ops / (peak_ops_per_s * busy_s))
        by_class.setdefault(sample.op_class, []).append(sample.efficiency)
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
                samples.append(
                    Sample(benchmark=name, kernel=kernel.name, op_class=kernel.op_class, ops=kernel.ops, features=kernel.shape_features, measured_ms=timing.measured_ms)
                )
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


# Kernels of a class with at least this many samples get a shape-interpolated efficiency.
MIN_SAMPLES_FOR_SHAPE = 6
NEIGHBOURS = 4


def shape_efficiency(samples: list[Sample], op_class: str, features: tuple[float, float, float]) -> float | None:
    """Efficiency interpolated from the measured kernels of ``op_class`` nearest in (log2) shape:
    the inverse-distance-weighted geometric mean of the nearest few. None when too few samples."""
    own = [s for s in samples if s.op_class == op_class and s.efficiency > 0]
    if len(own) < MIN_SAMPLES_FOR_SHAPE:
        return None
    point = np.log2(np.asarray(features))
    distances = np.array([np.linalg.norm(np.log2(np.asarray(s.features)) - point) for s in own])
    nearest = np.argsort(distances)[:NEIGHBOURS]
    weights = 1.0 / (distances[nearest] + 0.25)
    return float(2 ** (np.sum(weights * np.log2([own[i].efficiency for i in nearest])) / np.sum(weights)))
