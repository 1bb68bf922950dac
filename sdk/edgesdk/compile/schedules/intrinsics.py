"""Tensor intrinsics for 8-bit contractions: ``C[lanes] += A[2] . B[lanes, 2]`` in int32, with
8-bit A (the activation: int8 or uint8) and B (int8 weights), as one multiply-add of 16-bit pairs.

Vectorised as written, an 8-bit conv multiplies in 32-bit lanes (x86 `vpmulld`: 8 products per
instruction, slower than float32 FMA). Widened to 16 bits, a pair of input channels times a pair of
weights is one `vpmaddwd` per vector: 2 x lanes products summed pairwise into int32, exact for any
8-bit operands (|a * b| <= 255 * 128, two of them < 2^31), unlike `vpmaddubsw`, which saturates.
A CPU with VNNI runs the multiply-add and the accumulate as one `vpdpwssd` (LLVM fuses them).
"""

from __future__ import annotations

import functools

PAIR = 2  # 8-bit values per 32-bit group: one 16-bit pair


def pair_dot(madd: str, lanes: int, activation: str) -> str:
    """The name of the intrinsic, registered once, that multiplies-adds with ``madd`` (an LLVM
    intrinsic: CpuSpec.pair_madd) over ``lanes`` int32 lanes; ``activation``: "int8" or "uint8"."""
    return _register(madd, lanes, activation)


@functools.cache
def _register(llvm_intrinsic: str, lanes: int, activation: str) -> str:
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    name = f"edgesdk_pair_dot_{lanes}x{PAIR}_{activation}"
    half = lanes * PAIR  # int16 lanes

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((PAIR,), "int16", offset_factor=1),  # type: ignore[valid-type]  # TVMScript
        B: T.Buffer((lanes, PAIR), "int16", offset_factor=1),  # type: ignore[valid-type]  # TVMScript
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),  # type: ignore[valid-type]  # TVMScript
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:PAIR], B[0:lanes, 0:PAIR])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, PAIR):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(T.cast(A[vk], activation), "int32") * T.cast(T.cast(B[vi, vk], "int8"), "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((PAIR,), "int16", offset_factor=1),  # type: ignore[valid-type]  # TVMScript
        B: T.Buffer((lanes, PAIR), "int16", offset_factor=1),  # type: ignore[valid-type]  # TVMScript
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),  # type: ignore[valid-type]  # TVMScript
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:PAIR], B[0:lanes, 0:PAIR])
            T.writes(C[0:lanes])
            pair = T.reinterpret(A.vload([0], f"int16x{PAIR}"), dtype="int32")
            a = T.reinterpret(T.broadcast(pair, lanes), dtype=f"int16x{half}")
            b = B.vload([0, 0], dtype=f"int16x{half}")
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], dtype=f"int32x{lanes}") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_intrinsic), a, b, dtype=f"int32x{lanes}"
            )

    TensorIntrin.register(name, desc, impl, override=True)
    return name
