"""Assign every fused kernel to a compute unit of the device, and say why when it falls back.

Units are tried in preference order, npu -> gpu -> dsp -> cpu (within a kind, in profile order).
A kernel runs on the first unit that supports all its op classes, the dtype it computes in (its
output's) and the rank of its tensors. Each unit it skips is ``{op, from_unit, to_unit,
reason}``: a fallback when the unit does not run the operation at all (an op class, a rank), a
placement when it only does not compute the kernel's dtype or weight format (the model's
precision chose the unit: a float32 model on a phone runs on the GPU). Memory never forces a fallback: a kernel whose working set exceeds a unit's
on-chip memory runs there and spills to DRAM, which the cost model charges (edgesdk.simulate.cost_model).
A kernel no unit supports goes to the CPU when the CPU runs its op classes: a CPU computes any
dtype in software (fp16 without fp16 arithmetic runs widened to fp32, and is costed so).

A kernel's dtype is what it computes in on the device (``runtime_dtypes``): a quantized runtime
(QNN, TFLite) keeps a quantized graph integer through its pooling, reshapes, concatenations and
softmax, so a float region our lowering leaves between quantized kernels (dequantize -> mean ->
quantize) runs at their integer dtype, on their unit; an fp16 graph stays fp16 where our lowering
widens a batch norm to float32.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgesdk.compile.kernels import Kernel, ModelAnalysis, Tensor
from edgesdk.devices.profile import ComputeUnit, DeviceProfile
from edgesdk.errors import CheckFailed, UserInputError
from edgesdk.simulate.cost_report import Fallback, PartitionInfo, Placement

UNIT_PREFERENCE = {"npu": 0, "gpu": 1, "dsp": 2, "cpu": 3}


class Partition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    units: list[str]  # per kernel, in call order
    dtypes: list[str]  # per kernel, what it computes in on the device (runtime_dtypes)
    fallbacks: list[Fallback]
    placements: list[Placement] = []

    def info(self) -> PartitionInfo:
        counts: dict[str, int] = {}
        for unit in self.units:
            counts[unit] = counts.get(unit, 0) + 1
        return PartitionInfo(units=counts, fallbacks=self.fallbacks, placements=self.placements)


def preference(profile: DeviceProfile) -> list[str]:
    names = list(profile.compute_units)
    return sorted(names, key=lambda name: (UNIT_PREFERENCE[profile.compute_units[name].kind], names.index(name)))


ARITHMETIC_CLASSES = ("conv", "depthwise_conv", "matmul")


def compute_dtype(kernel: Kernel) -> str:
    """The dtype a kernel computes in: a convolution's or matmul's operands (an integer conv whose
    fused epilogue dequantizes still multiplies int8), else its output's."""
    if kernel.op_class in ARITHMETIC_CLASSES and kernel.nest is not None and kernel.nest.operand_dtype:
        dtype = kernel.nest.operand_dtype
    else:
        dtype = kernel.outputs[0].dtype if kernel.outputs else "float32"
    return SAME_RATE.get(dtype, dtype)


# Unsigned integers run on the same multipliers as the signed ones of their width.
SAME_RATE = {"uint8": "int8", "uint16": "int16"}


def weight_scheme(kernel: Kernel) -> str | None:
    """The quantization scheme a kernel over packed weights needs natively (int4 weights with
    int8 activations: w4a8, ...), or None for plain kernels."""
    weights = kernel.packed_weight_dtype
    if weights is None:
        return None
    if weights.startswith("vq"):
        return "vq"
    integer_compute = compute_dtype(kernel) in ("int8", "int16")
    return f"w{weights[-1]}a8" if integer_compute else f"w{weights[-1]}a16"


def runtime_dtypes(analysis: ModelAnalysis) -> list[str]:
    """Per kernel, the dtype it computes in on the device: ``compute_dtype``, except where our
    lowering widens what a device runtime keeps narrow:

    - a float32 kernel whose float weights are all float16 computes in float16 (TVM's batch norm
      of an fp16 model returns float32, and the convolution after it then multiplies in float32);
    - a connected region of float32 kernels without float32 weights to multiply (pooling, reshape,
      concat, softmax, elementwise, attention's activation-by-activation matmuls...) whose every
      input comes from a narrower kernel (int8, int16, float16) and whose every result goes to one
      takes their widest dtype: the dequantize -> op -> quantize a QDQ lowering leaves is, for a
      quantized runtime, one op on quantized tensors. At the model's edges too: a runtime
      quantizes the input and dequantizes the output once, at the boundary.

    A region next to a float32 convolution or matmul stays float32, as does that layer (a layer
    kept in float on purpose). ``partition`` gives a kernel it places on a CPU its lowered dtype
    back: there our code is the runtime."""
    kernels = analysis.kernels
    dtypes = [compute_dtype(kernel) for kernel in kernels]
    for index, kernel in enumerate(kernels):
        weights = {t.dtype for t in kernel.inputs if t.source in ("weight", "constant") and t.dtype.startswith("float") and t.packed_dtype is None}
        if dtypes[index] == "float32" and weights == {"float16"}:
            dtypes[index] = "float16"
    consumers: dict[int, list[int]] = {index: [] for index in range(len(kernels))}
    for index, kernel in enumerate(kernels):
        for tensor in kernel.inputs:
            if tensor.producer is not None:
                consumers[tensor.producer].append(index)
    floating = {i for i, k in enumerate(kernels) if dtypes[i] == "float32" and not (set(k.op_classes) & set(ARITHMETIC_CLASSES) and _float32_weights(k))}
    seen: set[int] = set()
    for start in sorted(floating):
        if start in seen:
            continue
        region, stack = {start}, [start]
        while stack:  # the connected float region around `start`
            index = stack.pop()
            producers = {t.producer for t in kernels[index].inputs if t.producer is not None}
            for other in (producers | set(consumers[index])) & floating - region:
                region.add(other)
                stack.append(other)
        seen |= region
        edges: list[str] = []
        for index in region:
            edges += [dtypes[t.producer] for t in kernels[index].inputs if t.producer is not None and t.producer not in region]
            edges += [dtypes[c] for c in consumers[index] if c not in region]
        edges = [d for d in edges if d not in INDICES]
        if edges and all(d in NARROW for d in edges):
            widest = max(edges, key=NARROW.index)
            for index in region:
                dtypes[index] = widest
    return dtypes


