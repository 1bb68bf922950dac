"""Small readers of Relax values that the ONNX converters share (edgesdk.compile.onnx_converters,
edgesdk.compile.onnx_tensor_converters). Imports TVM: only the compile worker loads it."""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as frontend

Expr = Any  # a relax.Expr: TVM ships no type information


def typed(bb, expr: Expr) -> Any:
    """``expr``'s TensorType (an expression just built has none until normalized)."""
    return (expr if isinstance(expr.ty, relax.TensorType) else bb.normalize(expr)).ty


def shape_of(bb, expr: Expr) -> list[int]:
    return [int(dim) for dim in typed(bb, expr).shape]


def dtype_of(bb, expr: Expr) -> str:
    return str(typed(bb, expr).dtype)


def constant(expr: Expr, params, what: str) -> np.ndarray:
    value = frontend.get_constant(expr, params)
    if not isinstance(value, tvm.ir.GenericConst):
        raise ValueError(f"{what} must be a constant")
    return value.value.numpy()


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
