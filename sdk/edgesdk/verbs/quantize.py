"""`edgesdk quantize`: a quantized ONNX model (int8 QDQ, or w8a16/w4a16 blocked-dequantize
weights) to deploy or to run in onnxruntime, with its encodings, per-layer sensitivity and mixed
precision under an accuracy budget.

Accuracy here is agreement with the float model on the calibration samples (no labels needed):
the *drop* of a quantized model, in points, is the share of samples whose top-1 class changes
(outputs that are one score vector per sample), else ``100 x (1 - cosine)`` of its worst output.

- ``--analyze``: every convolution and matmul is quantized alone and its drop measured: the
  layers that hurt most come first.
- ``--max-drop X``: start from the fully quantized model; while its drop exceeds X points, keep
  the most sensitive remaining layer in float (by the analysis) and quantize again.
- The output is an ONNX model (onnxruntime runs it; ``edgesdk deploy`` turns it into integer or
  packed-weight kernels) and ``<out>.encodings.json``: per tensor, AIMET-style ``bitwidth``,
  ``scale``, ``offset`` (``real = scale x (q + offset)``), ``is_symmetric``; weights per channel
  (int8) or per group of ``group_size`` weights along the reduction axis (w8a16/w4a16).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import BaseModel, ConfigDict, Field

from edgesdk.errors import UserInputError, our_step
from edgesdk.frontend.model import Model, with_dynamic_dims
from edgesdk.progress import Listener, counted, reporting, stage
from edgesdk.quantization.accuracy import Accuracy, measure_agreement
from edgesdk.quantization.opset import for_scheme
from edgesdk.quantization.ptq import quantizable_nodes
from edgesdk.quantization.recipe import WEIGHT_ONLY, Recipe, recipe
from edgesdk.quantization.schemes import Precision, quantized_model, stored_bits, warn_if_few
from edgesdk.verbs.pipeline import checked_options, load_precision

logger = logging.getLogger("edgesdk")


class LayerSensitivity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str
    drop_pt: float = Field(description="Drop (points) with only this layer quantized.")


class QuantizeReport(BaseModel):
    """What `edgesdk quantize --json` prints."""

    model_config = ConfigDict(extra="forbid")

    model: str
    scheme: str
    range_method: str | None
    group_size: int | None
    output: str
    encodings: str
    samples: int
    drop_pt: float | None = Field(description="Drop of the written model, in points (None: no --calibration samples to measure it on).")
    accuracy: Accuracy | None
    float_layers: list[str] = Field(default_factory=list, description="Layers kept in float to meet --max-drop.")
    sensitivity: list[LayerSensitivity] = Field(default_factory=list, description="--analyze: per layer, most sensitive first.")
    max_drop_met: bool | None = None


def drop(accuracy: Accuracy) -> float:
    """Points lost against the float model (see the module docstring)."""
    worst = 0.0
    for output in accuracy.outputs:
        lost = 100 * (1 - output.top1_agreement) if output.top1_agreement is not None else 100 * (1 - output.cosine)
        worst = max(worst, lost)
    return worst


def _measure(quantized: Model, model: Model, samples) -> tuple[float, Accuracy]:
    accuracy = measure_agreement(quantized.serialized, model.serialized, samples)
    return drop(accuracy), accuracy


def sensitivity(model: Model, samples, chosen: Recipe) -> list[LayerSensitivity]:
    # Each layer alone, rounded to nearest: AdaRound and bias correction would multiply the time.
    plain = dataclasses.replace(chosen, adaround_seconds=None, bias_correction=False)
    layers = []
    for node in counted(quantizable_nodes(model.proto), "sensitivity"):
        quantized = quantized_model(model, plain, samples, only=[node])
        if chosen.scheme in (*WEIGHT_ONLY, "vq") and not encodings(quantized.proto)["param_encodings"]:
            continue  # a weight the model computes (attention's K^T): these schemes leave the layer as it is
        layers.append(LayerSensitivity(node=node, drop_pt=_measure(quantized, model, samples)[0]))
    return sorted(layers, key=lambda layer: -layer.drop_pt)


def encodings(qdq: onnx.ModelProto) -> dict:
    """AIMET-style encodings of a quantized model: activations per tensor, weights per channel
    or per group (in the order of the scale tensor's elements)."""
    values = {init.name: numpy_helper.to_array(init) for init in qdq.graph.initializer}
    bits_of = {init.name: stored_bits(init) for init in qdq.graph.initializer}
    activations, params = {}, {}
    for node in qdq.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 2:
            continue
        scale = values.get(node.input[1])
        zero = values.get(node.input[2]) if len(node.input) > 2 else np.zeros((), np.int8)
        if scale is None or zero is None:
            continue
        bits = bits_of.get(node.input[0]) if node.op_type == "DequantizeLinear" and node.input[0] in values else 8 * zero.dtype.itemsize
        entries = [
            {"bitwidth": bits, "dtype": "int", "scale": float(s), "offset": -int(z), "is_symmetric": str(bool(np.all(zero == 0)))}
            for s, z in zip(np.ravel(scale), np.ravel(np.broadcast_to(zero, np.shape(scale))), strict=False)
        ]
        if node.op_type == "QuantizeLinear":
            activations[node.input[0]] = entries
        elif node.input[0] in values and values[node.input[0]].ndim > 1:  # a quantized weight
            params[node.input[0].removesuffix("_quantized")] = entries
    for node in qdq.graph.node:  # vq: Gather(codebook, Cast(indices)), one entry per layer (no AIMET form)
        if node.op_type == "Gather" and node.input[0].endswith("_codebook") and node.input[0] in values:
            codebook, indices = values[node.input[0]], node.input[0].removesuffix("_codebook") + "_indices"
            params[node.input[0].removesuffix("_codebook")] = [
                {"bitwidth": bits_of.get(indices, 8), "dtype": "vq", "vector_dim": int(codebook.shape[1]), "codebook_size": int(codebook.shape[0])}
            ]
    return {"version": "1.0.0", "activation_encodings": activations, "param_encodings": params}


def encodings_path(out: Path) -> Path:
    return out.with_name(out.stem + ".encodings.json")


def check_output(out: Path) -> None:
    if out.suffix != ".onnx":
        raise UserInputError(f"-o {out}: the output is an ONNX model", hint="name it *.onnx")
    for path in (out, encodings_path(out)):
        if path.exists():
            raise UserInputError(f"{path}: the file exists; edgesdk does not overwrite it", hint="choose another -o or remove it")


def write_quantized(proto: onnx.ModelProto, out: Path) -> dict:
    """Write ``proto`` to ``out`` and its encodings beside it (the model last, renamed into place, so
    a failure leaves no model); returns the encodings."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial")
    staging.write_bytes(proto.SerializeToString())
    written = encodings(proto)
    encodings_path(out).write_text(json.dumps(written, indent=1) + "\n")
    staging.rename(out)
    return written


def quantize_model(model: Model, samples, out: Path, chosen: Recipe, *, analyze: bool = False, max_drop: float | None = None) -> QuantizeReport:
    """Quantize ``model`` as ``chosen`` says (measured on ``samples``), write it to ``out`` and its
    encodings beside it; optionally analyse sensitivity and keep layers in float to meet ``max_drop``."""
    quantized = quantized_model(model, chosen, samples)
    current, accuracy = _measure(quantized, model, samples) if samples else (None, None)
    layers = sensitivity(model, samples, chosen) if analyze or max_drop is not None else []
    kept: list[str] = []
    if max_drop is not None:
        for layer in layers:
            if current is not None and current <= max_drop:
                break
            stage(f"drop {current:.2f} pt, over {max_drop:g}: keeping {layer.node} in float")
            kept.append(layer.node)
            quantized = quantized_model(model, chosen, samples, keep_float=kept)
            current, accuracy = _measure(quantized, model, samples)
    if not write_quantized(quantized.proto, out)["param_encodings"]:
        logger.warning(f"{model.name}: no conv/matmul weight could be quantized ({chosen.scheme}): the model is written with its weights in float")
    return QuantizeReport(
        model=model.name,
        scheme=chosen.scheme,
        range_method=chosen.range_method,
        group_size=chosen.group_size,
        output=str(out),
        encodings=str(encodings_path(out)),
        samples=len(samples),
        drop_pt=None if current is None else round(current, 4),
        accuracy=accuracy,
        float_layers=kept,
        sensitivity=layers if analyze else [],
        max_drop_met=None if max_drop is None or current is None else current <= max_drop,
    )


def quantize(
    source,
    calibration,
    out,
    *,
    scheme: str = "int8",
    input_shapes=None,
    analyze: bool = False,
    max_drop: float | None = None,
    on_stage: Listener | None = None,
    **quantize_options,
) -> QuantizeReport:
    """The Python face of `edgesdk quantize`: ``source`` a model path or proto, ``calibration`` an
    .npz path or a dict of stacked samples (edgesdk.quantization.ptq.calibration_samples; None for
    the weight-only schemes, which then report no accuracy); ``quantize_options`` as
    edgesdk.quantization.recipe.recipe takes them. Dynamic input shapes come from ``input_shapes`` or the
    calibration arrays; the written model keeps the input model's dynamic dims. ``on_stage``: told
    each stage (edgesdk.progress)."""
    if scheme not in ("int8", "w4a8", "vq", *WEIGHT_ONLY):
        raise UserInputError(f"--scheme {scheme}: edgesdk quantize writes int8, w4a8, vq, {', '.join(WEIGHT_ONLY)} models", hint="use --scheme int8")
    recipe_options, _ = checked_options(quantize_options, "quantize")
    chosen = recipe(scheme, calibration, None, **recipe_options)
    if (analyze or max_drop is not None) and calibration is None:
        raise UserInputError("--analyze and --max-drop measure the drop on --calibration samples", hint="give --calibration NPZ")
    check_output(Path(out))
    with reporting(on_stage):
        loaded, model = users_graph(source, input_shapes, calibration, scheme)
        with our_step("quantize", loaded.original.where):
            return quantize_model(model, loaded.samples, Path(out), chosen, analyze=analyze, max_drop=max_drop)


def users_graph(source, input_shapes, calibration, scheme: str) -> tuple[Precision, Model]:
    """The model loaded and checked like a deploy's (static shapes for the samples), and the user's
    own graph at ``scheme``'s opset: what is quantized, so its dynamic dims survive."""
    stage("load")
    loaded = load_precision(source, input_shapes, Recipe(), calibration)
    warn_if_few(loaded.samples, scheme)
    with our_step("quantize", loaded.original.where):
        return loaded, for_scheme(with_dynamic_dims(loaded.original, source), scheme, loaded.samples)
