"""The device program of a compiled model: which kernel runs when, on which tensors, where each
tensor lives. Read off the lowered Relax ``main`` right after the arena is laid out
(edgesdk.compile.arena), it is what a runner without TVM's VM needs (edgesdk.compile.standalone):
the kernels in the executed order, each tensor a model input or output, a weight (a parameter of
``main``), a view at an offset of the one arena, or a view of another tensor with a new shape.
"""

from __future__ import annotations

import base64
import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

PROGRAM_ATTR = "edgesdk.program"
PROGRAM_FILE = "program.json"


class ProgramTensor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["input", "weight", "constant", "arena", "output", "view"]
    shape: list[int]
    dtype: str
    index: int = Field(0, description="input/weight: position among main's inputs / weights; output: position among its outputs.")
    offset: int = Field(0, description="arena: byte offset in the arena.")
    of: int = Field(-1, description="view: the tensor it views (same bytes, another shape).")
    data: str = Field("", description="constant: its bytes, base64 (a constant the compiler put in main, e.g. a lookup table).")

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


class Call(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kernel: str
    args: list[int] = Field(description="Tensors passed, outputs last, by index into Program.tensors.")


class Program(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arena_bytes: int
    tensors: list[ProgramTensor]
    calls: list[Call]
    outputs: list[int] = Field(description="The model's outputs, in order, by index into tensors.")
    unsupported: str | None = Field(None, description="Why the function cannot run without the VM, if it cannot.")

    def root(self, index: int) -> int:
        """The tensor whose bytes tensor ``index`` is (itself, or what its views view)."""
        while self.tensors[index].kind == "view":
            index = self.tensors[index].of
        return index


def record_program():
    """The Relax module pass (TVM is imported here, in the worker): after edgesdk.compile.arena,
    attaches the program of ``main`` as the JSON attribute ``edgesdk.program``."""
    import tvm
    from tvm import relax

    names = ("memory.alloc_storage", "memory.alloc_tensor", "memory.ensure_zero_offset", "reshape", "builtin.alloc_tensor")
    ops = {name: tvm.ir.Op.get(f"relax.{name}") for name in names}

    def shape_dtype(ty) -> tuple[list[int], str]:
        return [int(dim) for dim in ty.shape.values], str(ty.dtype)

    def read(func) -> Program:
        num_inputs = int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs else len(func.params)
        tensors: list[ProgramTensor] = []
        ids: dict = {}
        for position, param in enumerate(func.params):
            shape, dtype = shape_dtype(param.ty)
            inputs = position < num_inputs
            ids[param] = len(tensors)
            tensors.append(ProgramTensor(kind="input" if inputs else "weight", shape=shape, dtype=dtype, index=position if inputs else position - num_inputs))
        returned = func.body.body
        results = list(returned.fields) if isinstance(returned, relax.Tuple) else [returned]
        calls: list[Call] = []
        arena = 0

        def tensor_of(arg) -> int:
            if isinstance(arg, tvm.ir.expr.Constant):
                array = arg.value.numpy()
                tensors.append(ProgramTensor(kind="constant", shape=list(array.shape), dtype=str(array.dtype), data=base64.b64encode(array.tobytes()).decode()))
                return len(tensors) - 1
            return ids[arg]

        fresh: list[int] = []  # builtin.alloc_tensor results: the model outputs
        for block in func.body.blocks:
            for binding in block.bindings:
                value, var = binding.value, binding.var
                if isinstance(value, relax.Var):
                    ids[var] = ids[value]
                elif isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
                    calls.append(Call(kernel=value.op.name_hint, args=[tensor_of(arg) for arg in value.args]))
                elif isinstance(value, relax.Call) and value.op == ops["memory.alloc_storage"]:
                    if arena:  # TVM's storages were kept (symbolic shapes): no single arena
                        return Program(arena_bytes=0, tensors=[], calls=[], outputs=[], unsupported="main allocates more than one storage")
                    arena = int(value.args[0].values[0])
                elif isinstance(value, relax.Call) and value.op == ops["memory.alloc_tensor"]:
                    shape, dtype = shape_dtype(var.ty)
                    ids[var] = len(tensors)
                    tensors.append(ProgramTensor(kind="arena", shape=shape, dtype=dtype, offset=int(value.args[1].value)))
                elif isinstance(value, relax.Call) and value.op == ops["memory.ensure_zero_offset"]:
                    ids[var] = ids[value.args[0]]
                elif isinstance(value, relax.Call) and value.op == ops["reshape"]:
                    shape, dtype = shape_dtype(var.ty)
                    ids[var] = len(tensors)
                    tensors.append(ProgramTensor(kind="view", shape=shape, dtype=dtype, of=ids[value.args[0]]))
                elif isinstance(value, relax.Call) and value.op == ops["builtin.alloc_tensor"]:
                    shape, dtype = shape_dtype(var.ty)
                    ids[var] = len(tensors)
                    fresh.append(len(tensors))
                    tensors.append(ProgramTensor(kind="output", shape=shape, dtype=dtype))
                else:
                    return Program(arena_bytes=0, tensors=[], calls=[], outputs=[], unsupported=f"main binds {type(value).__name__} {getattr(value, 'op', '')}")
        outputs = [ids[result] for result in results]
        if sorted(outputs) != sorted(fresh):
            return Program(arena_bytes=0, tensors=[], calls=[], outputs=[], unsupported="an output of main is not a tensor of its own")
        for position, tensor in enumerate(outputs):
            tensors[tensor].index = position
        return Program(arena_bytes=arena, tensors=tensors, calls=calls, outputs=outputs)

    @tvm.transform.module_pass(opt_level=0, name="RecordProgram")
    def transform(mod, _context):
        if "main" not in [gvar.name_hint for gvar in mod.get_global_vars()] or not isinstance(mod["main"].body, relax.SeqExpr):
            return mod
        try:
            program = read(mod["main"])
        except (KeyError, AttributeError, TypeError) as exc:  # a binding this reader does not know
            program = Program(arena_bytes=0, tensors=[], calls=[], outputs=[], unsupported=f"{type(exc).__name__}: {exc}")
        recorded = program.model_dump_json()
        functions = {gvar: func.with_attr(PROGRAM_ATTR, recorded) if gvar.name_hint == "main" else func for gvar, func in mod.functions.items()}
        return tvm.IRModule(functions, attrs=mod.attrs)

    return transform
