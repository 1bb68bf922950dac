"""``--quantize fp16``: weights and computation in float16 with onnxconverter-common (the converter
onnxruntime's own tools use); inputs and outputs keep their declared types, cast at the edges."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import onnx

from edgesdk.frontend.model import Model


def to_float16(model: Model) -> Model:
    from onnxconverter_common import float16

    # keep_io_types: fp32 in and out, cast once at each edge. Values out of fp16 range are
    # clamped by the converter, which warns per tensor and side (hundreds on a real model): counted
    # into one note instead; the numerics check shows their effect.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Its default clamp of large values is 1e4: float16's largest is given, so the note is true.
        proto = float16.convert_float_to_float16(
            onnx.ModelProto.FromString(model.serialized), keep_io_types=True, max_finite_val=float(np.finfo(np.float16).max)
        )
    _casts_as_declared(proto)
    clamped = sum("truncated" in str(warning.message) for warning in caught)
    notes = [*model.notes, "weights and computation in float16 (inputs and outputs keep their types)"]
    if clamped:
        notes.append(f"weights beyond float16's range clamped to it in {clamped} places (tiny ones to +-1e-7, huge ones to +-65504)")
    return dataclasses.replace(model, proto=proto, notes=notes)


def _casts_as_declared(proto: onnx.ModelProto) -> None:
    """The converter declares a Cast's output float16 but leaves the node casting to float32 when
    the Cast feeds an op it keeps in float32 (YOLOv8n's Cast -> Range): onnxruntime then refuses
    the model. Such Casts are made to produce what is declared (the converter's own cast to
    float32 follows them)."""
    declared = {value.name: value.type.tensor_type.elem_type for value in proto.graph.value_info}
    for node in proto.graph.node:
        to = next((a for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to is not None and to.i == onnx.TensorProto.FLOAT and declared.get(node.output[0]) == onnx.TensorProto.FLOAT16:
            to.i = onnx.TensorProto.FLOAT16
