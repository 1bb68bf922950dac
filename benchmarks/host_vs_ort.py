"""The pc artifact against onnxruntime on this host: latency, ratio, and how much of the CPU's peak
the conv/matmul kernels reach.

    .venv/bin/python benchmarks/host_vs_ort.py [--models a,b] [--repeat 30] [--no-int8] [--out benchmarks/results/host_vs_ort.json]

One process, the same inputs, the same thread count for both (2: onnxruntime's intra-op pool and
TVM's, through TVM_NUM_THREADS, set before TVM loads), all graph optimisations on in onnxruntime.
Each model is deployed to pc (cached builds are reused) and both runtimes are timed interleaved,
in alternating turns of at least TURN_S seconds, after a warm-up; medians of >= ``--repeat`` calls. The edgesdk side is `Artifact.run`,
what a user calls. int8: the same model quantized with `--quantize int8` (calibration samples made
here), onnxruntime running the artifact's QDQ model against our integer kernels. The peak share is
the conv/matmul kernels' FLOPs over their measured time (TVM's per-kernel instrument), divided by
the pc profile's float32 (or int8) peak. Ratios > 1: slower than onnxruntime. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

THREADS = 2
os.environ.setdefault("TVM_NUM_THREADS", str(THREADS))  # before TVM loads: its pool used 1 thread here otherwise

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_result  # noqa: E402
from make_example import hand_tracker  # noqa: E402

import edgesdk  # noqa: E402
from edgesdk.compile.tuning_db import NO_TUNING_ENV  # noqa: E402
from edgesdk.frontend.model import random_inputs  # noqa: E402
from edgesdk.simulate.measure import measure  # noqa: E402
from edgesdk.simulate.partition import ARITHMETIC_CLASSES, compute_dtype  # noqa: E402
from edgesdk.testing import models  # noqa: E402
from edgesdk.testing.real_models import REAL_MODELS, inputs, real_model  # noqa: E402
from edgesdk.verbs.pipeline import read_analysis  # noqa: E402

CNNS = {"mobilenet_v2", "resnet18", "branchy_net", "hand_tracker", "yolov8n", "ppocr_det"}
CALIBRATION_SAMPLES = 16


def _real(model_id: str):
    entry = REAL_MODELS[model_id]
    return lambda: real_model(model_id), {entry.input_name: list(entry.shape)}, lambda count: {entry.input_name: inputs(model_id, count, "calibration")}


MODELS = {
    "mobilenet_v2": (models.mobilenet_v2_like, {"image": [1, 3, 224, 224]}, None),
    "resnet18": (models.resnet18_like, {"image": [1, 3, 224, 224]}, None),
    "transformer": (lambda: models.transformer_block(d_model=256, heads=4, ffn=1024), {"tokens": [1, 128, 256]}, None),
    "mlp": (lambda: models.mlp(features=256, hidden=1024), {"features": [1, 256]}, None),
    "branchy_net": (models.branchy_net, {"image": [1, 3, 64, 64]}, None),
    "hand_tracker": (hand_tracker, {"frames": [1, 3, 96, 96]}, None),
    "yolov8n": _real("nudenet_yolov8n"),
    "ppocr_det": _real("ppocr_v4_det"),
}


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# Calls per turn. Both runtimes' thread pools spin for a while after a call: a call made right after
# the other runtime's competes with its spinning threads for this host's 2 cores (branchy_net 44 ms
# vs 5.7 alone when alternated call by call). In turns of 5 only the first call of a turn pays that,
# and the median ignores it; the turns still alternate, so load drift hits both alike.
TURN_S = 0.25  # seconds per turn of one runtime


def interleaved_ms(first, second, repeat: int) -> tuple[float, float]:
    """Medians (ms) of ``first`` and ``second`` over at least ``repeat`` calls each, timed in
    alternating turns of at least ``TURN_S`` seconds. Each turn's first call is not counted: it
    pays for the other runtime's worker threads, which spin on the 2 cores for a while after their
    last call (alternating call by call made each runtime look several times slower)."""
    # Warm up for a while, not for a call or two: the first model of a run measured 25% slower
    # (mobilenet 14.7 ms against 11.7 ms in a later turn) after two warm-up calls.
    for function in (first, second, first, second):
        warm_until = time.perf_counter() + 2 * TURN_S
        while time.perf_counter() < warm_until:
            function()
    times: tuple[list[float], list[float]] = ([], [])
    while min(len(samples) for samples in times) < repeat:
        for function, samples in ((first, times[0]), (second, times[1])):
            function()
            turn_started, calls = time.perf_counter(), 0
            while time.perf_counter() - turn_started < TURN_S or calls < 3:
                start = time.perf_counter()
                function()
                samples.append((time.perf_counter() - start) * 1e3)
                calls += 1
    return statistics.median(times[0]), statistics.median(times[1])


def peak_share(artifact, feeds, repeat: int) -> float | None:
    """FLOPs of the conv/matmul kernels over their measured time, as a share of the pc CPU's peak."""
    analysis = read_analysis(artifact.path)
    timed = measure(artifact.runner, feeds, analysis, max(5, repeat // 3))
    unit = next(unit for unit in edgesdk.get_device("pc").compute_units.values() if unit.kind == "cpu")
    seconds = peak_weighted = 0.0
    for kernel, timing in zip(analysis.kernels, timed.per_kernel, strict=True):
        if kernel.op_class in ARITHMETIC_CLASSES and kernel.flops:
            peak = unit.peak_ops_per_s.get(compute_dtype(kernel)) or unit.peak_ops_per_s["float32"]
            seconds += timing.measured_ms * 1e-3
            peak_weighted += kernel.flops / peak
    return (peak_weighted / seconds) if seconds else None  # = achieved FLOP/s over the peak, FLOP-weighted


def bench(name: str, scheme: str, repeat: int, scratch: Path):
    """The record of one model at one precision, and its artifact with the inputs it was timed on."""
    build, shapes, samples = MODELS[name]
    options: dict = {"input_shapes": shapes}
    if scheme != "none":
        calibration = samples(CALIBRATION_SAMPLES) if samples else None
        if calibration is None:
            specs = edgesdk.load_model(build(), shapes).inputs
            calibration = {spec.name: np.stack([random_inputs([spec], seed)[spec.name][0] for seed in range(CALIBRATION_SAMPLES)]) for spec in specs}
        options |= {"quantize": scheme, "calibration": calibration}
    started = time.perf_counter()
    artifact = edgesdk.deploy(build(), "pc", scratch / f"{name}-{scheme}", **options)
    deploy_s = time.perf_counter() - started
    feeds = random_inputs(artifact.inputs, seed=1)
    session = _session(artifact.path / "model.onnx")
    edgesdk_ms, ort_ms = interleaved_ms(lambda: artifact.run(feeds), lambda: session.run(None, feeds), repeat)
    share = peak_share(artifact, feeds, repeat)
    record = {
        "model": name, "scheme": scheme, "edgesdk_ms": round(edgesdk_ms, 4), "onnxruntime_ms": round(ort_ms, 4),
        "ratio": round(edgesdk_ms / ort_ms, 3), "conv_matmul_peak_share": None if share is None else round(share, 4),
        "deploy_s": round(deploy_s, 2), "cached": artifact.manifest.build.cached, "verified": artifact.manifest.verification.passed,
        "tuned_kernels": len(artifact.manifest.build.tuned_kernels),
    }  # fmt: skip
    print(f"{name:<14} {scheme:<5} edgesdk {edgesdk_ms:9.3f} ms  onnxruntime {ort_ms:8.3f} ms  ratio {edgesdk_ms / ort_ms:7.2f}x  "
          f"peak {100 * (share or 0):5.1f}%  deploy {deploy_s:6.1f} s", flush=True)  # fmt: skip
    return record, artifact, feeds


def int8_against_fp32(name: str, int8, fp32, feeds, repeat: int) -> dict:
    """The int8 artifact against the fp32 one, timed in turns too: two medians taken minutes apart
    drift with the machine's load (this VM's times move by 20-30% between runs)."""
    int8_ms, fp32_ms = interleaved_ms(lambda: int8.run(feeds), lambda: fp32.run(feeds), repeat)
    print(f"{name:<14} int8 {int8_ms:9.3f} ms against fp32 {fp32_ms:9.3f} ms, timed in turns: {int8_ms / fp32_ms:5.2f}x", flush=True)
    return {"int8_ms_vs_fp32": round(int8_ms, 4), "fp32_ms_vs_int8": round(fp32_ms, 4), "int8_over_fp32": round(int8_ms / fp32_ms, 3)}


def tuned_against_rules(name: str, tuned, feeds, repeat: int, scratch: Path) -> dict:
    """The tuned artifact against the same model built with the rules only, timed in turns."""
    build, shapes, _ = MODELS[name]
    os.environ[NO_TUNING_ENV] = "1"
    try:
        rules = edgesdk.deploy(build(), "pc", scratch / f"{name}-rules", input_shapes=shapes)
    finally:
        del os.environ[NO_TUNING_ENV]
    tuned_ms, rules_ms = interleaved_ms(lambda: tuned.run(feeds), lambda: rules.run(feeds), repeat)
    print(f"{name:<14} tuned {tuned_ms:9.3f} ms against rules only {rules_ms:9.3f} ms, timed in turns: {tuned_ms / rules_ms:5.2f}x", flush=True)
    return {"tuned_ms_vs_rules": round(tuned_ms, 4), "rules_ms_vs_tuned": round(rules_ms, 4), "tuned_over_rules": round(tuned_ms / rules_ms, 3)}


def geomean(values: list[float]) -> float | None:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-int8", action="store_true", help="fp32 only")
    parser.add_argument("--tuned", action="store_true", help="use the tuning database (`edgesdk tune`) and time each model against its rules-only build too")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "host_vs_ort.json")
    args = parser.parse_args()
    if not args.tuned:
        os.environ[NO_TUNING_ENV] = "1"  # rules only, whatever this machine's tuning database holds
    records = []
    with tempfile.TemporaryDirectory(prefix="edgesdk-host-vs-ort-") as scratch:
        for name in args.models.split(","):
            record, fp32, feeds = bench(name, "none", args.repeat, Path(scratch))
            if args.tuned:
                record |= tuned_against_rules(name, fp32, feeds, args.repeat, Path(scratch))
            records.append(record)
            if not args.no_int8 and name in CNNS:
                record, int8, _ = bench(name, "int8", args.repeat, Path(scratch))
                records.append(record | int8_against_fp32(name, int8, fp32, feeds, args.repeat))
    fp32 = [r["ratio"] for r in records if r["scheme"] == "none"]
    int8 = {r["model"]: r for r in records if r["scheme"] == "int8"}
    summary = {
        "fp32_geomean_ratio": geomean(fp32),
        "fp32_worst_ratio": max(fp32, default=None),
        "int8_geomean_ratio": geomean([r["ratio"] for r in int8.values()]),
        "int8_over_fp32": {name: r["int8_over_fp32"] for name, r in int8.items()},
        "int8_faster_than_fp32": {name: r["int8_over_fp32"] < 1 for name, r in int8.items()},
    }
    print(f"fp32: geometric mean {summary['fp32_geomean_ratio']:.2f}x onnxruntime, worst {summary['fp32_worst_ratio']:.2f}x")
    write_result(args.out, {"benchmark": "host_vs_ort", "threads": THREADS, "repeat": args.repeat, "summary": summary, "records": records})


if __name__ == "__main__":
    main()
