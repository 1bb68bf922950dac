"""Which target a build gets: this host's (for the simulation), the device's with what a float16
model needs, and whether code for a target runs here."""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

import onnx

from edgesdk.frontend.model import Model


def _host_arch() -> str:
    return platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")


@functools.cache
def _host_features() -> frozenset[str]:
    """This CPU's features (Linux /proc/cpuinfo flags); empty where that cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


# x86-64-v3's vector features, as the pc profile's target spells them (device_profiles/pc.yaml).
X86_64_V3 = ["+avx2", "+fma", "+f16c"]


def host_target(model: Model) -> dict[str, Any]:
    """The simulation build's target: spelled like the pc profile's where this CPU runs it, so that
    a pc build and a host build share a cache entry; on an x86-64 CPU without AVX2/FMA, baseline
    x86-64 (with F16C for a float16 model where this CPU has it)."""
    target: dict[str, Any] = {"kind": "llvm", "mtriple": f"{_host_arch()}-linux-gnu"}
    if _host_arch() == "x86_64" and all(feature[1:] in _host_features() for feature in X86_64_V3):
        return {**target, "mattr": list(X86_64_V3)}
    return half_target(target, model) if "f16c" in _host_features() else target


# x86-64 has no float16 arithmetic: LLVM computes each float16 op in float32 and rounds it back,
# and on baseline x86-64 each conversion is a library call. Unrolled, one float16 kernel becomes
# thousands of calls (a PP-OCRv4 rec conv: 19,000) and LLVM's codegen spends minutes on each (PP-OCR
# cls host build 232 s -> 19 s with F16C, bit-identical outputs). F16C converts in one instruction
# with the same rounding: x86-64 builds of a model that computes in float16 use it.
HALF_CONVERSION = {"x86_64": "+f16c"}


def half_target(target: dict[str, Any], model: Model) -> dict[str, Any]:
    feature = HALF_CONVERSION.get(str(target.get("mtriple", "")).split("-")[0])
    mattr = list(target.get("mattr", []))
    if target.get("kind") != "llvm" or feature is None or feature in mattr or not _computes_in_half(model.proto):
        return target
    return {**target, "mattr": [*mattr, feature]}


def _computes_in_half(proto: onnx.ModelProto) -> bool:
    """Whether the model holds float16 weights or values, or casts to float16."""
    half, graph = onnx.TensorProto.FLOAT16, proto.graph
    if any(tensor.data_type == half for tensor in graph.initializer):
        return True
    if any(value.type.tensor_type.elem_type == half for value in [*graph.value_info, *graph.input, *graph.output]):
        return True
    return any(node.op_type == "Cast" and any(a.name == "to" and a.i == half for a in node.attribute) for node in graph.node)


def runs_here(target: dict[str, Any]) -> bool:
    """Whether code for ``target`` runs on this machine (then the device build is the simulation):
    same ISA, and every CPU feature it asks for (``mattr``) present."""
    if target.get("kind") != "llvm" or str(target.get("mtriple", "")).split("-")[0] != _host_arch():
        return False
    return all(feature[1:] in _host_features() for feature in target.get("mattr", []) if feature.startswith("+"))
