"""A small character-level transformer language model, trained here, exported to ONNX: edgesdk's
model for quantization-aware training of a language model.

The text is Python's own documentation of its language (``pydoc_data.topics``, part of every
CPython install: about 460 kB of English prose and code as ASCII), so nothing is downloaded. The last
10% of the text is held out: never trained on, calibrated on or fine-tuned on. Training is seeded
and takes about a minute on two cores (torch).

    python examples/char_lm.py OUT_DIR   # writes char_lm.onnx, train.npz, heldout.npz

``train.npz`` and ``heldout.npz`` hold windows of ``CONTEXT`` characters (``tokens``, int64, one
window per sample of the model's ``[1, CONTEXT]`` input) and the character that follows each
position (``next``): `edgesdk qat char_lm.onnx --data train.npz --labels next`.
"""

from __future__ import annotations

import argparse
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

INPUT = "tokens"
LABELS = "next"
CONTEXT = 64
HELD_OUT = 0.1


def corpus() -> str:
    """Python's language documentation as plain ASCII text (other characters dropped)."""
    from pydoc_data.topics import topics

    text = "\n".join(topics[key] for key in sorted(topics))
    return "".join(c for c in text if c == "\n" or 32 <= ord(c) < 127)


def encode(text: str) -> np.ndarray:
    """Characters as token ids: newline 0, printable ASCII 1..95."""
    codes = np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int64)
    return np.where(codes == 10, 0, codes - 31)


VOCABULARY = 96


def windows(tokens: np.ndarray, count: int, seed: int) -> dict[str, np.ndarray]:
    """``count`` random windows of the token stream: inputs ``(count, 1, CONTEXT)`` and their next tokens ``(count, CONTEXT)``."""
    starts = np.random.default_rng(seed).integers(0, len(tokens) - CONTEXT - 1, count)
    index = starts[:, None] + np.arange(CONTEXT)
    return {INPUT: tokens[index][:, None], LABELS: tokens[index + 1]}


@dataclass
class CharLM:
    model: onnx.ModelProto
    train: np.ndarray  # the training token stream
    heldout: np.ndarray


def _network(torch, width: int, layers: int, heads: int):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
            mask = torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1)
            self.register_buffer("mask", mask)

        def forward(self, x):
            batch, length, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).split(width, dim=-1)
            shape = (batch, length, heads, width // heads)
            q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
            attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads) + self.mask[:length, :length], dim=-1)
            x = x + self.proj((attention @ v).transpose(1, 2).reshape(batch, length, width))
            return x + self.down(torch.nn.functional.gelu(self.up(self.norm2(x))))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCABULARY, width)
            self.position = nn.Parameter(torch.zeros(CONTEXT, width))
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, VOCABULARY)

        def forward(self, tokens):
            return self.head(self.norm(self.blocks(self.embed(tokens) + self.position)))

    return Model()


def train_char_lm(seed: int = 0, steps: int = 2000, width: int = 96, layers: int = 2, heads: int = 4) -> CharLM:
    import torch

    torch.manual_seed(seed)
    tokens = encode(corpus())
    split = int(len(tokens) * (1 - HELD_OUT))
    train, heldout = tokens[:split], tokens[split:]
    model = _network(torch, width, layers, heads)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = windows(train, 32, int(rng.integers(2**31)))
        logits = model(torch.from_numpy(batch[INPUT][:, 0]))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCABULARY), torch.from_numpy(batch[LABELS]).reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter: the torch.export one needs onnxscript
        warnings.simplefilter("ignore")
        example = torch.zeros(1, CONTEXT, dtype=torch.int64)
        torch.onnx.export(model, (example,), buffer, input_names=[INPUT], output_names=["logits"], opset_version=17, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.graph.name = "char_lm"
    return CharLM(proto, train, heldout)


def perplexity(logits: np.ndarray, labels: np.ndarray) -> float:
    """exp of the mean cross-entropy of ``logits`` (..., VOCABULARY) against the next tokens."""
    flat = np.asarray(logits, np.float64).reshape(-1, VOCABULARY)
    flat = flat - flat.max(axis=1, keepdims=True)
    log_probabilities = flat - np.log(np.exp(flat).sum(axis=1, keepdims=True))
    return float(np.exp(-np.mean(log_probabilities[np.arange(len(flat)), np.asarray(labels).reshape(-1)])))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train the character-level LM and write it with its data.")
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--samples", type=int, default=2048, help="training windows to write (train.npz)")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    lm = train_char_lm()
    onnx.save(lm.model, out / "char_lm.onnx")
    np.savez(out / "train.npz", **windows(lm.train, parser.parse_args().samples, 1))
    np.savez(out / "heldout.npz", **windows(lm.heldout, 512, 2))
    print(f"wrote {out}/char_lm.onnx, train.npz, heldout.npz")
