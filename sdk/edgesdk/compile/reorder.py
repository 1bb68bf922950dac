"""The Relax pass that runs the fused kernels in the order of lowest peak activation memory
(edgesdk.compile.ordering), so the order chosen is the order the artifact executes: TVM's
StaticPlanBlockMemory then plans the buffers in this order.

It runs after fusion (and after reshapes became views), on the dataflow block of ``main``, and
records on ``main`` what it found (``ORDER_ATTR``): the peak in the file's order and in the chosen
order, whether the search was exact, and how long it took. Runs inside the TVM worker.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgesdk.compile.ordering import Node, schedule

ORDER_ATTR = "edgesdk.order"


class OrderRecord(BaseModel):
    """What the ordering found for a model's ``main`` (stored on it as JSON under ORDER_ATTR)."""

    model_config = ConfigDict(extra="forbid")

    file_order_peak_bytes: int  # activation peak with the kernels in the file's order
    scheduled_peak_bytes: int  # in the order chosen (never above the file's)
    naive_bytes: int  # every activation tensor (and model input) in a buffer of its own
    exact: bool  # the search proved it optimal
    seconds: float
    timeline: list[int]  # live activation bytes after each kernel call, in the chosen order


def _bytes(ty) -> int:
    from tvm import relax

    if isinstance(ty, relax.TupleType):
        return sum(_bytes(field) for field in ty.fields)
    if isinstance(ty, relax.TensorType) and ty.shape is not None:
        try:
            return int(np.prod([int(d) for d in ty.shape], dtype=np.int64)) * np.dtype(str(ty.dtype)).itemsize
        except (TypeError, ValueError):  # a symbolic dim or a dtype numpy lacks
            return 0
    return 0


def _nodes(block, inputs: set) -> tuple[list[Node], set]:
    """The block's bindings as ordering nodes, and the model inputs they read."""
    from tvm import relax

    index = {binding.var: position for position, binding in enumerate(block.bindings)}
    read_inputs = set()
    nodes: list[Node] = []
    for binding in block.bindings:
        value = binding.value
        used = relax.analysis.free_vars(value)
        reads_input = any(var in inputs for var in used)
        read_inputs |= {var for var in used if var in inputs}
        deps = tuple(sorted({index[var] for var in used if var in index}))
        # Computed from weights alone (a bias reshaped): placed before its first reader, not searched.
        constant = not reads_input and all(nodes[u].constant for u in deps)
        view_of = None
        if isinstance(value, relax.Var) and value in index:
            view_of = index[value]
        elif isinstance(value, relax.TupleGetItem) and value.tuple_value in index:
            view_of = index[value.tuple_value]
        elif isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.reshape" and value.args[0] in index:
            view_of = index[value.args[0]]
        output = not isinstance(binding.var, relax.DataflowVar)
        nodes.append(Node(size=0 if view_of is not None else _bytes(binding.var.ty), inputs=deps, alias_of=view_of, output=output, constant=constant))
    return nodes, read_inputs


def _calls_kernel(value) -> bool:
    return getattr(getattr(value, "op", None), "name", "") == "relax.call_tir"


def order_by_memory():
    """The pass (a module pass on ``main``)."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="OrderByMemory")
    def transform(mod, _context):
        if "main" not in [gvar.name_hint for gvar in mod.get_global_vars()]:
            return mod
        main = mod["main"]
        if not isinstance(main.body, relax.SeqExpr):
            return mod
        num_inputs = int(main.attrs["num_input"]) if main.attrs and "num_input" in main.attrs else len(main.params)
        inputs = set(main.params[:num_inputs])
        blocks, record = [], None
        for block in main.body.blocks:
            if not isinstance(block, relax.DataflowBlock) or record is not None:
                blocks.append(block)
                continue
            nodes, read = _nodes(block, inputs)
            resident = sum(_bytes(var.ty) for var in read)
            found = schedule(nodes, resident_bytes=resident)
            bindings = [block.bindings[v] for v in found.order]
            blocks.append(relax.DataflowBlock(bindings))
            record = OrderRecord(
                file_order_peak_bytes=found.file_order_peak_bytes,
                scheduled_peak_bytes=found.peak_bytes,
                naive_bytes=resident + sum(node.size for node in nodes),
                exact=found.exact,
                seconds=round(found.seconds, 4),
                timeline=[live for binding, live in zip(bindings, found.timeline, strict=True) if _calls_kernel(binding.value)],
            )
        if record is None:
            return mod
        reordered = relax.Function(main.params, relax.SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure, main.attrs)
        reordered = reordered.with_attr(ORDER_ATTR, record.model_dump_json())
        functions = {gvar: reordered if gvar.name_hint == "main" else func for gvar, func in mod.functions.items()}
        return tvm.IRModule(functions, attrs=mod.attrs)

    return transform
