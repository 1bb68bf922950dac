"""Deploy cost and pc artifact speed, side by side with onnxruntime, measured in one run.

    .venv/bin/python benchmarks/deploy.py [--repeat N] [--out benchmarks/results/deploy.json]

Per model: a cold deploy to pc (empty compile cache), then to xr-headset (its host simulation
build is the pc build, so only the AArch64 build is new), a warm xr-headset redeploy (the cache
serves every build), and the latency of the pc artifact (run by the Relax VM in this process)
against onnxruntime's CPU provider on the same inputs and the same machine (benchmarks/host_vs_ort.py
times that more carefully). PP-OCRv4 det at 480x480 is the real model the issue's deploy-time goal names.
Ratios > 1 mean slower than onnxruntime. Nothing here is asserted; the numbers are written as JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import median_ms, write_result  # noqa: E402
from make_example import hand_tracker  # noqa: E402

import edgesdk  # noqa: E402
from edgesdk.frontend.model import random_inputs  # noqa: E402
from edgesdk.testing.models import mlp, tiny_cnn, transformer_block  # noqa: E402
from edgesdk.testing.real_models import REAL_MODELS, real_model  # noqa: E402

MODELS = {
    "tiny_cnn": (tiny_cnn, {"image": [1, 3, 32, 32]}),
    "mlp": (mlp, {"features": [1, 64]}),
    "transformer_block": (transformer_block, {"tokens": [1, 64, 64]}),
    "hand_tracker": (hand_tracker, {"frames": [1, 3, 96, 96]}),
    "ppocr_det_480": (lambda: real_model("ppocr_v4_det"), {REAL_MODELS["ppocr_v4_det"].input_name: [1, 3, 480, 480]}),
}


def bench(name: str, repeat: int, scratch: Path) -> dict:
    build, shapes = MODELS[name]
    record = {"model": name, "input_shapes": shapes}
    for device in ("pc", "xr-headset"):
        start = time.perf_counter()
        artifact = edgesdk.deploy(build(), device, scratch / f"{name}-{device}", input_shapes=shapes)
        record[f"cold_deploy_s_{device}"] = round(time.perf_counter() - start, 3)
        record[f"compile_s_{device}"] = artifact.manifest.build.compile_seconds
    start = time.perf_counter()
    warm = edgesdk.deploy(build(), "xr-headset", scratch / f"{name}-xr-headset-warm", input_shapes=shapes)
    record["warm_deploy_s_xr-headset"] = round(time.perf_counter() - start, 3)
    record["warm_cached"] = warm.manifest.build.cached

    pc = edgesdk.load_artifact(scratch / f"{name}-pc")
    inputs = random_inputs(pc.inputs, seed=1)
    session = ort.InferenceSession(str(pc.path / "model.onnx"), providers=["CPUExecutionProvider"])
    record["pc_tvm_ms"] = round(median_ms(lambda: pc.run(inputs), repeat), 4)
    record["onnxruntime_ms"] = round(median_ms(lambda: session.run(None, inputs), repeat), 4)
    record["tvm_over_onnxruntime"] = round(record["pc_tvm_ms"] / record["onnxruntime_ms"], 2)
    record["kernels"] = pc.manifest.build.kernels
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deploy.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgesdk-bench-") as scratch:
        os.environ["EDGESDK_CACHE_DIR"] = str(Path(scratch) / "cache")  # cold, then warm
        records = [bench(name, args.repeat, Path(scratch)) for name in MODELS]
    header = f"{'model':<18} {'cold pc s':>9} {'cold xr s':>9} {'warm xr s':>9} {'tvm ms':>9} {'ort ms':>9} {'tvm/ort':>8}"
    print(header)
    for r in records:
        print(
            f"{r['model']:<18} {r['cold_deploy_s_pc']:>9.2f} {r['cold_deploy_s_xr-headset']:>9.2f} "
            f"{r['warm_deploy_s_xr-headset']:>9.2f} {r['pc_tvm_ms']:>9.3f} {r['onnxruntime_ms']:>9.3f} {r['tvm_over_onnxruntime']:>8.2f}"
        )
    write_result(args.out, {"benchmark": "deploy", "repeat": args.repeat, "models": records})


if __name__ == "__main__":
    main()
