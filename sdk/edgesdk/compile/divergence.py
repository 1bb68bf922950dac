"""Where a compiled model's numbers part from onnxruntime's: every intermediate value, computed by
TVM (one build that returns them all) and by onnxruntime, compared on the same inputs. A node whose
result differs while its inputs agree is where the difference starts. On a device whose nodes may
run on onnxruntime (the pc), deploy moves those nodes there when verification fails
(edgesdk.verbs.deploy), the way a node TVM cannot lower moves (edgesdk.compile.onnx_fallback).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from edgesdk.compile.build_cache import BuildCache
from edgesdk.compile.compiler import compile_model
from edgesdk.compile.lowering import BuildSpec
from edgesdk.compile.worker import WorkerFailed
from edgesdk.errors import UserInputError
from edgesdk.frontend.agreement import compare
from edgesdk.frontend.model import Model, TensorSpec, shape_values
from edgesdk.frontend.reference import reference_outputs
from edgesdk.frontend.shape_folding import static_shapes
from edgesdk.plugin.passes import PassChoice
from edgesdk.quantization.recipe import float_tolerance, stray_share

# Values a shape computation makes stay shapes in TVM, not tensors it can return.
SHAPE_OPS = ("Shape", "Size")
# The probe keeps every intermediate value at once, twice (TVM's and onnxruntime's): beyond this
# many bytes of them, nothing is located.
PROBE_BYTES = 2 * 2**30


def _value_types(proto: onnx.ModelProto) -> dict[str, str]:
    """Each value's numpy dtype name, where shape inference gave one."""
    types = {}
    for value in [*proto.graph.value_info, *proto.graph.output]:
        elem_type = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
        if elem_type:
            types[value.name] = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    return types


def probe(model: Model) -> tuple[Model, list[str]]:
    """``model`` returning, after its own outputs, every intermediate value TVM computes as a tensor
    of static shape; and the names of all values compared (the outputs too)."""
    proto = onnx.shape_inference.infer_shapes(model.proto, data_prop=True)
    shapes, types = static_shapes(proto), _value_types(proto)
    shaping = set(shape_values(proto))
    outputs = {value.name for value in proto.graph.output}
    extra = [
        name
        for node in proto.graph.node
        if node.op_type not in SHAPE_OPS
        for name in node.output
        if name and name not in outputs and name not in shaping and name in shapes and name in types
    ]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model.proto)
    exposed.graph.output.extend(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(types[name])), shapes[name]) for name in extra)
    specs = [TensorSpec(name, tuple(shapes[name]), types[name]) for name in extra]
    return dataclasses.replace(model, proto=exposed, outputs=[*model.outputs, *specs]), [*outputs, *extra]


def diverging_nodes(
    model: Model,
    spec: BuildSpec,
    cache: BuildCache,
    inputs: Mapping[str, np.ndarray],
    *,
    scheme: str,
    diverging: Mapping[str, str],
    timeout_s: float | None,
    on_stage: Callable[[str], None],
    passes: Sequence[PassChoice] = (),
) -> dict[str, str]:
    """The nodes of ``model`` (keyed by their first output, with why) whose result, built for
    ``spec`` (a build that runs here) with the ``diverging`` nodes already on onnxruntime, differs
    from onnxruntime's on ``inputs`` while their inputs agree, within the tolerances of the
    precision ``scheme``. Empty when the probe build itself fails: then nothing can be located."""
    exposed, names = probe(model)
    if sum(int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize for spec in exposed.outputs) > PROBE_BYTES:
        return {}
    try:
        compiled = compile_model(
            exposed, [spec], cache, dict(inputs), timeout_s=timeout_s, on_stage=on_stage, passes=passes, onnxruntime=True, diverging=diverging
        )
    except (WorkerFailed, UserInputError):
        return {}
    assert compiled.outputs is not None  # compile_model runs the build on the inputs it is given
    reference = reference_outputs(exposed.serialized, inputs)
    rtol, share = float_tolerance(scheme, model.proto), stray_share(scheme)
    found = {name: compare(np.asarray(compiled.outputs[name]), np.asarray(reference[name]), rtol, share) for name in names}
    located = {}
    for node in model.proto.graph.node:
        wrong = [name for name in node.output if name in found and not found[name].passed]
        if not wrong or node.output[0] in diverging:
            continue
        if all(found[name].passed for name in node.input if name in found):
            worst = found[wrong[0]]
            located[node.output[0]] = (
                f"TVM's result differs from onnxruntime's on the deploy's inputs ('{wrong[0]}': max abs err {worst.max_abs_err:.3g} > {worst.tolerance:.3g})"
            )
    return located
