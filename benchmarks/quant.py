"""What each precision scheme costs and gains: accuracy, weight bytes, simulated latency and energy.

    .venv/bin/python benchmarks/quant.py [--repeat N] [--out benchmarks/results/quant.json]

The model is the digits CNN (examples/digits.py: trained here, seeded, ~5 s). Per scheme (none,
fp16, int8 with each range method, w8a16, w4a16 with group sizes 32/64/128, w4a8, vq): top-1 on the 540 held-out digits, run by the pc artifact
itself; weight bytes against fp32; the simulated latency and energy on every built-in device; and
on pc the measured latency of the artifact beside onnxruntime running the artifact's model.onnx
(the original model for none and fp16, the quantized model otherwise), in the same run. Ratios > 1 mean
slower than onnxruntime.
Nothing is asserted. benchmarks/quant_real.py does the same for real pretrained models
(PP-OCR det/rec/cls, YOLOv8n): deploy time per scheme against fp32, and task metrics.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import median_ms, write_result  # noqa: E402
from digits import INPUT, top1, train_digits_cnn  # noqa: E402

import edgesdk  # noqa: E402
from edgesdk.frontend.reference import reference_runner  # noqa: E402
from edgesdk.quantization.recipe import CALIBRATED  # noqa: E402

DEVICES = ["phone", "pc", "xr-headset", "automotive", "iot", "mcu"]
# (name, deploy options); calibrated schemes also get the calibration samples
SCHEMES = [
    ("none", {}), ("fp16", {}), ("int8/minmax", {"range_method": "minmax"}), ("int8/percentile", {"range_method": "percentile"}),
    ("int8/mse", {"range_method": "mse"}), ("w8a16", {}), ("w4a16/32", {"group_size": 32}), ("w4a16/64", {"group_size": 64}),
    ("w4a16/128", {"group_size": 128}), ("w4a8/32", {"range_method": "minmax", "group_size": 32}),
    ("vq/2x8", {"vq_dim": 2, "vq_bits": 8}), ("vq/4x8", {"vq_dim": 4, "vq_bits": 8}), ("vq/1x4", {"vq_dim": 1, "vq_bits": 4}),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quant.json")
    args = parser.parse_args()
    digits = train_digits_cnn()
    images, labels = digits.heldout
    one = {INPUT: images[:1]}
    records = []
    with tempfile.TemporaryDirectory(prefix="edgesdk-quant-") as scratch:
        for name, extra in SCHEMES:
            scheme = name.split("/")[0]
            options = {"quantize": scheme, **extra} | ({"calibration": digits.calibration()} if scheme in CALIBRATED else {})
            pc = edgesdk.deploy(digits.model, "pc", Path(scratch) / name.replace("/", "-"), **options)
            logits = np.stack([pc.run({INPUT: image[None]})["logits"] for image in images])
            reference = reference_runner((pc.path / "model.onnx").read_bytes())
            call = pc.runner.invoker(one)
            quantization = pc.manifest.quantization
            simulated = {}
            for device in DEVICES:
                estimate = edgesdk.profile(digits.model, device, **options).estimate
                simulated[device] = {"latency_ms": round(estimate.latency_ms, 5), "energy_mj": round(estimate.energy_mj, 7)}
            artifact_ms, ort_ms = median_ms(call, args.repeat), median_ms(functools.partial(reference, one), args.repeat)
            records.append(
                {
                    "scheme": name,
                    "top1": round(top1(logits, labels), 4),
                    "weight_bytes": quantization.weight_bytes,
                    "weight_ratio": round(quantization.weight_bytes / quantization.float_weight_bytes, 3),
                    "integer_layers": sum(layer.compute_dtype.startswith(("int", "uint")) for layer in quantization.layers),
                    "integer_weight_layers": sum(layer.weight_dtype.startswith(("int", "uint")) for layer in quantization.layers),
                    "layers": len(quantization.layers),
                    "simulated": simulated,
                    "pc_measured_ms": round(artifact_ms, 4),
                    "onnxruntime_ms": round(ort_ms, 4),
                    "ratio_vs_onnxruntime": round(artifact_ms / ort_ms, 2),
                }
            )
    base = records[0]["top1"]
    print(f"digits CNN, {len(labels)} held-out images; simulated ms on phone / mcu; pc measured vs onnxruntime")
    print(f"{'scheme':<17} {'top1':>6} {'drop pt':>7} {'weights':>8} {'int layers':>10} {'phone ms':>9} {'mcu ms':>8} {'pc ms':>7} {'ort ms':>7} {'ratio':>6}")
    for r in records:
        print(
            f"{r['scheme']:<17} {r['top1']:>6.4f} {100 * (base - r['top1']):>7.2f} {r['weight_ratio']:>7.3f}x {r['integer_layers']:>4}/{r['layers']:<5}"
            f" {r['simulated']['phone']['latency_ms']:>9.4f} {r['simulated']['mcu']['latency_ms']:>8.3f}"
            f" {r['pc_measured_ms']:>7.4f} {r['onnxruntime_ms']:>7.4f} {r['ratio_vs_onnxruntime']:>6.2f}"
        )
    write_result(args.out, {"benchmark": "quant", "model": "digits_cnn", "heldout_images": len(labels), "repeat": args.repeat, "schemes": records})


if __name__ == "__main__":
    main()
