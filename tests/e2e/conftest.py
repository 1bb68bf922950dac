"""Helpers for end-to-end tests: models with their shapes, ELF headers, onnxruntime outputs."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import onnx

from edgesdk.testing.models import mlp, tiny_cnn, transformer_block

# name -> (builder, input shapes to bind)
MODELS = {
    "tiny_cnn": (tiny_cnn, {"image": [1, 3, 32, 32]}),
    "mlp": (mlp, {"features": [4, 64]}),
    "transformer_block": (transformer_block, {"tokens": [2, 16, 64]}),
}

EM_X86_64, EM_AARCH64, EM_ARM = 62, 183, 40


def elf_header(path: Path) -> tuple[int, int, int]:
    """(ELF class: 1 = 32-bit / 2 = 64-bit, e_type: 1 relocatable / 3 shared, e_machine)."""
    data = path.read_bytes()[:20]
    assert data[:4] == b"\x7fELF", f"{path} is not an ELF file"
    e_type, e_machine = struct.unpack("<HH", data[16:20])
    return data[4], e_type, e_machine


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
