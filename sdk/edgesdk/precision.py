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
import warnings
from collections.abc import Mapping

import numpy as np
import onnx

from edgesdk.errors import UserInputError, our_step
from edgesdk.model import Model, load_model
from edgesdk.quantization.ptq import RANGE_METHODS

AVAILABLE = ("none", "fp16", "int8", "w8a16", "w4a16", "w4a8", "vq")
CALIBRATED = ("int8", "w4a8")  # schemes that need --calibration
WEIGHT_ONLY = {"w8a16": 8, "w4a16": 4}  # scheme -> weight bits
GROUPED = ("w8a16", "w4a16", "w4a8")  # schemes with --group-size
INTEGER_WEIGHTS = ("int8", "w4a8", "w8a16", "w4a16")  # schemes whose weights AdaRound can re-round
DEFAULT_GROUP = {"w4a16": 32, "w8a16": None, "w4a8": 32}  # None: one group per output channel
# Relative tolerance of float outputs (scaled like edgesdk.verify's). fp16 keeps 11 significant
# bits (~5e-4) and errors grow through a network's layers; int8 kernels may round a value one
# step apart from onnxruntime's, and a step can move an output by a few percent of its range.
# The weight-only schemes compute in float16 as fp16 does.
SCHEME_TOLERANCE = {"fp16": 2e-2, "int8": 5e-2, "w4a8": 5e-2, "w8a16": 2e-2, "w4a16": 2e-2, "vq": 2e-2}
STRAY_SHARE = 1e-3  # quantized outputs: elements that may exceed the tolerance (edgesdk.verify)
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


def checked_options(options: Mapping, caller: str) -> dict:
    """``options`` if every name is one of ``RECIPE_OPTIONS``, else a clear error."""
    unknown = sorted(set(options) - set(RECIPE_OPTIONS))
    if unknown:
        raise UserInputError(f"{caller}: unknown option(s) {', '.join(unknown)}", hint=f"quantization options are: {', '.join(RECIPE_OPTIONS)}")
    return dict(options)


def options_for(scheme: str, options: Mapping) -> dict:
    """Those of ``options`` that ``scheme`` uses (comparing several schemes with one set)."""
    return {name: value for name, value in options.items() if scheme in RECIPE_OPTIONS.get(name, ())}


@dataclasses.dataclass
class Precision:
    recipe: Recipe
    compiled: Model  # what TVM compiles
    reference: Model  # what onnxruntime runs for the numerics check: the artifact's model.onnx
    samples: list[dict[str, np.ndarray]]  # calibration inputs, if any
    original: Model  # the user's model as loaded, in its own precision

    @property
    def scheme(self) -> str:
        return self.recipe.scheme


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
        raise UserInputError(
            f"{chosen} needs calibration data", hint="give --calibration NPZ: a few hundred representative inputs, one array per model input"
        )
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
            "--bias-correction needs a quantized scheme and --calibration samples", hint=f"e.g. --quantize {'w4a16' if scheme in ('none', 'fp16') else scheme} --calibration NPZ"
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
    """Share of an output's elements that may exceed the tolerance (edgesdk.verify.STRAY_COSINE):
    any reduced precision, whose kernels may round a value apart from onnxruntime's."""
    return STRAY_SHARE if scheme != "none" else 0.0


def float_tolerance(scheme: str, reference: onnx.ModelProto) -> float | None:
    """Relative tolerance of float outputs against ``reference`` (None: edgesdk.verify's own):
    the scheme's, or float16's for a model that already computes in float16."""
    if scheme in SCHEME_TOLERANCE:
        return SCHEME_TOLERANCE[scheme]
    half = any(tensor.data_type == onnx.TensorProto.FLOAT16 for tensor in reference.graph.initializer)
    return SCHEME_TOLERANCE["fp16"] if half else None


