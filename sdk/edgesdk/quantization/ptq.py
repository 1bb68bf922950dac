"""Post-training int8 quantization (W8A8) into a QDQ ONNX model.

Weights are quantized per output channel, symmetric; activations per tensor, with ranges
calibrated on the user's sample inputs (``--calibration NPZ``) by one of ``RANGE_METHODS``:

- ``minmax``: the smallest and largest value seen;
- ``percentile``: the 0.01st and 99.99th percentiles of the values seen (outliers clipped);
- ``mse``: per tensor, the clipping range (each side of the min/max range shrunk by one of
  ``MSE_CANDIDATES``) whose int8 quantization has the least mean squared error on the values seen.

Activations are quantized where they enter a convolution or matmul, the layers that become
integer kernels; every other op stays float. Quantizing the rest per tensor as well (onnxruntime's
default) is what broke real models: a Concat of box coordinates (0-256) with class scores (0-1)
left YOLOv8n's scores on one level (mAP@0.5 vs fp32 0.98 -> 0.20), and a decomposed LayerNorm's
variance through Add/Sqrt/Div took PP-OCRv4 rec from 90% to 10% of lines read as fp32 reads them.

onnxruntime's quantizer (``quantize_static``, QDQ format) writes the model; the ranges of the
``mse`` method are handed to it as per-tensor overrides. The QDQ model runs in onnxruntime as it
is, and edgesdk's lowering turns its QuantizeLinear/DequantizeLinear pairs around convolutions and
matmuls into integer kernels (edgesdk.compile.integer_ops).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgesdk.errors import UserInputError
from edgesdk.frontend.model import Model, TensorSpec, has_dynamic_dims
from edgesdk.frontend.reference import reference_runner
from edgesdk.frontend.tensors import as_dtype, check_inputs
from edgesdk.progress import stage

RANGE_METHODS = ("minmax", "percentile", "mse")
PERCENTILE = 99.99
MSE_CANDIDATES = np.geomspace(0.05, 1.0, 12)  # shares of each side of the min/max range tried by `mse`
MSE_SAMPLE = 100_000


def calibration_samples(arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], origin: str) -> list[dict[str, np.ndarray]]:
    """Split calibration arrays into per-run inputs. Each array holds N samples of its input:
    shape ``(N, *input_shape)``, or ``(N, *input_shape[1:])`` for an input of batch 1, or exactly
    the input's shape (one sample). Every input must have the same N."""
    arrays = {spec.name: as_dtype(np.asarray(arrays[spec.name]), spec, origin) for spec in specs if spec.name in arrays} | {
        name: array for name, array in arrays.items() if name not in {spec.name for spec in specs}
    }  # converted once, so a float64 file warns once
    counts: dict[str, int | None] = {}  # samples per input; None for an input given as one sample
    for spec in specs:
        array = np.asarray(arrays[spec.name]) if spec.name in arrays else None
        if array is None:
            continue
        if tuple(array.shape) == spec.shape:
            counts[spec.name] = None
        elif tuple(array.shape[1:]) == spec.shape or (spec.shape[:1] == (1,) and tuple(array.shape[1:]) == spec.shape[1:]):
            counts[spec.name] = array.shape[0]
        else:
            raise UserInputError(
                f"{origin}: input '{spec.name}' has shape {list(array.shape)}; calibration wants N samples of {list(spec.shape)}",
                hint=f"stack samples on a new first axis: ({', '.join(['N', *map(str, spec.shape)])})",
            )
    sizes = {n for n in counts.values() if n is not None}
    if len(sizes) > 1:
        raise UserInputError(f"{origin}: inputs hold different numbers of samples: {sorted(sizes)}")
    n = sizes.pop() if sizes else 1
    if n == 0:
        raise UserInputError(f"{origin}: no samples")
    samples = []
    for index in range(n):
        one = {}
        for spec in specs:
            array = np.asarray(arrays[spec.name]) if spec.name in arrays else None
            one[spec.name] = array if array is None or counts.get(spec.name) is None else array[index].reshape(spec.shape)
        samples.append(check_inputs({k: v for k, v in one.items() if v is not None}, specs, origin))
    return samples


def _mse_range(values: np.ndarray) -> tuple[float, float]:
    """The clipping range with the least int8 quantization error on ``values``: each side of the
    min/max range shrunk by one of MSE_CANDIDATES (on a subsample of at most MSE_SAMPLE values)."""
    values = np.asarray(values, np.float64).ravel()
    if values.size > MSE_SAMPLE:
        values = np.random.default_rng(0).choice(values, MSE_SAMPLE, replace=False)
    low, high = min(0.0, float(values.min())), max(0.0, float(values.max()))
    best, best_error = (low, high), np.inf
    for low_share in MSE_CANDIDATES:
        for high_share in MSE_CANDIDATES:
            lo, hi = low * low_share, high * high_share
            scale = (hi - lo) / 255 or 1.0
            zero = np.round(-128 - lo / scale)
            restored = (np.clip(np.round(values / scale) + zero, -128, 127) - zero) * scale
            error = float(np.mean((restored - values) ** 2))
            if error < best_error:
                best, best_error = (lo, hi), error
    return best


