"""A small CNN trained on real handwritten digits, exported to ONNX: edgesdk's quantization model.

scikit-learn ships the UCI handwritten digits (1,797 8x8 images, 10 classes) inside its package,
so nothing is downloaded. Training is seeded and takes a few seconds on a CPU (torch, a test and
docs dependency only). The held-out split is never used for training or calibration.

    python examples/digits.py OUT_DIR     # writes digits_cnn.onnx, calibration.npz, heldout.npz
"""

from __future__ import annotations

import argparse
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

INPUT = "digits"
HELD_OUT = 0.3
CALIBRATION_SAMPLES = 200


@dataclass
class Digits:
    model: onnx.ModelProto
    train: tuple[np.ndarray, np.ndarray]  # images (N, 1, 8, 8) float32 in [0, 1], labels (N,)
    heldout: tuple[np.ndarray, np.ndarray]

    def calibration(self, n: int = CALIBRATION_SAMPLES) -> dict[str, np.ndarray]:
        """Sample inputs for --calibration: the first ``n`` training images (never held-out ones)."""
        return {INPUT: self.train[0][:n]}


def _data(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    return train_test_split(images, digits.target.astype(np.int64), test_size=HELD_OUT, random_state=seed, stratify=digits.target)


def train_digits_cnn(seed: int = 0, epochs: int = 30) -> Digits:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    x_train, x_test, y_train, y_test = _data(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter: the torch.export one needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (images[:1],), buffer, input_names=[INPUT], output_names=["logits"], opset_version=17, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.graph.name = "digits_cnn"
    return Digits(proto, (x_train, y_train), (x_test, y_test))


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(logits).reshape(len(labels), -1).argmax(axis=1) == labels))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train the digits CNN and write it with its data.")
    parser.add_argument("out", type=Path, help="output directory")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    digits = train_digits_cnn()
    onnx.save(digits.model, out / "digits_cnn.onnx")
    np.savez(out / "calibration.npz", **digits.calibration())
    np.savez(out / "heldout.npz", **{INPUT: digits.heldout[0], "labels": digits.heldout[1]})
    print(f"wrote {out}/digits_cnn.onnx, calibration.npz ({CALIBRATION_SAMPLES} training images), heldout.npz ({len(digits.heldout[1])} images)")
