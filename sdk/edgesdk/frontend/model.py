"""Loading a user's ONNX model into the static, checked form the compiler needs.

`load_model` reads and checks the model, binds every dynamic input dimension (from the model
itself or from ``input_shapes``), lets onnxruntime's basic optimizer fold constants so that shape
subgraphs (Shape -> Gather/Concat -> Reshape) become initializers, and runs strict shape inference.
TVM then sees a graph with static shapes only. onnxruntime's basic level rewrites only into
standard ONNX ops, and it is what onnxruntime itself applies at session creation, so the
reference numerics are unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import heapq
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from edgesdk.errors import UserInputError
from edgesdk.frontend.io_quantization import IoQuantization, io_quantization
from edgesdk.frontend.shape_folding import fold_shapes

# onnx.checker refuses protobufs over 2 GB; larger models keep weights as external data.
MAX_MODEL_BYTES = 2 * 2**30
MIN_OPSET = 7
MAX_TENSOR_BYTES = 4 * 2**30  # one tensor; no edge device holds more, and the host simulates it
STANDARD_DOMAINS = {"", "ai.onnx"}
PREVIEW_DOMAIN = "ai.onnx.preview"  # the standard's operators on trial: the compiler expands them into standard ones
# ONNX-ML (classical ML: trees, encoders): TVM lowers none of it; where onnxruntime may run nodes (the pc) it runs them.
ML_DOMAIN = "ai.onnx.ml"


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: its name, static shape and numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    # An integer input or output the model (de)quantizes: real = scale * (q - zero_point).
    scale: float | None = None
    zero_point: int | None = None

    def to_json(self) -> dict:
        quantized = {"scale": self.scale, "zero_point": self.zero_point} if self.scale is not None else {}
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, **quantized}


@dataclass
class Model:
    """A checked ONNX model with static shapes, ready to import into TVM."""

    name: str
    proto: onnx.ModelProto
    source_sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    notes: list[str] = field(default_factory=list)
    origin: str = ""  # where the user's model came from (a file path), for messages
    bound_inputs: dict[str, np.ndarray] = field(default_factory=dict)  # inputs that set a shape, fixed to these values

    @property
    def where(self) -> str:
        return self.origin or self.name

    @cached_property
    def serialized(self) -> bytes:
        return self.proto.SerializeToString(deterministic=True)

    @cached_property
    def sha256(self) -> str:
        """Hash of the prepared model, the one that is compiled (the cache key uses it)."""
        return hashlib.sha256(self.serialized).hexdigest()


def _dtype_name(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    """Dims of a graph input/output: ints where known, the symbol (or '?') where not."""
    dims: list[int | str] = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value >= 0:  # exporters write -1 for a dynamic dim
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or "?")
    return dims


def _read(source: str | Path | onnx.ModelProto) -> tuple[str, onnx.ModelProto, str]:
    if isinstance(source, onnx.ModelProto):
        data = source.SerializeToString()
        name = source.graph.name or "model"
        return name, source, hashlib.sha256(data).hexdigest()
    path = Path(source)
    if path.is_dir():
        raise UserInputError(f"{path}: a directory, not an ONNX model file", hint="`edgesdk run` and `edgesdk verify` take artifact directories")
    if not path.is_file():
        raise UserInputError(f"{path}: no such model file")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise UserInputError(
            f"{path}: {size / 2**30:.1f} GiB is over the 2 GiB protobuf limit",
            hint="save the weights as ONNX external data (onnx.save(..., save_as_external_data=True))",
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        proto = onnx.load(str(path))
    except onnx.checker.ValidationError as exc:  # raised while reading external data
        raise UserInputError(f"{path}: its external data cannot be read: {str(exc).strip().splitlines()[0]}") from exc
    except OSError as exc:
        raise UserInputError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise UserInputError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from exc
    if not proto.graph.node:
        raise UserInputError(f"{path}: not an ONNX model (no graph nodes)")
    return path.stem, proto, digest


def _check(name: str, proto: onnx.ModelProto, full: bool) -> None:
    try:
        onnx.checker.check_model(proto, full_check=full)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"{name}: invalid ONNX model: {first_line}") from exc
    except UnicodeDecodeError as exc:  # the checker's message quotes a name that is not UTF-8
        raise UserInputError(f"{name}: invalid ONNX model: a name or string in it is not UTF-8 text (byte {exc.start} of one)") from exc


def _opset(name: str, proto: onnx.ModelProto) -> int:
    versions = {entry.domain or "": entry.version for entry in proto.opset_import}
    if "" not in versions and "ai.onnx" not in versions and versions.keys() & {PREVIEW_DOMAIN, ML_DOMAIN}:
        # Preview or ONNX-ML operators only: preview bodies are written in the newest standard opset.
        proto.opset_import.append(onnx.helper.make_opsetid("", onnx.defs.onnx_opset_version()))
        versions[""] = onnx.defs.onnx_opset_version()
    if "" not in versions and "ai.onnx" not in versions:
        raise UserInputError(f"{name}: the model imports no standard ONNX opset")
    opset = versions[""] if "" in versions else versions["ai.onnx"]
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise UserInputError(f"{name}: opset {opset} is outside the supported range {MIN_OPSET}-{newest}")
    foreign = sorted({f"{node.domain}.{node.op_type}" for node in proto.graph.node if node.domain not in {*STANDARD_DOMAINS, PREVIEW_DOMAIN, ML_DOMAIN}})
    if foreign:
        raise UserInputError(
            f"{name}: uses operators outside the standard ONNX domain: {', '.join(foreign[:5])}",
            hint="export the model with standard ONNX operators only",
        )
    return opset


def _upgraded(name: str, proto: onnx.ModelProto, opset: int) -> str | None:
    """Bring a model older than ``MIN_OPSET`` (which TVM's frontend reads) to it in place, with
    onnx's version converter; the note saying so."""
    if opset >= MIN_OPSET:
        return None
    try:
        converted = onnx.version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        raise UserInputError(
            f"{name}: opset {opset} is outside the supported range {MIN_OPSET}-{onnx.defs.onnx_opset_version()}, "
            f"and onnx's version converter cannot bring it there: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}"
        ) from None
    proto.CopyFrom(converted)
    return f"converted from opset {opset} to {MIN_OPSET} (onnx's version converter)"


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    # Old exporters list initializers among the inputs; those are weights, not inputs.
    initializers = {tensor.name for tensor in proto.graph.initializer}
    return [value for value in proto.graph.input if value.name not in initializers]


ANONYMOUS_DIMS = {"", "?"}

# Input slots whose value sets a shape, an axis or a count (or a Pad's fill value): compiled ahead
# of time, a model input there must have its value known (onnxruntime's folding then makes the
# shapes static).
_REDUCTIONS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")
SHAPE_SLOTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3), "Resize": (1, 2, 3), "Upsample": (1,),
    "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "TopK": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2), "OneHot": (1,),
    "CumSum": (1,), "CumProd": (1,), "Trilu": (1,), "CenterCropPad": (1,), "Col2Im": (1, 2), "AffineGrid": (1,), "MaxUnpool": (2,),
    "NonMaxSuppression": (2, 3, 4), "DFT": (1, 2), "STFT": (1, 3), "BlackmanWindow": (0,), "HannWindow": (0,), "HammingWindow": (0,),
    "MelWeightMatrix": (0, 1, 2), **dict.fromkeys(_REDUCTIONS, (1,)),
}  # fmt: skip


