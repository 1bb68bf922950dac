"""The precision a model is compiled at (``--quantize``).

``none`` keeps the model's own precision. ``fp16`` converts weights and computation to half
precision with onnxconverter-common (the Microsoft converter onnxruntime's own tools use); the
model's inputs and outputs keep their declared types, cast at the edges, so callers feed and read
the same arrays as before. The integer schemes (int8, w8a16, w4a16, w4a8, vq) arrive with the
quantization toolkit (issue 6) and are refused with a clear error until then.

Numerics of a reduced-precision deploy are checked against onnxruntime running the original
model, with a tolerance that fits the precision (``SCHEME_TOLERANCE``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from edgesdk.errors import UserInputError
from edgesdk.model import Model

AVAILABLE = ("none", "fp16")
PLANNED = ("int8", "w8a16", "w4a16", "w4a8", "vq", "auto")
# Relative tolerance of float outputs against the original model (scaled like edgesdk.verify's):
# fp16 keeps 11 significant bits (~5e-4), and errors grow through a network's layers.
SCHEME_TOLERANCE = {"fp16": 2e-2}


def check_scheme(quantize: str | None, calibration: object) -> str:
    scheme = "none" if quantize is None else str(quantize)
    if scheme in PLANNED:
        raise UserInputError(
            f"--quantize {scheme}: integer quantization is not available in this edgesdk version yet",
            hint=f"use --quantize {' or '.join(AVAILABLE)}",
        )
    if scheme not in AVAILABLE:
        raise UserInputError(f"--quantize {scheme}: unknown scheme", hint=f"schemes: {', '.join(AVAILABLE + PLANNED)}")
    if calibration is not None:
        raise UserInputError("--calibration is only used by integer schemes", hint="drop --calibration")
    return scheme


def weight_bytes(proto: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize for t in proto.graph.initializer)


def apply_scheme(model: Model, scheme: str) -> Model:
    """The model to compile for ``scheme`` (``model`` itself for ``none``)."""
    if scheme == "none":
        return model
    from onnxconverter_common import float16

    # keep_io_types: fp32 in and out, cast once at each edge. The converter can warn about values
    # out of fp16 range (it clamps them); those show up in the numerics check.
    proto = float16.convert_float_to_float16(onnx.ModelProto.FromString(model.serialized), keep_io_types=True)
    return dataclasses.replace(model, proto=proto, notes=[*model.notes, "weights and computation in float16 (inputs and outputs keep their types)"])