def intermediate_values(proto: onnx.ModelProto, names: Sequence[str], samples) -> dict[str, np.ndarray]:
    """The values of tensors ``names`` of ``proto`` (inputs, outputs or intermediates) on each of
    ``samples``, stacked on a new first axis: the reference runner with those tensors exposed as outputs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    existing = {o.name for o in copy.graph.output}
    copy.graph.output.extend(onnx.ValueInfoProto(name=name) for name in dict.fromkeys(names) if name not in existing)
    run = reference_runner(copy.SerializeToString())
    runs = [run(sample) for sample in samples]
    return {name: np.stack([np.asarray(values[name]) for values in runs]) for name in names}


def _activation_values(model: Model, samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every float32 intermediate tensor's values over the samples, flattened."""
    floats = {v.name for v in model.proto.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    names = [name for node in model.proto.graph.node for name in node.output if name in floats]
    names += [o.name for o in model.proto.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    names += [spec.name for spec in model.inputs if spec.dtype == "float32"]
    return {name: values.ravel() for name, values in intermediate_values(model.proto, list(dict.fromkeys(names)), samples).items()}


QUANTIZABLE = ("Conv", "MatMul", "Gemm")
# Activations the quantizer folds into the quantization of their input: onnxruntime removes a Relu
# or Clip after a quantized layer (asymmetric activations) and quantizes the layer's output over the
# activation's range, whose saturation is the clip. One rounding less, and an integer layer whose
# epilogue requantizes once instead of quantize -> dequantize -> clip -> quantize.
FOLDED_ACTIVATIONS = ("Relu", "Clip")


def named_nodes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose every node has a name (``<op>_<index>`` when it had none): quantizer options
    name nodes."""
    copy = onnx.ModelProto.FromString(proto.SerializeToString())
    for index, node in enumerate(copy.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
    return copy


def quantizable_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of the convolutions and matmuls, the layers int8 makes integer, in graph order."""
    return [node.name for node in named_nodes(proto).graph.node if node.op_type in QUANTIZABLE]


def _with_activations(proto: onnx.ModelProto, only) -> list[str]:
    """``only`` (node names) and the activations that directly follow them, which fold into them."""
    chosen = set(only)
    graph = named_nodes(proto).graph
    outputs = {output for node in graph.node if node.name in chosen for output in node.output}
    folded = [node.name for node in graph.node if node.op_type in FOLDED_ACTIVATIONS and node.input and node.input[0] in outputs]
    return [*only, *folded]


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantizer logs advice on the root logger: silence it for the call only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over our samples."""

    def __init__(self, samples: list[dict[str, np.ndarray]]):
        self._samples = iter(samples)
        self._count, self._done = len(samples), 0

    def get_next(self):
        self._done += 1
        if self._done <= self._count:
            stage(f"calibrating int8 ranges {self._done}/{self._count}")
        return next(self._samples, None)

    def rewind(self):  # pragma: no cover - called by some calibrators
        pass


def quantize_int8(
    model: Model,
    samples: list[dict[str, np.ndarray]],
    range_method: str = "minmax",
    *,
    only: Sequence[str] | None = None,
    keep_float: Sequence[str] = (),
    equalize: bool = False,
) -> Model:
    """The W8A8 QDQ model of ``model``, calibrated on ``samples``. ``only`` quantizes just these
    nodes (by name); ``keep_float`` leaves these nodes in float (mixed precision); ``equalize``
    applies cross-layer equalization first (edgesdk.quantization.equalize)."""
    if equalize:
        from edgesdk.quantization.equalize import equalize as equalize_layers

        model = dataclasses.replace(model, proto=equalize_layers(model.proto)[0])
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if range_method not in RANGE_METHODS:
        raise UserInputError(f"--range-method {range_method}: unknown", hint=f"methods: {', '.join(RANGE_METHODS)}")
    extra: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}  # onnxruntime's extra_options
    method = CalibrationMethod.MinMax
    if range_method == "percentile":
        method, extra["CalibPercentile"] = CalibrationMethod.Percentile, PERCENTILE
    elif range_method == "mse":
        overrides = {}
        for name, values in _activation_values(model, samples).items():
            low, high = _mse_range(values)
            overrides[name] = [{"rmin": np.float32(low), "rmax": np.float32(high)}]
        extra["TensorQuantOverrides"] = overrides
    with tempfile.TemporaryDirectory(prefix="edgesdk-ptq-") as scratch:
        source, target = Path(scratch) / "model.onnx", Path(scratch) / "qdq.onnx"
        source.write_bytes(named_nodes(model.proto).SerializeToString())
        try:
            with contextlib.redirect_stdout(io.StringIO()), _quiet_root_logger():  # progress and pre-processing advice
                quantize_static(
                    str(source),
                    str(target),
                    _Reader(samples),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=method,
                    extra_options=extra,
                    nodes_to_quantize=_with_activations(model.proto, only) if only is not None else None,
                    nodes_to_exclude=list(keep_float),
                    op_types_to_quantize=[*QUANTIZABLE, *FOLDED_ACTIVATIONS],
                )
        except Exception as exc:  # onnxruntime's quantizer raises many kinds; the user gets one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserInputError(f"{model.name}: onnxruntime's int8 quantizer failed: {first}") from exc
        proto = onnx.load(str(target))
    from edgesdk.frontend.model import load_model

    if has_dynamic_dims(model.proto):  # the user's graph, to export: stays as the quantizer wrote it
        return dataclasses.replace(model, proto=proto)
    quantized = load_model(proto, {spec.name: list(spec.shape) for spec in model.inputs})
    quantized.name, quantized.origin = model.name, model.origin
    return quantized