# Inputs whose values an operator never reads, only their shape or type: a value computed into a
# shape slot does not come from them.
_EVERY = tuple(range(8))
TYPE_ONLY: dict[str, tuple[int, ...]] = {
    "Shape": _EVERY,
    "Size": _EVERY,
    "CastLike": (1,),
    "EyeLike": _EVERY,
    "RandomNormalLike": _EVERY,
    "RandomUniformLike": _EVERY,
}


def shape_values(proto: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """The values that reach a shape slot (``SHAPE_SLOTS``): read there, or computed into what is
    read there (a crop size minus a Shape, halved, as a Slice's start). A Shape or Size reads only
    its input's shape (``TYPE_ONLY``), so the computation stops there. Each value comes with the
    first node whose shape slot it reaches."""
    producers = {name: node for node in proto.graph.node for name in node.output if name}
    found: dict[str, onnx.NodeProto] = {}
    for node in proto.graph.node:
        for slot in SHAPE_SLOTS.get(node.op_type, ()) if node.domain in STANDARD_DOMAINS else ():
            pending, seen = [node.input[slot]] if slot < len(node.input) else [], set()
            while pending:
                name = pending.pop()
                if not name or name in seen:
                    continue
                seen.add(name)
                found.setdefault(name, node)
                producer = producers.get(name)
                if producer is not None:
                    pending.extend(name for slot, name in enumerate(producer.input) if slot not in TYPE_ONLY.get(producer.op_type, ()))
    return found


def shape_inputs(proto: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """The model inputs among ``shape_values``, each with the first node whose shape slot it reaches."""
    inputs = {value.name for value in _graph_inputs(proto)}
    return {name: node for name, node in shape_values(proto).items() if name in inputs}


def _bind_values(name: str, proto: onnx.ModelProto, examples: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inputs that set a shape made initializers of their ``examples`` values; those values."""
    bound = {}
    declared = {value.name: value for value in _graph_inputs(proto)}
    for input_name, node in shape_inputs(proto).items():
        if input_name not in examples:
            raise UserInputError(
                f"{name}: input '{input_name}' sets a shape ({node.op_type} '{node.name or node.output[0]}'): its value must be known to compile",
                hint="give its value with --inputs FILE.npz: the artifact is then built for that value",
            )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(declared[input_name].type.tensor_type.elem_type)
        value = np.asarray(examples[input_name])
        if value.dtype != dtype and not np.can_cast(value, dtype, casting="same_kind"):
            raise UserInputError(f"{name}: input '{input_name}' is {np.dtype(dtype).name}, the given value is {value.dtype}")
        value = value.astype(dtype)
        bound[input_name] = value
        proto.graph.input.remove(declared[input_name])
        proto.graph.initializer.append(onnx.numpy_helper.from_array(value, input_name))
    return bound


def shape_from_samples(dims: Sequence[int | str], stacked: Sequence[int]) -> list[int]:
    """An input's shape from the shape of its calibration array (edgesdk.quantization.ptq):
    samples stacked on a new first axis ``(N, *shape)``, or along a dynamic batch axis."""
    if len(stacked) == len(dims) + 1:
        return [int(d) for d in stacked[1:]]
    if len(stacked) == len(dims) and isinstance(dims[0], str):
        return [1, *(int(d) for d in stacked[1:])]
    return [int(d) for d in stacked]


def _bind_shapes(name: str, proto: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]], sample_shapes: Mapping[str, Sequence[int]]) -> None:
    inputs = {value.name: value for value in _graph_inputs(proto)}
    unknown = sorted(set(input_shapes) - set(inputs))
    if unknown:
        raise UserInputError(
            f"{name}: --input-shape names no input of the model: {', '.join(unknown)}",
            hint=f"inputs are: {', '.join(inputs)}",
        )
    symbols: dict[str, tuple[int, str]] = {}
    # Inputs with a shape given first: the named dims they bind size the other inputs' too.
    for input_name, value in sorted(inputs.items(), key=lambda item: item[0] not in input_shapes):
        dims = _dims(value)
        given, source = input_shapes.get(input_name), f"--input-shape {input_name}"
        if given is None and all(isinstance(dim, int) or dim in symbols for dim in dims):
            given = [dim if isinstance(dim, int) else symbols[dim][0] for dim in dims]
            source = f"the named dims of '{input_name}'"
        if given is None and input_name in sample_shapes and any(isinstance(d, str) for d in dims):
            given = shape_from_samples(dims, sample_shapes[input_name])
            source = f"the calibration samples of '{input_name}' {list(sample_shapes[input_name])}: shape"
        if given is None:
            dynamic = [d for d in dims if isinstance(d, str)]
            if dynamic:
                example = ",".join("1" if isinstance(d, str) else str(d) for d in dims)
                raise UserInputError(
                    f"{name}: input '{input_name}' has dynamic dimensions {dims}",
                    hint=f"give its shape, e.g. --input-shape {input_name}={example} (or calibration samples, which define it)",
                )
            continue
        given = [int(d) for d in given]
        # A zero is legal (an empty batch, an empty set to reduce); a negative size is not.
        if len(given) != len(dims) or any(d < 0 for d in given):
            raise UserInputError(f"{name}: {source}: expected {len(dims)} dims of size >= 0 for {dims}, got {given}")
        clash = [(have, want) for have, want in zip(dims, given, strict=False) if isinstance(have, int) and have != want]
        if clash:
            raise UserInputError(f"{name}: {source} {given} contradicts the model's fixed dims {dims}")
        for dim, size in zip(value.type.tensor_type.shape.dim, given, strict=False):
            symbol = dim.dim_param if not dim.HasField("dim_value") else ""
            if symbol not in ANONYMOUS_DIMS:
                # A named dim is one size everywhere it appears, across inputs too.
                bound, where = symbols.setdefault(symbol, (size, input_name))
                if bound != size:
                    raise UserInputError(f"{name}: dim '{symbol}' is {bound} in '{where}' but {size} in '{input_name}'")
            dim.Clear()
            dim.dim_value = size
    _fix_dims(proto.graph, {symbol: size for symbol, (size, _) in symbols.items()})


def _fix_dims(graph: onnx.GraphProto, sizes: Mapping[str, int]) -> None:
    """Every ``dim_param`` named in ``sizes`` made that size, in ``graph`` and its subgraphs.
    (onnxruntime.tools has this too, but importing it imports torch when installed: ~1.5 s.)"""
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else ():
            if dim.HasField("dim_param") and dim.dim_param in sizes:
                size = sizes[dim.dim_param]
                dim.Clear()
                dim.dim_value = size
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                _fix_dims(subgraph, sizes)


def _fold_constants(name: str, proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's basic optimizer: constant folding (shape subgraphs included), standard ops only."""
    import onnxruntime as ort

    # Its warnings (unused initializers, ...) are advice to model authors, not to our users:
    # quiet for every session this process makes.
    ort.set_default_logger_severity(3)
    with tempfile.TemporaryDirectory(prefix="edgesdk-fold-") as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(scratch) / "folded.onnx")
        options.log_severity_level = 3
        try:
            ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            message = " ".join(str(exc).split())[:300]
            raise UserInputError(f"{name}: onnxruntime cannot load the model: {message}") from exc
        folded = onnx.load(options.optimized_model_filepath)
    # onnxruntime wraps float16 ops its CPU has no kernels for in casts to float32: that would
    # change what the model computes, so such a model is left unfolded (TVM folds constants too).
    if any(node.name.startswith("InsertedPrecisionFreeCast") for node in folded.graph.node):
        return proto
    return _in_source_order(folded, proto)


def topological_order(nodes: Sequence[onnx.NodeProto], priority: Callable[[int], int]) -> list[int] | None:
    """Indices of ``nodes`` in an order where every node follows the producers of its inputs,
    taking among the nodes ready to run the one of lowest ``priority(index)``; None when there is
    no such order (a cycle, as read)."""
    producer = {output: index for index, node in enumerate(nodes) for output in node.output}
    waiting = [len({producer[name] for name in node.input if name in producer}) for node in nodes]
    readers: dict[int, set[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            if name in producer:
                readers.setdefault(producer[name], set()).add(index)
    ready = [(priority(index), index) for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, index = heapq.heappop(ready)
        order.append(index)
        for reader in readers.get(index, ()):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, (priority(reader), reader))
    return order if len(order) == len(nodes) else None


def _in_source_order(folded: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """``folded`` with its nodes back in the order the source file lists them (onnxruntime writes
    its own topological order): the order the user wrote is the baseline edgesdk's operator
    ordering is measured against. A node keeps the position of the source node that computed its
    first output; nodes onnxruntime made go where their inputs allow."""
    nodes = list(folded.graph.node)
    if any(attribute.HasField("g") or attribute.graphs for node in nodes for attribute in node.attribute):
        return folded  # subgraphs read outer names their node does not list: keep onnxruntime's order
    position = {output: index for index, node in enumerate(source.graph.node) for output in node.output}
    order = topological_order(nodes, lambda index: position.get(nodes[index].output[0], -1) if nodes[index].output else -1)
    if order is None:  # not a DAG as read: leave onnxruntime's order
        return folded
    del folded.graph.node[:]
    folded.graph.node.extend(nodes[index] for index in order)
    return folded


def _measure_outputs(proto: onnx.ModelProto, examples: Mapping[str, np.ndarray]) -> list[str]:
    """Fix the output dims shape inference cannot know (a Unique's, a NonZero's: they depend on the
    values) to what onnxruntime computes on ``examples``, the inputs the deploy verifies on; a note
    for each. Compiled for those shapes, the code fails at run time on inputs that give others."""
    dynamic = [value for value in proto.graph.output if any(isinstance(dim, str) for dim in _dims(value))]
    if not dynamic or not examples or any(value.name not in examples for value in _graph_inputs(proto)):
        return []
    from edgesdk.frontend.reference import reference_outputs

    try:
        measured = reference_outputs(proto.SerializeToString(), {value.name: examples[value.name] for value in _graph_inputs(proto)})
    except Exception:  # noqa: BLE001 - onnxruntime refuses these inputs: the dims stay dynamic, and that is the error
        return []
    notes = []
    for value in dynamic:
        shape = list(np.shape(measured[value.name]))
        for dim, size in zip(value.type.tensor_type.shape.dim, shape, strict=True):
            dim.dim_value = size
        notes.append(f"output '{value.name}' has a shape that depends on the input values: compiled for {shape}, as the deploy's inputs give it")
    return notes


def _static_specs(name: str, values: Sequence[onnx.ValueInfoProto], what: str, quantized: Mapping[str, IoQuantization]) -> list[TensorSpec]:
    specs = []
    for value in values:
        dims = _dims(value)
        if any(isinstance(d, str) for d in dims):
            raise UserInputError(
                f"{name}: {what} '{value.name}' still has dynamic dimensions {dims} after binding the inputs",
                hint="its shape depends on the input values: give the inputs to deploy on (--inputs) and edgesdk compiles for the shape they give",
            )
        quantization = quantized.get(value.name)
        scale, zero_point = (quantization.scale, quantization.zero_point) if quantization else (None, None)
        dtype = _dtype_name(value.type.tensor_type.elem_type)
        if np.dtype(dtype).kind in "OSU":
            raise UserInputError(f"{name}: {what} '{value.name}' holds strings: edgesdk compiles numeric tensors only")
        specs.append(TensorSpec(value.name, tuple(int(d) for d in dims), dtype, scale, zero_point))
    return specs


def _check_sizes(name: str, proto: onnx.ModelProto) -> None:
    """Refuse a tensor no device (nor this host, which simulates it) could hold: a shape gone wrong."""
    for value in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        if not value.type.HasField("tensor_type"):
            continue
        dims = _dims(value)
        static = [dim for dim in dims if isinstance(dim, int)]
        if len(static) != len(dims):
            continue
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).itemsize
        size = math.prod(static) * itemsize
        if size > MAX_TENSOR_BYTES:
            amount = f"{size / 2**40:.1f} TiB" if size >= 2**40 else f"{size / 2**30:.1f} GiB"
            raise UserInputError(
                f"{name}: tensor '{value.name}' of shape {dims} would need {amount}",
                hint=f"edgesdk takes tensors up to {MAX_TENSOR_BYTES / 2**30:g} GiB; check --input-shape",
            )


def load_model(
    model: str | Path | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    sample_shapes: Mapping[str, Sequence[int]] | None = None,
    examples: Mapping[str, np.ndarray] | None = None,
) -> Model:
    """Read, check and prepare an ONNX model: static shapes, folded shape subgraphs, inferred shapes.
    A dynamic input's shape comes from ``input_shapes``, else from its array in ``examples`` (the
    inputs a deploy verifies on), else from the shape of its calibration array in
    ``sample_shapes`` (see `shape_from_samples`). An input that sets a shape (``SHAPE_SLOTS``: a
    Reshape's shape, a Slice's starts) is fixed to its value in ``examples`` (``Model.bound_inputs``)."""
    name, proto, digest = _read(model)
    origin = name if isinstance(model, onnx.ModelProto) else str(model)  # what messages name
    _check(origin, proto, full=False)
    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # never mutate the caller's proto
    opset = _opset(origin, proto)
    upgrade = _upgraded(origin, proto, opset)
    examples = dict(examples or {})
    bound = _bind_values(origin, proto, examples)
    dynamic = {value.name for value in _graph_inputs(proto) if any(isinstance(dim, str) for dim in _dims(value))}
    given = {name: list(np.shape(array)) for name, array in examples.items() if name in dynamic}
    _bind_shapes(origin, proto, {**given, **(input_shapes or {})}, dict(sample_shapes or {}))
    proto = fold_shapes(_fold_constants(origin, proto))
    try:
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise UserInputError(f"{origin}: shape inference failed: {str(exc).strip().splitlines()[0]}") from exc
    _check(origin, proto, full=True)
    _check_sizes(origin, proto)
    remaining = sum(node.op_type == "Shape" for node in proto.graph.node)
    notes = [f"{remaining} Shape nodes could not be folded"] if remaining else []
    notes += [*([upgrade] if upgrade else []), *_measure_outputs(proto, examples)]
    quantized = io_quantization(proto)
    return Model(
        name=name,
        proto=proto,
        source_sha256=digest,
        inputs=_static_specs(origin, _graph_inputs(proto), "input", quantized),
        outputs=_static_specs(origin, proto.graph.output, "output", quantized),
        opset=opset,
        notes=notes,
        bound_inputs=bound,
        origin=origin,
    )


def has_dynamic_dims(proto: onnx.ModelProto) -> bool:
    """Whether any graph input has a dimension that is not a fixed size."""
    return any(isinstance(d, str) for value in _graph_inputs(proto) for d in _dims(value))


def with_dynamic_dims(model: Model, source: str | Path | onnx.ModelProto) -> Model:
    """``model`` as the user's graph: its own (dynamic) dims, unfolded, shapes inferred; for a
    model to hand back (an exported quantized model), not to compile."""
    proto = _constants_as_initializers(onnx.ModelProto.FromString(_read(source)[1].SerializeToString()))
    with contextlib.suppress(onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        proto = onnx.shape_inference.infer_shapes(proto)  # value types help the quantizer; it does not need them
    return dataclasses.replace(model, proto=proto, notes=list(model.notes))


def _constants_as_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with its top-level ``Constant`` nodes that hold a tensor as initializers of the
    same name: the same graph, with weights where quantizers look for them (Paddle2ONNX writes
    PP-OCR's conv weights as Constant nodes)."""
    graph = proto.graph
    lifted = [node for node in graph.node if node.op_type == "Constant" and not node.domain and [a.name for a in node.attribute] == ["value"]]
    for node in lifted:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)
    return proto


def random_inputs(specs: Sequence[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs for verification: standard normal floats, small non-negative ints."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            arrays[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec.name] = rng.integers(0, 2, spec.shape).astype(dtype)
        else:
            arrays[spec.name] = rng.integers(0, 10, spec.shape).astype(dtype)
    return arrays


def parse_input_shape(text: str) -> tuple[str, list[int]]:
    """``NAME=D1,D2,...`` (the CLI's --input-shape) -> ``(NAME, [D1, D2, ...])``."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.split(",")] if sep and name else None
    except ValueError:
        shape = None
    if not shape or any(d <= 0 for d in shape):
        raise UserInputError(f"--input-shape {text!r}: expected NAME=D1,D2,... with positive integers", hint="e.g. --input-shape image=1,3,224,224")
    return name, shape
