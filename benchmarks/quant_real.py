"""Every scheme on real pretrained models: deploy time against fp32's, and what each keeps of the task.

    .venv/bin/python benchmarks/quant_real.py [--models a,b] [--schemes none,int8,...] [--device phone]
        [--out benchmarks/results/quant_real.json]

The models are the PyPI-shipped PP-OCR det/rec/cls and YOLOv8n (edgesdk.testing.real_models,
opsets 11, 12, 12 and 17). Each scheme is deployed the way a user does it, `edgesdk deploy MODEL
--device phone --quantize S [--calibration NPZ] --no-cache --json` in a subprocess (no input shape:
the calibration samples define it; fp32 and the weight-only schemes without calibration get
--input-shape), timed wall to wall, its stderr kept: every line that is not edgesdk's own
(`warning:`/`error:`/`hint:`) is a third-party leak and is counted. The artifact then runs on
held-out inputs made here and is scored against fp32 onnxruntime on the original model
(edgesdk.testing.real_models.score). benchmarks/quant.py does the same for the digits CNN against
its labels. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_result  # noqa: E402

import edgesdk  # noqa: E402
from edgesdk.frontend.reference import reference_runner  # noqa: E402
from edgesdk.quantization.recipe import CALIBRATED  # noqa: E402
from edgesdk.testing.real_models import REAL_MODELS, inputs, metric_names, real_model, run_each, score  # noqa: E402

SCHEMES = ["none", "int8", "w8a16", "w4a16", "w4a8", "fp16", "vq"]
EVAL_INPUTS = {"rec": 60, "cls": 60, "det": 12, "detect": 24}
CALIBRATION_SAMPLES = 32
OWN_PREFIXES = ("warning:", "error:", "hint:")


def deploy(model: Path, scheme: str, calibration: Path, shape: str, device: str, out: Path) -> tuple[float, list[str], int]:
    command = [str(ROOT / ".venv" / "bin" / "edgesdk"), "deploy", str(model), "--device", device, "-o", str(out), "--no-cache", "--json"]
    if scheme != "none":
        command += ["--quantize", scheme]
    command += ["--calibration", str(calibration)] if scheme in CALIBRATED else ["--input-shape", shape]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start, done.stderr.splitlines(), done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(REAL_MODELS))
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--device", default="phone")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quant_real.json")
    args = parser.parse_args()
    schemes = ["none", *(s for s in args.schemes.split(",") if s != "none")]
    records = []
    with tempfile.TemporaryDirectory(prefix="edgesdk-quant-real-") as scratch:
        for model_id in args.models.split(","):
            entry, source = REAL_MODELS[model_id], real_model(model_id)
            model, calibration = Path(scratch) / f"{model_id}.onnx", Path(scratch) / f"{model_id}-calibration.npz"
            onnx.save(source, model)
            np.savez(calibration, **{entry.input_name: inputs(model_id, CALIBRATION_SAMPLES, "calibration")})
            held_out = inputs(model_id, EVAL_INPUTS[entry.task])
            reference = run_each(reference_runner(source.SerializeToString()), model_id, held_out)
            shape = f"{entry.input_name}={','.join(map(str, entry.shape))}"
            fp32_s = None
            for scheme in schemes:
                out = Path(scratch) / f"{model_id}-{scheme}"
                seconds, stderr, code = deploy(model, scheme, calibration, shape, args.device, out)
                fp32_s = fp32_s or seconds
                leaks = [line for line in stderr if line.strip() and not line.startswith(OWN_PREFIXES)]
                record = {"model": model_id, "scheme": scheme, "deploy_s": round(seconds, 1), "vs_fp32_deploy": round(seconds / fp32_s, 2), "exit_code": code,
                          "third_party_lines": len(leaks), "leak_sample": leaks[:3],
                          "own_lines": [line for line in stderr if line.startswith(OWN_PREFIXES)][:5]}  # fmt: skip
                if code == 0:
                    artifact = edgesdk.load_artifact(out)
                    record["verified"] = artifact.manifest.verification.passed
                    record["task"] = {k: round(v, 4) for k, v in score(model_id, run_each(artifact.run, model_id, held_out), reference, source).items()}
                    accuracy = artifact.manifest.quantization.accuracy
                    record["calibration_agreement"] = accuracy.short() if accuracy else None
                records.append(record)
                task = record.get("task", {})
                shown = ", ".join(f"{name} {task[name]:.4f}" for name in metric_names(model_id) if name in task)
                print(
                    f"{model_id:<16} {scheme:<6} deploy {seconds:7.1f} s ({seconds / fp32_s:4.2f}x fp32) exit {code} leaks {len(leaks):>3}  {shown}", flush=True
                )
                # written after every deploy: a long run that is stopped keeps what it measured
                write_result(
                    args.out,
                    {
                        "benchmark": "quant_real",
                        "device": args.device,
                        "calibration_samples": CALIBRATION_SAMPLES,
                        "eval_inputs": EVAL_INPUTS,
                        "records": records,
                    },
                )


if __name__ == "__main__":
    main()
