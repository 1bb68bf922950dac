"""The precision a model is compiled at (``--quantize``).

- ``none`` keeps the model's own precision.
- ``fp16`` converts weights and computation to half precision with onnxconverter-common (the
  converter onnxruntime's own tools use); inputs and outputs keep their declared types, cast at
  the edges. Its numerics are checked against onnxruntime running the original model.
- ``int8`` (W8A8) quantizes on the user's sample inputs (``--calibration NPZ``) into a QDQ model
  (edgesdk.quantization.ptq); the lowering turns it into integer kernels.
- ``w4a8`` is int8 with its weights requantized to int4 in groups (``--group-size``): the
  kernels multiply int8 activations by unpacked int4 weights into int32 sums per group.
- ``w4a16`` and ``w8a16`` quantize only the weights, group-wise (``--group-size``), and compute
  with float16 activations (edgesdk.quantization.weight_only); the kernels read the packed
  integers. They need no calibration data.
- ``vq`` stores each conv/Gemm weight as indices into a per-layer k-means codebook of float16
  vectors (``--vq-dim`` weights per vector, ``--vq-bits`` per index; edgesdk.quantization.vector),
  float16 activations; the kernels look the codebook up in their reduction loop.

Quantized schemes compile, and are checked against onnxruntime running, one quantized ONNX model
(the artifact's ``model.onnx``). Given ``--calibration`` (any scheme but ``none``), a deploy records
the agreement of what it compiled with the float model on the samples as ``quantization.accuracy``.

``auto`` applies the device profile's recommended recipe (``quantization:`` in its YAML: scheme and
range method).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

import numpy as np
import onnx

from edgesdk.errors import UserInputError
from edgesdk.quantization.ptq import RANGE_METHODS

AVAILABLE = ("none", "fp16", "int8", "w8a16", "w4a16", "w4a8", "vq")
CALIBRATED = ("int8", "w4a8")  # schemes that need --calibration
WEIGHT_ONLY = {"w8a16": 8, "w4a16": 4}  # scheme -> weight bits
GROUPED = ("w8a16", "w4a16", "w4a8")  # schemes with --group-size
INTEGER_WEIGHTS = ("int8", "w4a8", "w8a16", "w4a16")  # schemes whose weights AdaRound can re-round
DEFAULT_GROUP = {"w4a16": 32, "w8a16": None, "w4a8": 32}  # None: one group per output channel
# Relative tolerance of float outputs (scaled like edgesdk.artifact.verification's). fp16 keeps 11 significant
# bits (~5e-4) and errors grow through a network's layers; int8 kernels may round a value one
# step apart from onnxruntime's, and a step can move an output by a few percent of its range.
# The weight-only schemes compute in float16 as fp16 does.
SCHEME_TOLERANCE = {"fp16": 2e-2, "int8": 5e-2, "w4a8": 5e-2, "w8a16": 2e-2, "w4a16": 2e-2, "vq": 2e-2}
STRAY_SHARE = 1e-3  # quantized outputs: elements that may exceed the tolerance (edgesdk.artifact.verification)
VQ_DEFAULTS = (2, 8)  # weights per vector, bits per index (a codebook of 2**bits vectors per layer)

Calibration = str | os.PathLike | Mapping[str, np.ndarray] | None
# percentile, not minmax: one outlier in the samples stretches a minmax range over every input
# (PP-OCRv4 rec int8: 90% of lines read as fp32 reads them with minmax ranges, 100% percentile).
DEFAULT_RANGE_METHOD = "percentile"
MIN_SAMPLES = 16  # fewer calibration samples than this get a warning

logger = logging.getLogger("edgesdk")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to quantize: a checked ``--quantize`` with its options."""

    scheme: str = "none"
    range_method: str | None = None  # calibrated schemes
    equalize: bool = False  # calibrated schemes
    group_size: int | None = None  # group-wise schemes; None: per output channel
    bias_correction: bool = False  # quantized schemes, with calibration samples
    vq_dim: int | None = None  # vq: weights per vector
    vq_bits: int | None = None  # vq: bits per index
    adaround_seconds: float | None = None  # integer-weight schemes, with calibration samples

    def options(self) -> dict:
        """The options (``recipe``'s keywords) that make this recipe again."""
        return {name: value for name in RECIPE_OPTIONS if (value := getattr(self, name)) is not None and value is not False}


# recipe()'s options, and the schemes each applies to (API functions take them as **options).
RECIPE_OPTIONS = {
    "range_method": CALIBRATED,
    "equalize": CALIBRATED,
    "group_size": GROUPED,
    "bias_correction": ("int8", "w4a8", "w8a16", "w4a16", "vq"),
    "vq_dim": ("vq",),
    "vq_bits": ("vq",),
    "adaround_seconds": INTEGER_WEIGHTS,
}


def options_for(scheme: str, options: Mapping) -> dict:
    """Those of ``options`` that ``scheme`` uses (comparing several schemes with one set)."""
    return {name: value for name, value in options.items() if scheme in RECIPE_OPTIONS.get(name, ())}


