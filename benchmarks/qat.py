"""Quantization-aware training against post-training quantization: float vs PTQ vs QAT vs LR-QAT.

    .venv/bin/python benchmarks/qat.py [--epochs N] [--lr X] [--out benchmarks/results/qat.json]

Two models trained here, seeded: the digits CNN (examples/digits.py; top-1 on its 540 held-out
digits; QAT with cross-entropy on the 1,257 training images and their labels) and a character-level
transformer language model (examples/char_lm.py, 2 blocks of width 96, 252k weights, on Python's
own documentation; perplexity on 512 held-out windows of 64 characters from text it never saw; QAT
by distillation from the float model on 4,096 training windows, no labels). At int8, w4a8 and
w4a16: the PTQ model (`edgesdk.quantize`, calibrated on the same first 256 samples `qat` uses),
full QAT and LR-QAT (`edgesdk.qat`, the same epochs, learning rate and seed for every run), each
scored by onnxruntime on the model written. Recorded per run: the metric, trainable parameters,
peak training memory (torch's memory profiler over one training step) and time. The digits
models trained at w4a8 are then deployed to the phone and the mcu, verified, and run by the
artifact on the held-out digits. Nothing is asserted; `recovered` is the share of PTQ's loss
against float that training won back.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import char_lm  # noqa: E402
import digits as digits_example  # noqa: E402
from _common import write_result  # noqa: E402

import edgesdk  # noqa: E402
from edgesdk.frontend.reference import reference_runner  # noqa: E402

SCHEMES = ["int8", "w4a8", "w4a16"]
LM_WINDOWS = 4096


def digits_task():
    trained = digits_example.train_digits_cnn()
    images, labels = trained.heldout

    def score(model) -> float:
        run = reference_runner(model if isinstance(model, bytes) else Path(model).read_bytes())
        return 100 * digits_example.top1(np.stack([run({digits_example.INPUT: image[None]})["logits"] for image in images]), labels)

    data = {digits_example.INPUT: trained.train[0], "labels": trained.train[1]}
    return trained.model, data, {"labels": "labels", "loss": "ce", "lowrank": 4}, score, "top-1 %", True


def lm_task():
    trained = char_lm.train_char_lm()
    heldout = char_lm.windows(trained.heldout, 512, 2)

    def score(model) -> float:
        run = reference_runner(model if isinstance(model, bytes) else Path(model).read_bytes())
        logits = np.stack([run({char_lm.INPUT: window})["logits"] for window in heldout[char_lm.INPUT]])
        return char_lm.perplexity(logits, heldout[char_lm.LABELS])

    data = {char_lm.INPUT: char_lm.windows(trained.train, LM_WINDOWS, 1)[char_lm.INPUT]}
    return trained.model, data, {"loss": "distill", "lowrank": 8}, score, "perplexity", False


def recovered(float_metric: float, ptq: float, trained: float, higher_is_better: bool) -> float | None:
    lost = (float_metric - ptq) if higher_is_better else (ptq - float_metric)
    won = (trained - ptq) if higher_is_better else (ptq - trained)
    return None if lost <= 0 else round(won / lost, 4)


def deployed_digits(model_path: Path, scratch: Path, name: str) -> list[dict]:
    trained = digits_example.train_digits_cnn()
    images, labels = trained.heldout
    rows = []
    for device in ("phone", "mcu"):
        artifact = edgesdk.deploy(model_path, device, scratch / f"{name}-{device}")
        logits = np.stack([artifact.run({digits_example.INPUT: image[None]})["logits"] for image in images])
        rows.append(
            {
                "model": name,
                "device": device,
                "verified": artifact.manifest.verification.passed,
                "trained": artifact.manifest.model.trained.method if artifact.manifest.model.trained else None,
                "artifact_top1": round(100 * digits_example.top1(logits, labels), 4),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "qat.json")
    args = parser.parse_args()
    records, deploys = [], []
    with tempfile.TemporaryDirectory(prefix="edgesdk-qat-") as scratch_dir:
        scratch = Path(scratch_dir)
        for task_name, task in (("digits_cnn", digits_task), ("char_lm", lm_task)):
            model, data, options, score, metric, higher_is_better = task()
            float_metric = score(model.SerializeToString())
            calibration = {name: array[:256] for name, array in data.items() if name != options.get("labels")}
            for scheme in SCHEMES:
                ptq_path = scratch / f"{task_name}-{scheme}-ptq.onnx"
                edgesdk.quantize(model, calibration, ptq_path, scheme=scheme)
                ptq = score(ptq_path)
                row = {"model": task_name, "metric": metric, "scheme": scheme, "float": round(float_metric, 4), "ptq": round(ptq, 4)}
                for method, rank in (("qat", None), ("lr_qat", options["lowrank"])):
                    path = scratch / f"{task_name}-{scheme}-{method}.onnx"
                    started = time.perf_counter()
                    report = edgesdk.qat(
                        model, data, path, scheme=scheme, labels=options.get("labels"), loss=options["loss"], epochs=args.epochs, lr=args.lr,
                        lowrank=rank, seed=0,
                    )  # fmt: skip
                    trained = score(path)
                    row[method] = {
                        "metric": round(trained, 4),
                        "recovered": recovered(float_metric, ptq, trained, higher_is_better),
                        "trainable_parameters": report.training.trainable_parameters,
                        "peak_memory_bytes": report.peak_memory_bytes,
                        "seconds": round(time.perf_counter() - started, 1),
                        "best_epoch": report.training.best_epoch,
                        "validation_losses": [round(value, 5) for value in report.losses],
                    }
                    if task_name == "digits_cnn" and scheme == "w4a8":
                        deploys += deployed_digits(path, scratch, f"{task_name}-{scheme}-{method}")
                full, low = row["qat"], row["lr_qat"]
                row["lr_qat_vs_qat"] = {
                    "metric_difference": round(low["metric"] - full["metric"], 4),
                    "relative": round(low["metric"] / full["metric"] - 1, 5),
                    "trainable_share": round(low["trainable_parameters"] / full["trainable_parameters"], 4),
                    "peak_memory_share": round(low["peak_memory_bytes"] / full["peak_memory_bytes"], 4),
                }
                records.append(row)
                print(row, flush=True)
    for row in deploys:
        print(row)
    write_result(args.out, {"epochs": args.epochs, "lr": args.lr, "seed": 0, "runs": records, "deploys": deploys})


if __name__ == "__main__":
    main()
