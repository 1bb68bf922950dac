"""What a schedule rule needs to know about the CPU a target describes: vector width, register
count, whether it may start threads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# x86 -mcpu names whose float32 vectors are 16 (AVX-512) or 8 (AVX2) lanes wide.
_AVX512_CPUS = ("skylake-avx512", "cascadelake", "cooperlake", "icelake", "tigerlake", "sapphirerapids", "emeraldrapids", "graniterapids", "znver4", "znver5")
_AVX2_CPUS = ("haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "znver1", "znver2", "znver3", "x86-64-v3")


@dataclass(frozen=True)
class CpuSpec:
    lanes: int  # float32 lanes of one vector register
    registers: int  # vector registers the register block may use
    parallel: bool  # whether outer loops may run on TVM's thread pool
    # The LLVM intrinsic multiplying-adding 16-bit pairs into int32 at this vector width (x86
    # pmaddwd), for 8-bit contractions (edgesdk.compile.schedules.intrinsics); None: none.
    pair_madd: str | None = None


def cpu_spec(target: Any) -> CpuSpec | None:
    """The spec for a ``tvm.target.Target``; None where no vectorising rule should run (not a CPU
    target, or the `c` target, whose kernels run single-threaded on a microcontroller: they are only
    scheduled in place, see edgesdk.compile.schedules.schedule_in_place)."""
    if target.kind.name != "llvm":
        return None
    attrs = target.attrs
    triple = str(attrs.get("mtriple", "") or "")
    mcpu = str(attrs.get("mcpu", "") or "")
    mattr = {str(feature) for feature in attrs.get("mattr", []) or []}
    if triple.startswith("aarch64") or triple.startswith("arm64"):
        return CpuSpec(lanes=4, registers=32, parallel=True)  # NEON: 32 x 128-bit
    if triple.startswith("x86_64") or not triple:
        if "+avx512f" in mattr or mcpu.startswith(_AVX512_CPUS):
            # pmaddw.d.512 needs AVX512BW, which every AVX-512 CPU named above has.
            bw = "+avx512bw" in mattr or mcpu.startswith(_AVX512_CPUS)
            return CpuSpec(lanes=16, registers=32, parallel=True, pair_madd="llvm.x86.avx512.pmaddw.d.512" if bw else None)
        if "+avx2" in mattr or mcpu.startswith(_AVX2_CPUS):
            return CpuSpec(lanes=8, registers=16, parallel=True, pair_madd="llvm.x86.avx2.pmadd.wd")
        if "+avx" in mattr:
            return CpuSpec(lanes=8, registers=16, parallel=True)
        return CpuSpec(lanes=4, registers=16, parallel=True, pair_madd="llvm.x86.sse2.pmadd.wd")  # baseline x86-64: SSE2, 16 xmm registers
    return CpuSpec(lanes=4, registers=16, parallel=True)  # armv7 NEON, riscv, ...: a conservative 128-bit guess