def recipe(
    quantize: str | None,
    calibration: Calibration,
    profile,
    *,
    range_method: str | None = None,
    equalize: bool = False,
    group_size: int | None = None,
    bias_correction: bool = False,
    vq_dim: int | None = None,
    vq_bits: int | None = None,
    adaround_seconds: float | None = None,
) -> Recipe:
    """The recipe ``--quantize`` and its options (``RECIPE_OPTIONS``) ask for on ``profile``
    (``auto``: the profile's recommended one; an explicit option wins over it), or a clear error."""
    auto_for = None
    if quantize == "auto":
        quantize, auto_for = profile.quantization.scheme, profile.id
        if quantize in CALIBRATED:
            range_method = range_method or profile.quantization.range_method
    scheme = "none" if quantize is None else str(quantize)
    chosen = f"--quantize auto ({auto_for}'s recipe: {scheme})" if auto_for else f"--quantize {scheme}"
    if scheme not in AVAILABLE:
        raise UserInputError(f"{chosen}: unknown scheme", hint=f"schemes: {', '.join(AVAILABLE)}, auto")
    if scheme in CALIBRATED and calibration is None:
        raise UserInputError(f"{chosen} needs calibration data", hint="give --calibration NPZ: a few hundred representative inputs, one array per model input")
    if scheme == "none" and calibration is not None:
        raise UserInputError("--calibration: nothing is quantized", hint="give --quantize, or drop --calibration")
    if range_method is not None and range_method not in RANGE_METHODS:
        raise UserInputError(f"--range-method {range_method}: unknown", hint=f"methods: {', '.join(RANGE_METHODS)}")
    if scheme not in CALIBRATED and range_method is not None:
        raise UserInputError(f"--range-method is only used by calibrated schemes ({', '.join(CALIBRATED)})", hint="drop --range-method")
    if scheme not in CALIBRATED and equalize:
        raise UserInputError(f"--equalize is only used by calibrated schemes ({', '.join(CALIBRATED)})", hint="drop --equalize")
    if scheme not in GROUPED and group_size is not None:
        raise UserInputError(f"--group-size is only used by group-wise schemes ({', '.join(GROUPED)})", hint="drop --group-size")
    if bias_correction and (scheme in ("none", "fp16") or calibration is None):
        raise UserInputError(
            "--bias-correction needs a quantized scheme and --calibration samples",
            hint=f"e.g. --quantize {'w4a16' if scheme in ('none', 'fp16') else scheme} --calibration NPZ",
        )
    if adaround_seconds is not None and (scheme not in INTEGER_WEIGHTS or calibration is None or adaround_seconds <= 0):
        raise UserInputError(
            f"--adaround needs a scheme with integer weights ({', '.join(INTEGER_WEIGHTS)}), --calibration samples and a positive time in seconds",
            hint="e.g. --quantize w4a16 --calibration NPZ --adaround 30",
        )
    if scheme != "vq" and (vq_dim is not None or vq_bits is not None):
        raise UserInputError("--vq-dim and --vq-bits are only used by --quantize vq", hint="drop them")
    if vq_dim is not None and not 1 <= vq_dim <= 16:
        raise UserInputError(f"--vq-dim {vq_dim}: weights per vector must be 1 to 16")
    if vq_bits is not None and vq_bits not in (4, 8):
        raise UserInputError(f"--vq-bits {vq_bits}: indices are 4 or 8 bits (codebooks of 16 or 256 vectors)")
    if group_size is not None and group_size <= 0:
        raise UserInputError(f"--group-size {group_size}: must be a positive number of weights")
    return Recipe(
        scheme,
        range_method=(range_method or DEFAULT_RANGE_METHOD) if scheme in CALIBRATED else None,
        equalize=bool(equalize),
        group_size=group_size if group_size is not None else DEFAULT_GROUP.get(scheme),
        bias_correction=bool(bias_correction),
        vq_dim=(vq_dim or VQ_DEFAULTS[0]) if scheme == "vq" else None,
        vq_bits=(vq_bits or VQ_DEFAULTS[1]) if scheme == "vq" else None,
        adaround_seconds=adaround_seconds,
    )


def stray_share(scheme: str) -> float:
    """Share of an output's elements that may exceed the tolerance (edgesdk.artifact.verification.STRAY_COSINE):
    any reduced precision, whose kernels may round a value apart from onnxruntime's."""
    return STRAY_SHARE if scheme != "none" else 0.0


def float_tolerance(scheme: str, reference: onnx.ModelProto) -> float | None:
    """Relative tolerance of float outputs against ``reference`` (None: edgesdk.artifact.verification's own):
    the scheme's, or float16's for a model that already computes in float16."""
    if scheme in SCHEME_TOLERANCE:
        return SCHEME_TOLERANCE[scheme]
    half = any(tensor.data_type == onnx.TensorProto.FLOAT16 for tensor in reference.graph.initializer)
    return SCHEME_TOLERANCE["fp16"] if half else None
