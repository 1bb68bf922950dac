"""`edgesdk qat` end to end on the digits CNN: trained, written, deployed to the phone and the mcu,
verified, and run by the artifacts on the held-out digits; and its one-line errors."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgesdk
from edgesdk.frontend.reference import reference_runner

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def digits():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from digits import train_digits_cnn
    finally:
        sys.path.remove(str(EXAMPLES))
    return train_digits_cnn(epochs=10)


@pytest.fixture(scope="module")
def files(digits, tmp_path_factory):
    directory = tmp_path_factory.mktemp("qat")
    onnx.save(digits.model, directory / "digits.onnx")
    np.savez(directory / "train.npz", digits=digits.train[0], labels=digits.train[1])
    return directory


def top1(outputs, labels) -> float:
    return float(np.mean(np.stack(outputs).reshape(len(labels), -1).argmax(axis=1) == labels))


def onnxruntime_top1(model: Path, digits) -> float:
    run = reference_runner(model.read_bytes())
    images, labels = digits.heldout
    return top1([run({"digits": image[None]})["logits"] for image in images], labels)


def test_lr_qat_w4a8_deploys_to_the_phone_and_the_mcu_and_keeps_its_accuracy(tmp_path, digits, files):
    out = tmp_path / "digits.w4a8.onnx"
    report = edgesdk.qat(files / "digits.onnx", files / "train.npz", out, scheme="w4a8", labels="labels", epochs=2, lowrank=4)
    trained = report.training
    assert trained.method == "lr-qat" and trained.samples + trained.validation_samples == len(digits.train[1])
    assert report.losses[trained.best_epoch] == min(report.losses) == trained.loss_after <= trained.loss_before == report.losses[0]
    written = json.loads((tmp_path / "digits.w4a8.encodings.json").read_text())
    assert written["param_encodings"] and all(entry["bitwidth"] == 4 for entries in written["param_encodings"].values() for entry in entries)
    expected = onnxruntime_top1(out, digits)
    assert expected > 0.9
    images, labels = digits.heldout
    for device in ("phone", "mcu"):
        artifact = edgesdk.deploy(out, device, tmp_path / device)
        manifest = artifact.manifest
        assert manifest.verification.passed and manifest.model.trained == trained
        assert {layer.weight_dtype for layer in manifest.quantization.layers} == {"int4"}
        # The artifact computes what onnxruntime computes on the trained model: at most one of 540 digits apart.
        assert abs(top1([artifact.run({"digits": image[None]})["logits"] for image in images], labels) - expected) <= 1 / len(labels)


def test_full_qat_int8_from_the_command_line(tmp_path, run_cli, files):
    out = tmp_path / "int8.onnx"
    data = ["--data", str(files / "train.npz"), "--labels", "labels"]
    code, stdout, _ = run_cli("qat", str(files / "digits.onnx"), *data, "--epochs", "1", "-o", str(out), "--json")
    assert code == 0, stdout
    report = json.loads(stdout)
    assert report["training"]["method"] == "qat" and report["training"]["scheme"] == "int8" and report["training"]["epochs"] == 1
    assert report["training"]["trainable_parameters"] > 47_000  # every weight and bias, and the scales
    assert report["peak_memory_bytes"] > 0 and len(report["losses"]) == 2
    assert report["accuracy"]["outputs"][0]["top1_agreement"] >= 0.95
    ops = {node.op_type for node in onnx.load(out).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scheme", "vq"], "--scheme vq: qat trains int8, w4a8, w4a16"),
        (["--loss", "ce"], "--loss ce needs --labels KEY"),
        (["--labels", "classes"], "--labels classes: .*train.npz has no such array"),
        (["--lowrank", "0", "--labels", "labels"], "--lowrank 0"),
        (["--epochs", "0", "--labels", "labels"], "--epochs and --batch-size must be at least 1"),
        (["--group-size", "32", "--labels", "labels"], "--group-size is only used by group-wise schemes"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, run_cli, files, extra, message):
    code, _, stderr = run_cli("qat", str(files / "digits.onnx"), "--data", str(files / "train.npz"), "-o", str(tmp_path / "q.onnx"), *extra)
    assert code == 2 and "Traceback" not in stderr
    assert re.search(message, stderr.splitlines()[0])
    assert not (tmp_path / "q.onnx").exists()


def test_an_existing_output_is_never_overwritten(tmp_path, run_cli, files):
    (tmp_path / "q.onnx").write_text("mine")
    code, _, stderr = run_cli("qat", str(files / "digits.onnx"), "--data", str(files / "train.npz"), "--labels", "labels", "-o", str(tmp_path / "q.onnx"))
    assert code == 2 and "exists" in stderr and (tmp_path / "q.onnx").read_text() == "mine"


def test_without_torch_qat_names_the_extra(tmp_path, run_cli, files, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    code, _, stderr = run_cli("qat", str(files / "digits.onnx"), "--data", str(files / "train.npz"), "-o", str(tmp_path / "q.onnx"))
    assert code == 2 and "qat needs torch" in stderr and "pip install 'edgesdk[train]'" in stderr
