"""The precision a model is compiled at (``--quantize``).

- ``none`` keeps the model's own precision.
- ``fp16`` converts weights and computation to half precision with onnxconverter-common (the
  converter onnxruntime's own tools use); inputs and outputs keep their declared types, cast at
  the edges. Its numerics are checked against onnxruntime running the original model.
- ``int8`` (W8A8) quantizes on the user's sample inputs (``--calibration NPZ``) into a QDQ model
  (edgesdk.quantization.ptq); the lowering turns it into integer kernels. Its numerics are checked
  against onnxruntime running that QDQ model, which is also the artifact's ``model.onnx``; a
  deploy records its agreement with the float model on the samples as ``quantization.accuracy``.

``auto`` applies the device profile's recommended recipe (``quantization:`` in its YAML: scheme and
range method). The other schemes of the roadmap (w8a16, w4a16, w4a8, vq) are refused with a clear
error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np
import onnx

from edgesdk.errors import UserInputError
from edgesdk.model import Model

AVAILABLE = ("none", "fp16", "int8")
PLANNED = ("w8a16", "w4a16", "w4a8", "vq")
CALIBRATED = ("int8",)  # schemes that need --calibration
# Relative tolerance of float outputs (scaled like edgesdk.verify's). fp16 keeps 11 significant
# bits (~5e-4) and errors grow through a network's layers; int8 kernels may round a value one
# step apart from onnxruntime's, and a step can move an output by a few percent of its range.
SCHEME_TOLERANCE = {"fp16": 2e-2, "int8": 5e-2}

Calibration = str | os.PathLike | Mapping[str, np.ndarray] | None


@dataclasses.dataclass
class Precision:
    scheme: str
    compiled: Model  # what TVM compiles
    reference: Model  # what onnxruntime runs for the numerics check: the artifact's model.onnx
    samples: list[dict[str, np.ndarray]]  # calibration inputs, if any
    range_method: str | None = None


def resolve(quantize: str | None, range_method: str | None, profile) -> tuple[str | None, str]:
    """``--quantize`` and ``--range-method`` with ``auto`` replaced by ``profile``'s recipe."""
    if quantize == "auto":
        recipe = profile.quantization
        return recipe.scheme, range_method or recipe.range_method
    return quantize, range_method or "minmax"


def check_scheme(quantize: str | None, calibration: Calibration, equalize: bool = False, *, auto_for: str | None = None) -> str:
    """The scheme, or a clear error. ``auto_for``: the device whose recipe chose ``quantize``."""
    scheme = "none" if quantize is None else str(quantize)
    chosen = f"--quantize auto ({auto_for}'s recipe: {scheme})" if auto_for else f"--quantize {scheme}"
    if scheme in PLANNED:
        raise UserInputError(
            f"{chosen}: this scheme is not available in this edgesdk version yet",
            hint=f"use --quantize {', '.join(AVAILABLE)}",
        )
    if scheme not in AVAILABLE:
        raise UserInputError(f"{chosen}: unknown scheme", hint=f"schemes: {', '.join(AVAILABLE + PLANNED)}, auto")
    if scheme in CALIBRATED and calibration is None:
        raise UserInputError(
            f"{chosen} needs calibration data", hint="give --calibration NPZ: a few hundred representative inputs, one array per model input"
        )
    if scheme not in CALIBRATED and calibration is not None:
        raise UserInputError(f"--calibration is only used by calibrated schemes ({', '.join(CALIBRATED)})", hint="drop --calibration")
    if scheme not in CALIBRATED and equalize:
        raise UserInputError(f"--equalize is only used by calibrated schemes ({', '.join(CALIBRATED)})", hint="drop --equalize")
    return scheme


def weight_bytes(proto: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize for t in proto.graph.initializer)


def apply_scheme(model: Model, scheme: str, calibration: Calibration = None, range_method: str = "minmax", equalize: bool = False) -> Precision:
    """What to compile and what to check it against, for ``scheme``."""
    if scheme == "none":
        return Precision(scheme, model, model, [])
    if scheme == "fp16":
        from onnxconverter_common import float16

        # keep_io_types: fp32 in and out, cast once at each edge. Values out of fp16 range are
        # clamped by the converter; the numerics check shows their effect.
        proto = float16.convert_float_to_float16(onnx.ModelProto.FromString(model.serialized), keep_io_types=True)
        notes = [*model.notes, "weights and computation in float16 (inputs and outputs keep their types)"]
        return Precision(scheme, dataclasses.replace(model, proto=proto, notes=notes), model, [])
    from edgesdk.quantization.ptq import load_calibration, quantize_int8

    samples = load_calibration(calibration, model.inputs)
    quantized = quantize_int8(model, samples, range_method, equalize=equalize)
    equalized = ", cross-layer equalized" if equalize else ""
    quantized.notes = [*model.notes, f"int8 (W8A8) from {len(samples)} calibration samples, {range_method} ranges{equalized}"]
    return Precision(scheme, quantized, quantized, samples, range_method)
