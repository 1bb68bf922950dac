"""Wall time of a 6-model x 6-device matrix (`edgesdk batch`) on the local process pool and on Ray,
on this machine, each from a cold build cache so that both compile everything.

    .venv/bin/python benchmarks/matrix.py [--precisions none] [--workers N] [--out benchmarks/results/matrix.json]

Ray runs on an instance started here for the run (one worker per core, like the pool). Both must
give the same rows (latency, energy, peak memory per deploy): the script checks it. The ratio is
Ray's wall time over the pool's, measured in the same run; on one machine Ray can only add its
start-up and scheduling, its gain is a cluster (docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_result  # noqa: E402

from edgesdk.compile.build_cache import CACHE_ENV  # noqa: E402
from edgesdk.frontend.tensors import save_npz  # noqa: E402
from edgesdk.testing import models  # noqa: E402
from edgesdk.verbs.batch import batch  # noqa: E402

MODELS = {
    "tiny_cnn": (models.tiny_cnn, {"image": [1, 3, 32, 32]}),
    "mlp": (models.mlp, {"features": [4, 64]}),
    "transformer_block": (models.transformer_block, {"tokens": [1, 32, 64]}),
    "depthwise_net": (models.depthwise_net, {"image": [1, 3, 96, 96]}),
    "branchy_net": (models.branchy_net, {"image": [1, 3, 64, 64]}),
    "nas_cells": (models.nas_cells, {"image": [1, 3, 32, 32]}),
}


def write_matrix(directory: Path, precisions: list[str], output: str) -> Path:
    rng = np.random.default_rng(0)
    entries = []
    for name, (build, shapes) in MODELS.items():
        onnx.save(build(), directory / f"{name}.onnx")
        entry = {"path": f"{name}.onnx", "input_shapes": shapes}
        if any(precision != "none" for precision in precisions):
            save_npz(directory / f"{name}.npz", {key: rng.standard_normal([32, *shape]).astype(np.float32) for key, shape in shapes.items()})
            entry["calibration"] = f"{name}.npz"
        entries.append(entry)
    path = directory / f"{output}.yaml"
    path.write_text(yaml.safe_dump({"models": entries, "devices": "all", "precisions": precisions, "output": output}))
    return path


def timed(matrix: Path, cache: Path, **options) -> tuple[float, list]:
    os.environ[CACHE_ENV] = str(cache)  # cold: every deploy compiles
    start = time.perf_counter()
    report = batch(matrix, **options)
    seconds = time.perf_counter() - start
    failed = [f"{row.model}/{row.device}: {row.error}" for row in report.rows if row.error]
    if failed:
        raise SystemExit(f"{len(failed)} deploys failed on {report.executor}: {failed[:3]}")
    return seconds, report.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", default="none", help="Comma-separated schemes, e.g. none,int8.")
    parser.add_argument("--workers", type=int, default=None, help="Local pool size [default: the cores].")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "matrix.json")
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    with tempfile.TemporaryDirectory(prefix="edgesdk-matrix-") as scratch:
        directory = Path(scratch)
        local_s, local_rows = timed(write_matrix(directory, precisions, "local"), directory / "cache-local", workers=args.workers)
        print(f"local pool: {len(local_rows)} deploys in {local_s:.1f} s", flush=True)
        ray_s, ray_rows = timed(write_matrix(directory, precisions, "ray"), directory / "cache-ray", executor_name="ray")
        print(f"ray (started here): {len(ray_rows)} deploys in {ray_s:.1f} s", flush=True)
    figures = [(row.latency_ms, row.energy_mj, row.peak_memory_bytes) for row in local_rows]
    same = figures == [(row.latency_ms, row.energy_mj, row.peak_memory_bytes) for row in ray_rows]
    print(f"ray / local wall time: {ray_s / local_s:.2f}; same rows: {same}")
    write_result(
        args.out,
        {
            "models": list(MODELS),
            "devices": sorted({row.device for row in local_rows}),
            "precisions": precisions,
            "deploys": len(local_rows),
            "local_seconds": round(local_s, 1),
            "local_workers": args.workers or os.cpu_count(),
            "ray_seconds": round(ray_s, 1),
            "ray_over_local": round(ray_s / local_s, 3),
            "same_rows": same,
            "per_deploy_seconds_local": round(sum(row.seconds or 0 for row in local_rows) / len(local_rows), 2),
        },
    )
    if not same:
        raise SystemExit("the Ray rows differ from the local ones")


if __name__ == "__main__":
    main()
