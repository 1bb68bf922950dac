"""Applying a recipe: the model to compile and the model to check it against (``prepare``), with
the calibration samples read once; the scheme's rewrite (``quantized_model``) and what it stores."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping

import numpy as np
import onnx

from edgesdk.errors import our_step
from edgesdk.frontend.model import Model, load_model
from edgesdk.frontend.tensors import load_npz
from edgesdk.quantization.adaround import adaround
from edgesdk.quantization.bias_correction import SAMPLES, correct_biases
from edgesdk.quantization.half import to_float16
from edgesdk.quantization.opset import for_scheme
from edgesdk.quantization.ptq import calibration_samples, quantize_int8
from edgesdk.quantization.recipe import CALIBRATED, MIN_SAMPLES, WEIGHT_ONLY, Calibration, Recipe
from edgesdk.quantization.vector import quantize_vq
from edgesdk.quantization.weight_only import quantize_weight_only, with_int4_weights

logger = logging.getLogger("edgesdk")


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


def stored_bits(tensor: onnx.TensorProto) -> int:
    """Bits per element of an initializer as stored (int4: 4, two per byte)."""
    if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return 4
    return 8 * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def stored_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of an initializer as stored (int4: two per byte)."""
    return -(-int(np.prod(tensor.dims, dtype=np.int64)) * stored_bits(tensor) // 8)


def weight_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the model's initializers as stored."""
    return sum(stored_bytes(tensor) for tensor in proto.graph.initializer)


def calibration_arrays(calibration: Calibration) -> Mapping[str, np.ndarray] | None:
    """The arrays of ``--calibration`` (an .npz path, read without pickle, or a mapping)."""
    if calibration is None or isinstance(calibration, Mapping):
        return calibration
    return load_npz(calibration)


def calibration_origin(calibration: Calibration, flag: str = "--calibration") -> str:
    """What messages call sample data: its file, or the option it came through."""
    return flag if calibration is None or isinstance(calibration, Mapping) else str(calibration)


def warn_if_few(samples: list, scheme: str) -> None:
    """Few samples are a risk worth a word: int8 ranges fitted to them, accuracy measured on them."""
    if 0 < len(samples) < MIN_SAMPLES:
        risk = (
            "activation ranges fitted to so few inputs clip or waste levels on others"
            if scheme in CALIBRATED
            else "the accuracy reported rests on so few inputs"
        )
        logger.warning(
            f"only {len(samples)} calibration sample{'s' if len(samples) > 1 else ''} (fewer than {MIN_SAMPLES}): {risk}; "
            "give a few hundred representative inputs"
        )


def prepare(
    source, input_shapes, chosen: Recipe, calibration: Calibration = None, transform: Callable[[Model], Model] | None = None, examples=None
) -> Precision:
    """Load ``source`` (dynamic input shapes from ``input_shapes``, else from ``examples``, else from
    the calibration arrays; inputs that set a shape fixed to their ``examples`` values),
    ``transform`` it (plugin passes), and apply ``chosen``: what every verb starts from."""
    arrays = calibration_arrays(calibration)
    sample_shapes = {name: np.shape(array) for name, array in arrays.items()} if arrays else None
    model = load_model(source, input_shapes, sample_shapes, examples)
    return apply_scheme(transform(model) if transform else model, chosen, arrays, origin=calibration_origin(calibration))


def apply_scheme(model: Model, chosen: Recipe, calibration: Calibration = None, *, origin: str | None = None) -> Precision:
    """What to compile and what to check it against, for ``chosen``."""
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


def quantized_model(model: Model, chosen: Recipe, samples, *, only=None, keep_float=()) -> Model:
    """The quantized ONNX model of ``chosen`` (QDQ, or blocked-dequantize weights), which both
    onnxruntime and the lowering run; ``only``/``keep_float`` name the conv/matmul nodes to
    quantize / to leave in float."""
    quantized = _quantized(model, chosen, samples, only=only, keep_float=keep_float)
    if chosen.adaround_seconds:
        proto, layers = adaround(quantized.proto, model.proto, samples, chosen.adaround_seconds)
        learned = [layer for layer in layers if layer.learned]
        gain = np.mean([1 - layer.error / layer.nearest_error for layer in learned]) if learned else 0.0
        note = f"AdaRound re-rounded {len(learned)} of {len(layers)} layers (their output error on the samples {100 * gain:.0f}% lower on average)"
        quantized = dataclasses.replace(quantized, proto=proto, notes=[*quantized.notes, note])
    if chosen.bias_correction:
        proto, corrected = correct_biases(quantized.proto, model.proto, samples)
        notes = [*quantized.notes, f"biases of {len(corrected)} layers corrected on {min(len(samples), SAMPLES)} calibration samples"]
        quantized = dataclasses.replace(quantized, proto=proto, notes=notes)
    return quantized


def _quantized(model: Model, chosen: Recipe, samples, *, only, keep_float) -> Model:
    if chosen.scheme == "vq":
        assert chosen.vq_dim is not None and chosen.vq_bits is not None  # recipe() sets both for vq
        return quantize_vq(model, chosen.vq_dim, chosen.vq_bits, only=only, keep_float=keep_float)
    if chosen.scheme in WEIGHT_ONLY:
        return quantize_weight_only(model, WEIGHT_ONLY[chosen.scheme], chosen.group_size, only=only, keep_float=keep_float)
    assert chosen.range_method is not None  # recipe() sets it for every calibrated scheme
    quantized = quantize_int8(model, samples, chosen.range_method, only=only, keep_float=keep_float, equalize=chosen.equalize)
    equalized = ", cross-layer equalized" if chosen.equalize else ""
    what = "int8 (W8A8)"
    if chosen.scheme == "w4a8":
        proto, count = with_int4_weights(quantized.proto, model.proto, chosen.group_size)
        quantized = dataclasses.replace(quantized, proto=proto)
        grouping = f"groups of {chosen.group_size}" if chosen.group_size else "per output channel"
        what = f"int4 weights ({count} layers, {grouping}) with int8 activations (W4A8)"
    quantized.notes = [*model.notes, f"{what} from {len(samples)} calibration samples, {chosen.range_method} ranges{equalized}"]
    return quantized