def on_device(analysis: ModelAnalysis, dtypes: list[str]) -> ModelAnalysis:
    """``analysis`` with its activations as the device holds them: a float tensor made by a kernel
    that runs narrower (``runtime_dtypes``) has that kernel's dtype, so the bytes it moves, tiles
    and transfers are the device's (an int8 concat reads int8, not the float32 our lowering
    dequantized to). Weights and model inputs stay as they are."""

    def narrowed(tensor: Tensor, dtype: str) -> Tensor:
        wider = tensor.dtype.startswith("float") and dtype in NARROW and np.dtype(dtype).itemsize < np.dtype(tensor.dtype).itemsize
        return tensor.model_copy(update={"dtype": dtype}) if wider else tensor

    kernels = []
    for index, kernel in enumerate(analysis.kernels):
        inputs = [narrowed(t, dtypes[t.producer]) if t.producer is not None else t for t in kernel.inputs]
        outputs = [narrowed(t, dtypes[index]) for t in kernel.outputs]
        changed = inputs != kernel.inputs or outputs != kernel.outputs
        kernels.append(kernel.model_copy(update={"inputs": inputs, "outputs": outputs}) if changed else kernel)
    return analysis.model_copy(update={"kernels": kernels})


def _float32_weights(kernel: Kernel) -> bool:
    """Whether ``kernel`` multiplies float32 weight matrices or filters (not scalar scales)."""
    return any(t.source in ("weight", "constant") and t.dtype == "float32" and math.prod(t.shape) > 1 for t in kernel.inputs)


NARROW = ("int8", "int16", "float16")  # narrow to wide
INDICES = ("int32", "int64")  # a neighbour computing indices or shapes says nothing of the data's precision


def why_not(kernel: Kernel, unit: ComputeUnit, computes: str | None) -> str | None:
    """Why ``unit`` cannot run ``kernel`` computing in dtype ``computes``, or None when it can
    (``computes=None``: ignoring dtypes and weight formats)."""
    unsupported = [op for op in kernel.op_classes if not unit.supports_op_class(op)]
    if unsupported:
        return f"unsupported op class {', '.join(unsupported)}"
    if computes is not None and computes not in unit.dtypes:
        return f"dtype {computes} not supported (computes {', '.join(unit.dtypes)})"
    scheme = weight_scheme(kernel)
    if computes is not None and scheme is not None and scheme not in unit.quantization_schemes:
        return f"{scheme} weights not native (runs {', '.join(unit.quantization_schemes)})"
    if unit.max_rank is not None and kernel.max_rank > unit.max_rank:
        return f"rank {kernel.max_rank} tensors exceed max rank {unit.max_rank}"
    return None


def partition(analysis: ModelAnalysis, profile: DeviceProfile, *, unit: str | None = None, fallback: bool = True) -> Partition:
    """Place each kernel. ``unit`` forces one unit; ``fallback=False`` fails instead of falling back."""
    order = preference(profile)
    if unit is not None:
        if unit not in profile.compute_units:
            raise UserInputError(f"--unit {unit}: device '{profile.id}' has units {', '.join(order)}")
        order = [unit]
    units, fallbacks, placements = [], [], []
    dtypes = runtime_dtypes(analysis)
    for kernel, computes in zip(analysis.kernels, dtypes, strict=True):
        placed, skipped = None, []
        for name in order:
            reason = why_not(kernel, profile.compute_units[name], computes)
            if reason is None:
                placed = name
                break
            skipped.append((name, reason))
        if placed is None:
            # A CPU runs anything in software (fp16 on a core without fp16 arithmetic is widened to
            # fp32): the last resort, when the kernel's op classes are ones it runs.
            cpu = next(
                (name for name in order if profile.compute_units[name].kind == "cpu" and why_not(kernel, profile.compute_units[name], None) is None),
                None,
            )
            if cpu is None:
                reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped)
                raise CheckFailed(f"kernel {kernel.name} runs on no unit of '{profile.id}' ({reasons})")
            placed = cpu
            skipped = [(name, reason) for name, reason in skipped if name != cpu]
        for name, reason in skipped:
            skip = {"op": kernel.name, "from_unit": name, "to_unit": placed, "reason": reason}
            if why_not(kernel, profile.compute_units[name], None) is None:  # it runs the op, not in this dtype
                placements.append(Placement(**skip))
            else:
                fallbacks.append(Fallback(**skip))
        units.append(placed)
        if profile.compute_units[placed].kind == "cpu":
            dtypes[len(units) - 1] = compute_dtype(kernel)  # a CPU runs our lowered code as it is
    if fallbacks and not fallback:
        listed = ", ".join(sorted({f.op for f in fallbacks}))
        raise CheckFailed(f"{len(fallbacks)} kernel(s) would fall back from their preferred unit: {listed}", hint="drop --no-fallback to allow it")
    return Partition(units=units, dtypes=dtypes, fallbacks=fallbacks, placements=placements)
