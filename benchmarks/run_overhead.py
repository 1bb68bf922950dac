"""What `Artifact.run` adds per call beyond the kernels: numpy in, numpy out, against the compiled
function called on inputs already in TVM's memory.

    .venv/bin/python benchmarks/run_overhead.py [--repeat 2000] [--out benchmarks/results/run_overhead.json]

Models with small, medium and several inputs/outputs are deployed to pc (cached builds reused);
each side is timed in rounds that alternate, and the overhead is the difference of the medians.
The inputs are numpy arrays as a user has them (aligned or not, as numpy allocates them) plus one
deliberately unaligned copy, which `Artifact.run` must copy into TVM memory. onnxruntime's own
per-call cost on the same model is printed beside, for scale. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")  # before TVM loads

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_result  # noqa: E402
from make_example import hand_tracker  # noqa: E402

import edgesdk  # noqa: E402
from edgesdk.frontend.model import random_inputs  # noqa: E402
from edgesdk.testing import models  # noqa: E402

MODELS = {
    "mlp": (lambda: models.mlp(features=64, hidden=128), {"features": [1, 64]}),
    "hand_tracker": (hand_tracker, {"frames": [1, 3, 96, 96]}),
    "transformer": (lambda: models.transformer_block(d_model=64, heads=2, ffn=128), {"tokens": [1, 16, 64]}),
}


def _unaligned(array: np.ndarray) -> np.ndarray:
    raw = np.empty(array.nbytes + 68, np.uint8)
    start = (-raw.ctypes.data) % 64 + 4
    copy = raw[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


def alternating_us(functions: dict, repeat: int, rounds: int = 10) -> dict[str, float]:
    """Median microseconds per call of each function, timed in alternating rounds."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            function()
            start = time.perf_counter()
            for _ in range(repeat // rounds):
                function()
            samples[name].append((time.perf_counter() - start) / (repeat // rounds) * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "run_overhead.json")
    args = parser.parse_args()
    records = []
    with tempfile.TemporaryDirectory(prefix="edgesdk-run-overhead-") as scratch:
        for name, (build, shapes) in MODELS.items():
            artifact = edgesdk.deploy(build(), "pc", Path(scratch) / name, input_shapes=shapes)
            feeds = random_inputs(artifact.inputs, seed=1)
            unaligned = {key: _unaligned(value) for key, value in feeds.items()}
            kernels = artifact.runner.invoker(feeds)
            timed = alternating_us({"kernels": kernels, "run": lambda: artifact.run(feeds), "run_unaligned": lambda: artifact.run(unaligned)}, args.repeat)  # noqa: B023
            record = {
                "model": name,
                "inputs": len(feeds),
                "outputs": len(artifact.manifest.model.outputs),
                "input_bytes": sum(a.nbytes for a in feeds.values()),
                "kernels_us": round(timed["kernels"], 2),
                "run_us": round(timed["run"], 2),
                "overhead_us": round(timed["run"] - timed["kernels"], 2),
                "overhead_unaligned_us": round(timed["run_unaligned"] - timed["kernels"], 2),
            }
            records.append(record)
            print(f"{name:<13} kernels {record['kernels_us']:9.1f} us  run {record['run_us']:9.1f} us  overhead {record['overhead_us']:6.1f} us "
                  f"(unaligned inputs {record['overhead_unaligned_us']:6.1f} us)", flush=True)  # fmt: skip
    worst = max(max(r["overhead_us"], r["overhead_unaligned_us"]) for r in records)
    print(f"worst overhead per call: {worst:.1f} us")
    write_result(args.out, {"benchmark": "run_overhead", "repeat": args.repeat, "worst_overhead_us": worst, "records": records})


if __name__ == "__main__":
    main()
