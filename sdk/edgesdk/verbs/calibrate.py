"""`edgesdk calibrate`: fit the cost model of a device to micro-benchmarks measured on it: here
for a device whose code runs on this host (pc), or on a board over TVM RPC (``--remote``:
edgesdk.distributed.boards) for any device with a shared library. edgesdk.simulate.fit says what
is fitted.

The suite (``micro_benchmarks``) is about 120 single operators: a seeded sweep of convolution,
depthwise convolution and matmul shapes, and a few sizes of the other classes. They are compiled
through the normal pipeline into a few models of independent branches, each operator called twice
(the second, warm call is measured, kernel by kernel: edgesdk.simulate.measure). The models you
evaluate with are never used. For your own board, write the same numbers into a profile that
``extends`` yours: docs/simulator.md says how.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.compile.targets import runs_here
from edgesdk.devices.registry import get_device
from edgesdk.distributed.boards import Board
from edgesdk.errors import UserInputError
from edgesdk.frontend.model import random_inputs
from edgesdk.progress import reporting, stage
from edgesdk.simulate.efficiency_model import Sample, choose_weights, efficiency_features
from edgesdk.simulate.fit import TINY_ELEMENTS, CostFit, fit_factors, fit_file, fit_times
from edgesdk.simulate.measure import Measurement, measure
from edgesdk.simulate.time_model import TERMS, time_terms
from edgesdk.verbs.deploy import deploy

SUITE_MODEL_OPS = 40  # operators per compiled calibration model
# Measurement rounds per suite model; each kernel keeps its fastest median: on a shared machine,
# other work only ever adds time, and a fit to a busy moment overpredicts every model after it.
ROUNDS = 3


@dataclass(frozen=True)
class MicroOp:
    """One operator of the calibration suite: ``op`` applied to an input of ``x_shape``."""

    name: str
    op: str
    x_shape: tuple[int, ...]
    weights: tuple[tuple[int, ...], ...] = ()
    attrs: tuple[tuple[str, Any], ...] = ()

    def nodes(self, index: int) -> tuple[list[onnx.NodeProto], onnx.ValueInfoProto, list[onnx.TensorProto]]:
        rng = np.random.default_rng(index)
        names = [f"w{index}_{n}" for n in range(len(self.weights))]
        initializers = [
            numpy_helper.from_array((rng.standard_normal(shape) * 0.1 + (1.0 if self.op == "LayerNormalization" and n == 0 else 0.0)).astype(np.float32), name)
            for n, (name, shape) in enumerate(zip(names, self.weights, strict=False))
        ]
        # Twice: the second call finds its input and weights in cache, as a kernel of a model does
        # (its input was just written by its producer; its weights were read in the last run).
        nodes = [helper.make_node(self.op, [f"x{index}", *names], [f"{out}{index}"], name=f"{self.name}_{out}", **dict(self.attrs)) for out in "yz"]
        return nodes, helper.make_tensor_value_info(f"x{index}", TensorProto.FLOAT, list(self.x_shape)), initializers


def suite_model(ops: list[MicroOp], name: str = "calibration") -> onnx.ModelProto:
    """Independent one-operator branches in one model: one compile measures many kernels."""
    nodes, inputs, initializers = [], [], []
    for index, op in enumerate(ops):
        op_nodes, value_info, weights = op.nodes(index)
        nodes += op_nodes
        inputs.append(value_info)
        initializers += weights
    outputs = [helper.make_tensor_value_info(f"{out}{index}", TensorProto.FLOAT, None) for index in range(len(ops)) for out in "yz"]
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, initializers), opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)  # gives the outputs their shapes


def _conv(cin: int, cout: int, k: int, h: int, w: int, stride: int = 1, groups: int = 1) -> tuple[MicroOp, int]:
    """A convolution and its FLOPs."""
    op = MicroOp(
        f"conv{k}x{k}s{stride}g{groups}_{cin}_{cout}_{h}x{w}",
        "Conv",
        (1, cin, h, w),
        ((cout, cin // groups, k, k), (cout,)),
        (("pads", (k // 2,) * 4), ("group", groups), ("strides", (stride, stride))),
    )
    return op, 2 * (cin // groups) * cout * k * k * -(-h // stride) * -(-w // stride)


MAX_FLOPS = 60e6  # per micro-benchmark, so that a calibration takes about a minute


def _sweep(rng: np.random.Generator) -> list[MicroOp]:
    """Seeded random shapes for the compute-heavy classes: the speed of compiled loop code depends
    on its loop nest (reduction length, innermost extent, strides), not only on its class."""
    channels = [3, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    sides = [5, 7, 8, 10, 14, 16, 20, 28, 30, 32, 40, 56, 64, 112, 224]
    found: dict[str, MicroOp] = {}

    def add(op: MicroOp, flops: float) -> None:
        if flops <= MAX_FLOPS:
            found[op.name] = op

    def side() -> int:
        return int(rng.choice(sides))

    while sum(op.op == "Conv" and "g1_" in name for name, op in found.items()) < 48:
        cin, cout = int(rng.choice(channels)), int(rng.choice(channels[1:]))
        k, stride = int(rng.choice([1, 1, 3, 3, 5])), int(rng.choice([1, 1, 1, 2]))
        add(*_conv(cin, cout, k, side(), side(), stride))
    while sum("g1_" not in name for name in found) < 16:
        c, k, stride = int(rng.choice(channels[1:])), int(rng.choice([3, 5])), int(rng.choice([1, 1, 2]))
        add(*_conv(c, c, k, side(), side(), stride, groups=c))
    while sum(op.op == "MatMul" for op in found.values()) < 40:
        batch = int(rng.choice([1, 1, 1, 4, 8]))
        m, kk, n = int(rng.choice([1, 4, 16, 64, 128, 256])), int(rng.choice([16, 32, 64, 128, 256, 512])), int(rng.choice([16, 64, 128, 256, 512, 1000]))
        shape = (batch, m, kk) if batch > 1 else (m, kk)
        add(MicroOp(f"matmul_{batch}x{m}x{kk}x{n}", "MatMul", shape, ((*shape[:-2], kk, n),)), 2 * batch * m * kk * n)
    # Loops whose reduction strides by a multiple of 4 KiB (32x32 or 64x64 float planes, a
    # 3x3 convolution padded to 32x32, 1024 matmul columns): rare in a random sweep, slow.
    for cin, cout, k, hw in [(32, 16, 1, 32), (64, 32, 1, 32), (128, 16, 1, 32), (32, 32, 1, 64), (16, 16, 3, 30), (48, 24, 3, 30)]:
        add(*_conv(cin, cout, k, hw, hw))
    for m, kk in [(16, 64), (64, 256)]:
        add(MicroOp(f"matmul_1x{m}x{kk}x1024", "MatMul", (m, kk), ((kk, 1024),)), 2 * m * kk * 1024)
    return list(found.values())


def micro_benchmarks(seed: int = 2026) -> list[MicroOp]:
    """The calibration suite: a seeded sweep of conv/depthwise/matmul shapes, and a few sizes of
    the other classes. None of them is a model we evaluate with."""
    return [
        *_sweep(np.random.default_rng(seed)),
        MicroOp("add_64x56x56", "Add", (1, 64, 56, 56), ((1, 64, 56, 56),)),
        *(
            MicroOp(f"{op.lower()}_{c}x{hw}", op, (1, c, hw, hw))
            for op, c, hw in [("Sigmoid", 32, 28), ("Sigmoid", 8, 112), ("Tanh", 64, 14), ("Erf", 16, 56), ("Exp", 128, 7)]
        ),
        *(MicroOp(f"softmax_{rows}x{n}", "Softmax", (rows, n), attrs=(("axis", -1),)) for rows, n in [(16, 1000), (256, 64), (4, 4096)]),
        *(
            MicroOp(f"maxpool{k}s{s}_{c}x{hw}", "MaxPool", (1, c, hw, hw), attrs=(("kernel_shape", (k, k)), ("strides", (s, s)), ("pads", (k // 2,) * 4)))
            for k, s, c, hw in [(3, 2, 32, 56), (2, 2, 64, 28), (5, 1, 16, 20)]
        ),
        *(MicroOp(f"layernorm_{rows}x{n}", "LayerNormalization", (rows, n), ((n,), (n,)), (("axis", -1),)) for rows, n in [(64, 256), (196, 96)]),
        *(MicroOp(f"mean_{c}x{hw}", "GlobalAveragePool", (1, c, hw, hw)) for c, hw in [(64, 28), (256, 7), (16, 112)]),
        *(MicroOp(f"transpose_{c}x{hw}", "Transpose", (1, c, hw, hw), attrs=(("perm", (0, 2, 3, 1)),)) for c, hw in [(64, 56), (16, 14)]),
    ]


def _measured(ops: list[MicroOp], name: str, device: str, out: Path, repeat: int, board: Board | None) -> tuple[ModelAnalysis, list[Measurement]]:
    """``ops`` compiled as one suite model for ``device`` and measured ROUNDS times, here or on ``board``."""
    artifact = deploy(suite_model(ops, name), device, out)
    analysis = artifact.analysis
    inputs = random_inputs(artifact.inputs, seed=0)
    if board is not None:
        rounds = [board.measure(artifact, inputs, repeat) for _ in range(ROUNDS)]
        if not rounds[0].per_kernel:
            raise UserInputError(f"calibrate: {board} did not time the kernels one by one", hint="deploy with this edgesdk version")
        return analysis, rounds
    return analysis, [measure(artifact.runner, inputs, analysis, repeat) for _ in range(ROUNDS)]


def _call_overhead_s(device: str, out: Path, repeat: int, board: Board | None) -> float:
    """What one kernel call costs beyond its work: whole runs (no per-kernel hook, whose own cost
    would swamp it) of a model of nothing but tiny kernels, divided by their number."""
    ops = [MicroOp(f"tiny{index}", "Relu" if index % 2 else "Neg", (1, TINY_ELEMENTS)) for index in range(SUITE_MODEL_OPS)]
    analysis, rounds = _measured(ops, "call_overhead", device, out, repeat, board)
    return min(measured.latency_ms for measured in rounds) * 1e-3 / len(analysis.kernels)


def calibrate(device: str = "pc", *, repeat: int = 30, board: Board | None = None, on_stage: Callable[[str], None] | None = None) -> CostFit:
    """Measure the micro-benchmarks on this host, or on ``board`` over TVM RPC (the device's own
    code: edgesdk.distributed.boards), fit, store and return the device's calibration."""
    profile = get_device(device)  # its shipped figures: stored fits reach only the simulator
    if board is None and not runs_here(profile.target):
        raise UserInputError(
            f"calibrate: code for '{device}' does not run on this host",
            hint="measure it on a board with --remote HOST:PORT (docs/scale-out.md), or calibrate a device whose code runs here (pc)",
        )
    unit_name = next(name for name, unit in profile.compute_units.items() if unit.kind == "cpu")
    unit = profile.compute_units[unit_name]
    samples: list[Sample] = []
    suite = micro_benchmarks()
    groups = [suite[start : start + SUITE_MODEL_OPS] for start in range(0, len(suite), SUITE_MODEL_OPS)]
    with tempfile.TemporaryDirectory(prefix="edgesdk-calibrate-") as scratch, reporting(on_stage):
        for number, ops in enumerate(groups, 1):
            stage(f"measuring micro-benchmarks {number}/{len(groups)}")
            analysis, rounds = _measured(ops, f"calibration{number}", device, Path(scratch) / str(number), repeat, board)
            per_kernel = (measured.per_kernel for measured in rounds)
            fastest = [min(timings, key=lambda timing: timing.measured_ms) for timings in zip(*per_kernel, strict=True)]
            calls = list(zip(analysis.kernels, fastest, strict=False))
            for (first, _), (kernel, timing) in zip(calls, calls[1:], strict=False):
                if kernel.name != first.name:
                    continue  # keep the second, warm call of each operator
                samples.append(
                    Sample(
                        kernel=kernel.name,
                        op_class=kernel.op_class,
                        ops=kernel.ops,
                        features=efficiency_features(kernel),
                        measured_ms=timing.measured_ms,
                        terms=time_terms(kernel),
                    )
                )
        stage("measuring the cost of a kernel call")
        overhead_s = _call_overhead_s(device, Path(scratch) / "tiny", repeat, board)
    efficiency = fit_factors(samples, unit.peak_ops_per_s["float32"], overhead_s)
    result = CostFit(
        device=profile.id,
        unit=unit_name,
        created_utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        host=str(board) if board else f"{platform.machine()} {platform.processor() or platform.platform()} ({os.cpu_count()} cpus)",
        launch_overhead_s=overhead_s,
        efficiency=efficiency,
        feature_weights=choose_weights(samples),
        samples=samples,
        time_terms=list(TERMS),
        time_coefficients=fit_times(samples, overhead_s),
    )
    path = fit_file(profile.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.model_dump(mode="json"), indent=1) + "\n")
    return result