def stored_bits(tensor: onnx.TensorProto) -> int:
    """Bits per element of an initializer as stored (int4: 4, two per byte)."""
    if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return 4
    return 8 * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def weight_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the model's initializers as stored (int4: two per byte)."""
    total = 0
    for tensor in proto.graph.initializer:
        bits = stored_bits(tensor)
        total += -(-int(np.prod(tensor.dims, dtype=np.int64)) * bits // 8)
    return total


def calibration_arrays(calibration: Calibration) -> Mapping[str, np.ndarray] | None:
    """The arrays of ``--calibration`` (an .npz path, read without pickle, or a mapping)."""
    from edgesdk.tensors import load_npz

    if calibration is None or isinstance(calibration, Mapping):
        return calibration
    return load_npz(calibration)


def calibration_origin(calibration: Calibration, flag: str = "--calibration") -> str:
    """What messages call sample data: its file, or the option it came through."""
    return flag if calibration is None or isinstance(calibration, Mapping) else str(calibration)


def warn_if_few(samples: list, scheme: str) -> None:
    """Few samples are a risk worth a word: int8 ranges fitted to them, accuracy measured on them."""
    if 0 < len(samples) < MIN_SAMPLES:
        risk = "activation ranges fitted to so few inputs clip or waste levels on others" if scheme in CALIBRATED else "the accuracy reported rests on so few inputs"
        logger.warning(f"only {len(samples)} calibration sample{'s' if len(samples) > 1 else ''} (fewer than {MIN_SAMPLES}): {risk}; give a few hundred representative inputs")


def prepare(source, input_shapes, chosen: Recipe, calibration: Calibration = None) -> Precision:
    """Load ``source`` (dynamic input shapes from ``input_shapes``, else from the calibration
    arrays) and apply ``chosen``: what deploy, profile and compare start from."""
    arrays = calibration_arrays(calibration)
    sample_shapes = {name: np.shape(array) for name, array in arrays.items()} if arrays else None
    return apply_scheme(load_model(source, input_shapes, sample_shapes), chosen, arrays, origin=calibration_origin(calibration))


def apply_scheme(model: Model, chosen: Recipe, calibration: Calibration = None, *, origin: str | None = None) -> Precision:
    """What to compile and what to check it against, for ``chosen``."""
    from edgesdk.quantization.opset import for_scheme
    from edgesdk.quantization.ptq import calibration_samples

    arrays = calibration_arrays(calibration)
    samples = calibration_samples(arrays, model.inputs, origin or calibration_origin(calibration)) if arrays is not None else []
    if chosen.scheme == "none":
        return Precision(chosen, model, model, samples, model)
    warn_if_few(samples, chosen.scheme)
    with our_step("quantize", model.where):
        if chosen.scheme == "fp16":
            return Precision(chosen, to_float16(model), model, samples, model)
        quantized = quantized_model(for_scheme(model, chosen.scheme, samples), chosen, samples)
    return Precision(chosen, quantized, quantized, samples, model)


def to_float16(model: Model) -> Model:
    from onnxconverter_common import float16

    # keep_io_types: fp32 in and out, cast once at each edge. Values out of fp16 range are
    # clamped by the converter, which warns per tensor and side (hundreds on a real model): counted
    # into one note instead; the numerics check shows their effect.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Its default clamp of large values is 1e4: float16's largest is given, so the note is true.
        proto = float16.convert_float_to_float16(onnx.ModelProto.FromString(model.serialized), keep_io_types=True, max_finite_val=float(np.finfo(np.float16).max))
    clamped = sum("truncated" in str(warning.message) for warning in caught)
    notes = [*model.notes, "weights and computation in float16 (inputs and outputs keep their types)"]
    if clamped:
        notes.append(f"weights beyond float16's range clamped to it in {clamped} places (tiny ones to +-1e-7, huge ones to +-65504)")
    return dataclasses.replace(model, proto=proto, notes=notes)


def quantized_model(model: Model, chosen: Recipe, samples, *, only=None, keep_float=()) -> Model:
    """The quantized ONNX model of ``chosen`` (QDQ, or blocked-dequantize weights), which both
    onnxruntime and the lowering run; ``only``/``keep_float`` name the conv/matmul nodes to
    quantize / to leave in float."""
    quantized = _quantized(model, chosen, samples, only=only, keep_float=keep_float)
    if chosen.adaround_seconds:
        from edgesdk.quantization.adaround import adaround

        proto, layers = adaround(quantized.proto, model.proto, samples, chosen.adaround_seconds)
        learned = [layer for layer in layers if layer.learned]
        gain = np.mean([1 - layer.error / layer.nearest_error for layer in learned]) if learned else 0.0
        note = f"AdaRound re-rounded {len(learned)} of {len(layers)} layers (their output error on the samples {100 * gain:.0f}% lower on average)"
        quantized = dataclasses.replace(quantized, proto=proto, notes=[*quantized.notes, note])
    if chosen.bias_correction:
        from edgesdk.quantization.bias_correction import SAMPLES, correct_biases

        proto, corrected = correct_biases(quantized.proto, model.proto, samples)
        notes = [*quantized.notes, f"biases of {len(corrected)} layers corrected on {min(len(samples), SAMPLES)} calibration samples"]
        quantized = dataclasses.replace(quantized, proto=proto, notes=notes)
    return quantized


def _quantized(model: Model, chosen: Recipe, samples, *, only, keep_float) -> Model:
    if chosen.scheme == "vq":
        from edgesdk.quantization.vector import quantize_vq

        return quantize_vq(model, chosen.vq_dim, chosen.vq_bits, only=only, keep_float=keep_float)
    if chosen.scheme in WEIGHT_ONLY:
        from edgesdk.quantization.weight_only import quantize_weight_only

        return quantize_weight_only(model, WEIGHT_ONLY[chosen.scheme], chosen.group_size, only=only, keep_float=keep_float)
    from edgesdk.quantization.ptq import quantize_int8

    quantized = quantize_int8(model, samples, chosen.range_method, only=only, keep_float=keep_float, equalize=chosen.equalize)
    equalized = ", cross-layer equalized" if chosen.equalize else ""
    what = "int8 (W8A8)"
    if chosen.scheme == "w4a8":
        from edgesdk.quantization.weight_only import with_int4_weights

        proto, count = with_int4_weights(quantized.proto, model.proto, chosen.group_size)
        quantized = dataclasses.replace(quantized, proto=proto)
        grouping = f"groups of {chosen.group_size}" if chosen.group_size else "per output channel"
        what = f"int4 weights ({count} layers, {grouping}) with int8 activations (W4A8)"
    quantized.notes = [*model.notes, f"{what} from {len(samples)} calibration samples, {chosen.range_method} ranges{equalized}"]
    return quantized
