"""Nodes TVM cannot lower, run by onnxruntime from inside the compiled model (on devices whose
backend allows it: the pc, where the artifact runs on the machine that has onnxruntime).

The import (edgesdk.compile.onnx_fallback) replaces such a node by a call of an external function,
``edgesdk.onnxruntime.<digest>``, and writes the node as a one-node ONNX model,
``<digest>.onnx``, into the ``onnxruntime/`` directory beside the weights, listed with the reason in
``segments.json``. Whatever runs the library registers those functions first (``register``): each
runs its model in an onnxruntime session on the tensors of the call and writes the output tensors
the compiled code allocated. The rest of the model stays TVM code.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, TypeAdapter

SEGMENTS_DIR = "onnxruntime"
SEGMENTS_FILE = "segments.json"
FUNCTION_PREFIX = "edgesdk.onnxruntime."


class Segment(BaseModel):
    """One node run by onnxruntime: the external function the compiled code calls, its model file
    (relative to the segments directory), the node and why onnxruntime runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: str
    file: str
    op: str
    node: str
    reason: str


class Unsupported(Exception):
    """A node TVM cannot lower, on a device that cannot run it elsewhere (raised in the worker)."""

    def __init__(self, op: str, reason: str):
        super().__init__(f"{op} ({reason})")
        self.op, self.reason = op, reason


_LISTING = TypeAdapter(list[Segment])


def segments_dir(weights: Path) -> Path:
    """Where the segments of the model whose weights are ``weights`` are written and read."""
    return Path(weights).parent / SEGMENTS_DIR


def read_segments(directory: Path) -> list[Segment]:
    """The segments listed in ``directory`` (a segments directory), none when it has no listing."""
    listing = Path(directory) / SEGMENTS_FILE
    return _LISTING.validate_json(listing.read_bytes()) if listing.exists() else []


def write_segments(directory: Path, segments: list[Segment]) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / SEGMENTS_FILE).write_bytes(_LISTING.dump_json(segments, indent=1))


def register(directory: Path) -> int:
    """Register the functions of the segments in ``directory`` with TVM (before a VM loads a
    library calling them); the number registered."""
    import tvm

    segments = read_segments(directory)
    for segment in segments:
        tvm.register_global_func(segment.function, _caller(str(Path(directory) / segment.file)), override=True)
    return len(segments)


@functools.cache
def _session(path: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # one node: threads cost more than they give
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _caller(path: str):
    """The function a compiled model calls: its inputs, then the outputs it allocated (TVM's
    destination-passing style)."""

    def call(*tensors) -> None:
        session = _session(path)
        names = [value.name for value in session.get_inputs()]
        feeds = {name: np.from_dlpack(tensor) for name, tensor in zip(names, tensors, strict=False)}
        results = session.run(None, feeds)
        for tensor, result in zip(tensors[len(names) :], results, strict=True):
            target = np.from_dlpack(tensor)
            if target.shape != np.shape(result):
                raise ValueError(
                    f"the onnxruntime node {Path(path).stem} gave shape {np.shape(result)} where the model was compiled for {target.shape}: "
                    "its output shape depends on the input values; deploy with --inputs of this kind"
                )
            target[...] = result

    return call
