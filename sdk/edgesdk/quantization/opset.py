"""Moving a model up to the ONNX opset a quantization scheme writes.

A scheme's output uses operators of a newer opset than many exported models have (PP-OCR models
are opset 11 and 12): int8's per-channel ``DequantizeLinear`` (``axis``) needs opset 13, blocked
int4/int8 weights (``block_size``, int4 tensors) need 21. The model is converted before it is
quantized, so the quantized model is valid; the float original stays the numerics reference.

onnx's version converter does the work. Where it has no adapter for an operator whose inputs,
outputs and attributes are the same in both versions (a version that only admits more types),
the operator is carried over as it is. Either way the result is checked twice: onnx.checker,
and onnxruntime must give the original's outputs on one input (a converter that changed what the
model computes is caught here, not in a quantized model's accuracy).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Mapping

import numpy as np
import onnx

from edgesdk.errors import InternalError
from edgesdk.frontend.agreement import compare
from edgesdk.frontend.model import Model, random_inputs
from edgesdk.frontend.reference import reference_outputs

# The opset each scheme's model is written at (fp16 keeps the model's: its casts exist in all).
SCHEME_OPSET = {"int8": 13, "w4a8": 21, "w8a16": 21, "w4a16": 21, "vq": 21}
IR_VERSION = {13: 7, 21: 10}  # the IR version an opset's tensors (int4 from 21) need
STANDARD = ("", "ai.onnx")


def opset_of(proto: onnx.ModelProto) -> int:
    return next(entry.version for entry in proto.opset_import if entry.domain in STANDARD)


def _signature(schema: onnx.defs.OpSchema) -> tuple:
    inputs = [(formal.name, formal.option) for formal in schema.inputs]
    outputs = [(formal.name, formal.option) for formal in schema.outputs]
    return inputs, outputs, sorted(schema.attributes)


def carried_over(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``proto`` declared at ``opset`` unchanged, when every operator it uses has the same
    signature at both versions; else a ValueError naming the first that does not. Going down,
    each operator must resolve to the very same version (then the model means exactly the same)."""
    current = opset_of(proto)
    for op_type in dict.fromkeys(node.op_type for node in proto.graph.node if node.domain in STANDARD):
        old, new = onnx.defs.get_schema(op_type, current), onnx.defs.get_schema(op_type, opset)
        if old.since_version == new.since_version:
            continue
        if opset < current or _signature(old) != _signature(new):
            raise ValueError(f"{op_type} changed between opset {min(old.since_version, new.since_version)} and {max(old.since_version, new.since_version)}")
    copy = onnx.ModelProto.FromString(proto.SerializeToString())
    for entry in copy.opset_import:
        if entry.domain in STANDARD:
            entry.version = opset
    return copy


@functools.cache
def newest_quantized_opset() -> int:
    """The newest ONNX opset at which onnxruntime (the reference) runs Quantize/DequantizeLinear."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    constants = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
    graph = helper.make_graph(
        nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], constants
    )
    for opset in range(onnx.defs.onnx_opset_version(), max(SCHEME_OPSET.values()), -1):
        try:
            ort.InferenceSession(
                helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString(), providers=["CPUExecutionProvider"]
            )
            return opset
        except Exception:  # noqa: BLE001 - onnxruntime raises its own types: no kernel at this version
            continue
    return max(SCHEME_OPSET.values())


def converted(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    if opset < opset_of(proto):  # newer than onnxruntime runs: exact when nothing changed
        try:
            return carried_over(proto, opset)
        except ValueError:
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return version_converter.convert_version(proto, opset)
    except Exception as converter_error:  # noqa: BLE001 - it raises RuntimeError and others for missing adapters
        try:
            return carried_over(proto, opset)
        except ValueError as exc:
            reason = (str(converter_error).strip().splitlines() or [type(converter_error).__name__])[-1]
            raise InternalError(f"onnx's version converter failed ({reason}) and {exc}") from converter_error


def at_opset(model: Model, lowest: int, why: str, inputs: Mapping[str, np.ndarray]) -> Model:
    """``model`` at an ONNX opset from ``lowest`` to the newest at which onnxruntime runs quantized
    models (unchanged if it is), checked on ``inputs``; ``why`` says which scheme needs it."""
    current = opset_of(model.proto)
    opset = min(max(current, lowest), newest_quantized_opset())
    if current == opset:
        return model
    proto = converted(model.proto, opset)
    proto.ir_version = max(proto.ir_version, IR_VERSION.get(opset, proto.ir_version))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise InternalError(f"the model converted from opset {current} to {opset} is invalid: {str(exc).strip().splitlines()[0]}") from exc
    converted_outputs, original_outputs = reference_outputs(proto.SerializeToString(), inputs), reference_outputs(model.serialized, inputs)
    checks = [compare(np.asarray(converted_outputs[name]), np.asarray(value)) for name, value in original_outputs.items()]
    if not all(check.passed for check in checks):
        worst = max(check.max_abs_err for check in checks)
        raise InternalError(f"the model converted from opset {current} to {opset} computes other outputs (max abs err {worst:.3g})")
    note = f"converted from ONNX opset {current} to {opset} for {why} (outputs unchanged on a sample)"
    return dataclasses.replace(model, proto=proto, opset=opset, notes=[*model.notes, note])


def for_scheme(model: Model, scheme: str, samples: list[dict[str, np.ndarray]]) -> Model:
    """``model`` at the opset ``scheme``'s quantized model is written at, checked on its first
    calibration sample (or a random input)."""
    if scheme not in SCHEME_OPSET:
        return model
    return at_opset(model, SCHEME_OPSET[scheme], scheme, samples[0] if samples else random_inputs(model.inputs))
