"""How well the simulator predicts real latency: predicted vs measured on pc, per model and per kernel.

    .venv/bin/python benchmarks/fidelity.py [--repeat N] [--out benchmarks/results/fidelity.json]

First calibrates pc on this host (`edgesdk.simulate.fit`: one-operator micro-benchmarks only), then
for each model below deploys it to pc, measures it (the fastest of ROUNDS medians of whole-run
times, as the calibration measures its kernels: on a shared machine other work only adds time;
per-kernel times from the VM's instrument hook) and compares with the calibrated estimate. None of these models is used
by the calibration. Reports per-model error |predicted/measured - 1|, its median and p90, and the
Spearman rank correlation of predicted vs measured kernel times within each model. onnxruntime's
latency on the same model is printed beside, for scale.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import median_ms, write_result  # noqa: E402
from make_example import hand_tracker  # noqa: E402

import edgesdk  # noqa: E402
from edgesdk.compile.kernels import ModelAnalysis  # noqa: E402
from edgesdk.frontend.model import random_inputs  # noqa: E402
from edgesdk.simulate.measure import measure  # noqa: E402
from edgesdk.testing import models  # noqa: E402
from edgesdk.verbs.calibrate import ROUNDS, calibrate  # noqa: E402

WHEELS = ROOT / ".venv" / "test-models"


def _wheel_model(wheel: str, member: str) -> onnx.ModelProto:
    with zipfile.ZipFile(WHEELS / wheel) as archive:
        return onnx.load_from_string(archive.read(member))


MODELS = {
    "tiny_cnn (cnn)": (models.tiny_cnn, {"image": [1, 3, 32, 32]}),
    "mlp": (models.mlp, {"features": [1, 64]}),
    "transformer_block": (models.transformer_block, {"tokens": [1, 64, 64]}),
    "depthwise_net": (models.depthwise_net, {"image": [1, 3, 96, 96]}),
    "branchy_net (wide, branchy)": (models.branchy_net, {"image": [1, 3, 64, 64]}),
    "large_spatial_net": (models.large_spatial_net, {"image": [1, 3, 224, 224]}),
    "hand_tracker (example)": (hand_tracker, {"frames": [1, 3, 96, 96]}),
    # Real pretrained models from PyPI wheels (downloaded by `make test`), when present.
    "ppocr_cls (real)": (
        lambda: _wheel_model("rapidocr_onnxruntime-1.4.4-py3-none-any.whl", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
        {"x": [1, 3, 48, 192]},
    ),
    "yolov8n (real)": (lambda: _wheel_model("nudenet-3.4.2-py3-none-any.whl", "nudenet/320n.onnx"), {"images": [1, 3, 160, 160]}),
}


def spearman(a: list[float], b: list[float]) -> float:
    ranks = lambda v: np.argsort(np.argsort(v)).astype(float)  # noqa: E731
    ra, rb = ranks(np.asarray(a)), ranks(np.asarray(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def onnxruntime_ms(path: Path, inputs: dict, repeat: int) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return median_ms(lambda: session.run(None, inputs), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fidelity.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgesdk-fidelity-") as scratch:
        os.environ.setdefault("EDGESDK_CACHE_DIR", str(Path(scratch) / "cache"))
        calibration = calibrate("pc", repeat=args.repeat)
        records = []
        for name, (build, shapes) in MODELS.items():
            if "(real)" in name and not WHEELS.is_dir():
                continue
            artifact = edgesdk.deploy(build(), "pc", Path(scratch) / name.split()[0], input_shapes=shapes)
            analysis = ModelAnalysis.model_validate_json((artifact.path / "analysis.json").read_text())
            inputs = random_inputs(artifact.inputs, seed=0)
            # The fastest of a few medians, as the calibration takes: other tenants only add time.
            rounds = [measure(artifact.runner, inputs, analysis, args.repeat) for _ in range(ROUNDS)]
            measured = min(rounds, key=lambda m: m.latency_ms)
            slowest = max(m.latency_ms for m in rounds)
            predicted = artifact.manifest.estimate
            records.append(
                {
                    "model": name,
                    "kernels": len(analysis.kernels),
                    "predicted_ms": round(predicted.latency_ms, 4),
                    "measured_ms": round(measured.latency_ms, 4),
                    "error": round(abs(predicted.latency_ms / measured.latency_ms - 1), 4),
                    "ratio": round(predicted.latency_ms / measured.latency_ms, 3),
                    # How much this machine moved while one model was measured: slowest / fastest round.
                    "round_spread": round(slowest / measured.latency_ms, 3),
                    "kernel_rank_correlation": round(
                        spearman([layer.latency_ms for layer in predicted.per_layer], [k.measured_ms for k in measured.per_kernel]), 3
                    ),
                    "onnxruntime_ms": round(onnxruntime_ms(artifact.path / "model.onnx", inputs, args.repeat), 4),
                }
            )
    errors = sorted(r["error"] for r in records)
    summary = {
        "median_error": round(statistics.median(errors), 4),
        "p90_error": round(float(np.percentile(errors, 90)), 4),
        "worst_error": round(max(errors), 4),
        "median_kernel_rank_correlation": round(statistics.median(r["kernel_rank_correlation"] for r in records), 3),
    }
    print(f"{'model':<28} {'kernels':>7} {'pred ms':>9} {'meas ms':>9} {'pred/meas':>9} {'spread':>7} {'rank r':>7} {'ort ms':>8}")
    for r in records:
        print(
            f"{r['model']:<28} {r['kernels']:>7} {r['predicted_ms']:>9.3f} {r['measured_ms']:>9.3f} {r['ratio']:>9.2f}"
            f" {r['round_spread']:>7.2f} {r['kernel_rank_correlation']:>7.2f} {r['onnxruntime_ms']:>8.3f}"
        )
    print(
        f"median error {summary['median_error']:.1%}, p90 {summary['p90_error']:.1%}, worst {summary['worst_error']:.1%}; "
        f"median kernel rank correlation {summary['median_kernel_rank_correlation']:.2f}"
    )
    calibrated = {"launch_overhead_s": calibration.launch_overhead_s, "efficiency": calibration.efficiency, "created_utc": calibration.created_utc}
    write_result(args.out, {"benchmark": "fidelity", "device": "pc", "calibration": calibrated, "repeat": args.repeat, "summary": summary, "models": records})


if __name__ == "__main__":
    main()
