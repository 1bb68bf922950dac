"""One static arena per function: the device code's tensors laid out by offset.

TVM's StaticPlanBlockMemory shares a storage between tensors whose lifetimes do not overlap, but
only as whole storages: a tensor takes a storage of its own size class, so a model with tensors
of many sizes (patches, branches) allocates far more than it ever has live. After it, this pass
gives every planned tensor of ``main`` an offset in one arena (greedy placements as in
TensorFlow Lite's arena planner: each tensor at the lowest offset where it overlaps no tensor
alive at the same time, largest first or longest-lived first, whichever packs tighter), so the arena comes close to the peak of live bytes in the run order
(edgesdk.compile.reorder chose that order). The VM then allocates one storage and every tensor
as a view into it at its offset; the VM checks that each view lies inside the storage.

A tensor lives from its allocation to the last binding that reads it or any alias of it (a
reshape view, a variable bound to it); model outputs are not planned (TVM allocates them apart).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ALIGNMENT = 64  # bytes: what TVM's kernels assume of a buffer's start (kAllocAlignment)


@dataclass(frozen=True)
class Block:
    size: int
    start: int  # index of the binding that allocates it
    end: int  # index of the last binding that uses it (inclusive)


def place(blocks: Sequence[Block], order: Sequence[int], alignment: int = ALIGNMENT, fixed: Mapping[int, int] | None = None) -> tuple[list[int], int]:
    """Blocks in ``order``, each at the lowest aligned offset where it overlaps no block already
    placed whose lifetime meets its own; the blocks in ``fixed`` (index: offset) are placed first."""
    offsets = [0] * len(blocks)
    placed = list(fixed or {})
    for index in placed:
        offsets[index] = (fixed or {})[index]
    for index in order:
        block = blocks[index]
        busy = sorted((offsets[j], offsets[j] + blocks[j].size) for j in placed if blocks[j].start <= block.end and block.start <= blocks[j].end)
        offset = 0
        for low, high in busy:
            if offset + block.size <= low:
                break
            offset = max(offset, -(-high // alignment) * alignment)
        offsets[index] = offset
        placed.append(index)
    total = max((offsets[i] + blocks[i].size for i in range(len(blocks))), default=0)
    return offsets, -(-total // alignment) * alignment


def layout(blocks: Sequence[Block], alignment: int = ALIGNMENT) -> tuple[list[int], int]:
    """(offset of each block, arena bytes): the smallest arena of three greedy placements,
    largest block first (TensorFlow Lite's greedy by size), longest-lived first, and in order of
    allocation."""
    indices = range(len(blocks))
    orders = [
        sorted(indices, key=lambda i: (-blocks[i].size, blocks[i].start)),
        sorted(indices, key=lambda i: (blocks[i].start - blocks[i].end, -blocks[i].size)),
        sorted(indices, key=lambda i: (blocks[i].start, -blocks[i].size)),
    ]
    return min((place(blocks, order, alignment) for order in orders), key=lambda placed: placed[1])


def plan_arena():
    """The Relax module pass (TVM is imported here, in the worker): run after StaticPlanBlockMemory."""
    import tvm
    from tvm import relax

    alloc_storage = tvm.ir.Op.get("relax.memory.alloc_storage")
    alloc_tensor = tvm.ir.Op.get("relax.memory.alloc_tensor")

    def tensor_bytes(call) -> int | None:
        shape, dtype = call.args[2], call.args[3]
        if not isinstance(shape, relax.ShapeExpr) or not all(isinstance(dim, tvm.tirx.IntImm) for dim in shape.values):
            return None
        kind = tvm.runtime.DataType(str(dtype.value))
        elements = 1
        for dim in shape.values:
            elements *= int(dim)
        return -(-elements * kind.bits * kind.lanes // 8)

    def rewrite(func):
        bindings = [binding for block in func.body.blocks for binding in block.bindings]
        planned: dict = {}  # alloc_tensor var -> (binding index, bytes)
        root: dict = {}  # var -> the planned tensor it is or views
        last: dict = {}
        for index, binding in enumerate(bindings):
            value = binding.value
            if isinstance(value, relax.Call) and value.op == alloc_tensor:
                size = tensor_bytes(value)
                if size is None:
                    return func  # symbolic shapes: keep TVM's plan
                planned[binding.var] = (index, size)
                root[binding.var] = binding.var
                last[binding.var] = index
                continue
            used = {root[var] for var in relax.analysis.free_vars(value) if var in root}
            for tensor in used:
                last[tensor] = index
            kernel_call = isinstance(value, relax.Call) and not isinstance(value.op, tvm.ir.Op)  # writes its arguments, returns nothing
            if used and not kernel_call:
                # Whatever a binding computes from a planned tensor may view it (a reshape, a
                # variable, a tuple item): its readers keep the tensor alive.
                root[binding.var] = next(iter(used)) if len(used) == 1 else None
                if root[binding.var] is None:
                    del root[binding.var]
                    for tensor in used:  # several sources: kept to the end, to be safe
                        last[tensor] = len(bindings)
        for var in relax.analysis.free_vars(func.body.body):
            if var in root:
                last[root[var]] = len(bindings)
        if not planned:
            return func
        tensors = list(planned)
        offsets, total = layout([Block(planned[t][1], planned[t][0], last[t]) for t in tensors])
        offset_of = dict(zip(tensors, offsets, strict=True))
        arena = relax.Var("arena", relax.ObjectType())
        new_bindings = [relax.VarBinding(arena, relax.op.memory.alloc_storage(relax.ShapeExpr([total]), 0, "global", "uint8"))]
        for binding in bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op == alloc_storage:
                continue
            if binding.var in offset_of:
                view = relax.op.memory.alloc_tensor(arena, offset_of[binding.var], value.args[2], value.args[3], value.args[4])
                if offset_of[binding.var] == 0:
                    new_bindings.append(relax.VarBinding(binding.var, view))
                    continue
                # The VM records the offset as the tensor's byte_offset; TVM's kernels take
                # tensors that start at their data pointer, so the view is rebased (no copy on CPU).
                placed = relax.Var(f"{binding.var.name}_at", binding.var.ty)
                new_bindings += [relax.VarBinding(placed, view), relax.VarBinding(binding.var, relax.op.memory.ensure_zero_offset(placed))]
            else:
                new_bindings.append(binding)
        body = relax.SeqExpr([relax.BindingBlock(new_bindings)], func.body.body)
        return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)

    @tvm.transform.module_pass(opt_level=0, name="PlanArena")
    def transform(mod, _context):
        if "main" not in [gvar.name_hint for gvar in mod.get_global_vars()] or not isinstance(mod["main"].body, relax.SeqExpr):
            return mod
        functions = {gvar: rewrite(func) if gvar.name_hint == "main" else func for gvar, func in mod.functions.items()}
        return tvm.IRModule(functions, attrs=mod.attrs)

    return transform
