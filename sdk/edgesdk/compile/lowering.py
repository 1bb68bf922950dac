"""The one lowering routine every backend shares: ONNX -> Relax -> fused TIR -> device files.

This module imports TVM and runs only inside the TVM worker process (``edgesdk.compile.worker``), so
a crash in TVM cannot take the caller down. Backends choose the target, what is emitted and the
toolchain (``BuildSpec``); everything else is here, once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgesdk.compile.arena import plan_arena
from edgesdk.compile.half_accumulation import accumulate_in_float32
from edgesdk.compile.integer_ops import integerize
from edgesdk.compile.kernels import ModelAnalysis, analyze
from edgesdk.compile.lookup_tables import tabulate
from edgesdk.compile.object_symbols import undefined_symbols
from edgesdk.compile.onnx_functions import expand_functions
from edgesdk.compile.onnxruntime_segments import write_segments
from edgesdk.compile.packed_kernels import extract_blocked_weights, unpack_in_kernels
from edgesdk.compile.program import PROGRAM_ATTR, PROGRAM_FILE, Program, record_program
from edgesdk.compile.reorder import order_by_memory
from edgesdk.compile.standalone import device_plan, identifier, write_runner
from edgesdk.frontend.io_quantization import IoQuantization, io_quantization
from edgesdk.frontend.shape_folding import fold_shapes
from edgesdk.frontend.tensors import load_npz
from edgesdk.plugin.toolchains import Toolchain

# TVM's C code calls float16 `half` and declares no such type: the compiler's IEEE half
# (arm-none-eabi-gcc's __fp16, storage only on a Cortex-M7: every operation converts to float).
HALF_TYPE = """#if defined(__FLT16_MAX__)
typedef _Float16 half;
#else
typedef __fp16 half;
#endif
"""

# Bump when the lowering changes what it produces for the same inputs: it is part of cache keys.
PIPELINE_VERSION = 84


class BuildSpec(BaseModel):
    """One build of a model: for the device, or for this host (the functional simulation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["device", "host"]
    target: dict[str, Any]
    emit: Literal["shared_library", "c_source"]
    toolchain: Toolchain
    basename: str = Field(description="File name stem of the outputs, e.g. the model name.")
    # The target's tuning database (edgesdk.compile.tuning_db) and a digest of its records, when it
    # has tuned schedules: the digest keys the build cache, so new records mean a new build.
    tuning: str | None = None
    tuning_digest: str | None = None
    # A shared-library build that also writes a static library of the kernels and a runner
    # without TVM's runtime (edgesdk.compile.standalone); C builds always have the runner.
    standalone: bool = False

    @property
    def library_name(self) -> str:
        """The shared library a ``shared_library`` build writes."""
        return f"{self.basename}.so"

    @property
    def kernels_library_name(self) -> str:
        """The kernels alone, as a plain shared library (no VM program): a board's TVM RPC server
        times each of them by name (edgesdk.distributed.boards), which it cannot do in the library
        whose root module is the VM's."""
        return f"{self.basename}.kernels.so"


class BuildResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[str] = Field(description="Output files, relative to the build directory.")
    kernels: int
    toolchain: str
    notes: list[str] = Field(default_factory=list)
    tuned: list[str] = Field(default_factory=list, description="Kernels built with a tuned schedule.")
    arena_bytes: int | None = Field(None, description="Bytes of the storages the code allocates for tensors (TVM's static plan).")
    section_sizes: tuple[int, int, int] | None = Field(None, description="(text, data, bss) of the device objects, where the toolchain measures them.")
    device_ram_bytes: int | None = Field(
        None, description="RAM the standalone runner's tensors take: its arena (tensors and kernel scratch) and the I/O buffers; None without a runner."
    )
    undefined_symbols: list[str] | None = Field(None, description="What the standalone code needs from the C library when linked; None without it.")


def import_onnx(
    model_path: Path, shapes: dict[str, list[int]], segments: Path | None = None, examples: Path | None = None, diverging: dict[str, str] | None = None
):
    """Import with TVM's ONNX frontend; weights come back as arrays, in the VM's argument order.

    A node TVM cannot convert raises ``Unsupported``, or, with a ``segments`` directory, runs on
    onnxruntime (edgesdk.compile.onnxruntime_segments: its model and listing are written there);
    the ``examples`` inputs (npz) give the shapes shape inference cannot (edgesdk.compile.onnx_fallback).
    The ``diverging`` nodes (by first output, with the reason) run on onnxruntime though TVM converts them.
    """
    import onnx
    from tvm import relax
    from tvm.relax.frontend import onnx as relax_onnx

    from edgesdk.compile.onnx_converters import converters_registered, supported_ops  # TVM classes: imported where TVM runs
    from edgesdk.compile.onnx_fallback import NodeGuard
    from edgesdk.compile.shape_casts import shapes_as_tensors
    from edgesdk.compile.tensor_names import c_safe_initializers

    # Group-wise quantized weights (int4/int8 blocked dequantize): read here, packed below.
    proto, blocked = extract_blocked_weights(c_safe_initializers(onnx.load(str(model_path))))
    proto, expanded = expand_functions(proto, supported_ops(), kept=diverging or {})
    proto = fold_shapes(proto) if expanded else proto  # the bodies' own shape computations
    proto = shapes_as_tensors(proto)
    guard = NodeGuard(proto, segments, load_npz(examples) if examples is not None else None, diverging)
    with converters_registered(guard):
        # The frontend prints diagnostics to stdout: in the worker, stdout is its log file.
        mod = relax_onnx.from_onnx(guard.proto, shape_dict=shapes, keep_params_in_input=True)
    if guard.segments:
        assert segments is not None  # only then does the guard make segments
        write_segments(segments, guard.segments)
        mod = relax.transform.DeadCodeElimination(["main"])(mod)  # what a failed converter emitted
    mod, params = relax.frontend.detach_params(mod)
    known = dict(zip(mod["main"].params[len(shapes) :], (array.numpy() for array in params.get("main", [])), strict=False))
    # Quantized (QDQ) models: their convolutions and matmuls become integer kernels.
    mod = tabulate(integerize(mod, known), known)
    mod, known, packed = unpack_in_kernels(mod, known, blocked)
    mod = accumulate_in_float32(mod)
    weight_vars = mod["main"].params[len(shapes) :]
    return mod, [known[var] for var in weight_vars], [str(var.name) for var in weight_vars], packed


def checked_pass_result(choice, before, after):
    """A relax-stage plugin pass's result: an IRModule whose ``main`` keeps the parameters of
    ``before``'s (the weights are bound to them by position)."""
    import tvm

    names = [var.name_hint for var in after.get_global_vars()] if isinstance(after, tvm.IRModule) else []
    if "main" not in names:
        raise TypeError(f"pass {choice.name} (plugin {choice.plugin!r}) must return a tvm.IRModule with `main`, got {type(after).__name__}")
    if len(after["main"].params) != len(before["main"].params):
        raise TypeError(f"pass {choice.name} (plugin {choice.plugin!r}) changed the parameters of `main`")
    return after


def fusion_passes(target) -> list:
    """Up to fused, unscheduled kernels: library dispatch, fast math, legalize, fold, FuseOps + FuseTIR,
    ordered by memory.
    The build, the kernel analysis and the tuner all start with these, so their kernels are the same."""
    from tvm import relax
    from tvm.relax.backend import cpu_generic

    from edgesdk.compile.fast_math import FastMath
    from edgesdk.compile.lookup_tables import MarkLookups

    legalize = []
    for step in cpu_generic.legalize_passes(target):
        legalize.append(step)
        if step.info.name == "AnnotateTIROpPattern":
            legalize.append(MarkLookups())
    # Then the kernels in the order of lowest peak memory (reshapes first become the views they
    # will be, so that the ordering sees what owns memory).
    return [*cpu_generic.library_dispatch_passes(target), FastMath(), *legalize, relax.transform.RewriteDataflowReshape(), order_by_memory()]


def optimize(mod, target_json: dict[str, Any], tuning: str | None = None):
    """Fuse, schedule the kernels (tuned schedules from the ``tuning`` database directory where it
    has them) and lower to VM form for ``target``."""
    import tvm
    from tvm.relax.backend import cpu_generic
    from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline  # the package does not export dataflow_lower_passes

    from edgesdk.compile.empty_constants import EmptyConstantsAllocated
    from edgesdk.compile.schedules import ScheduleKernels

    target = tvm.target.Target(target_json)
    # The CPU pipeline, also for the `c` target, which TVM's default-pipeline table leaves out, with
    # the SDK's schedule rules between fusion and lowering: TVM's own schedules nothing on CPU.
    with target:
        passes = [
            *fusion_passes(target),
            ScheduleKernels(target, tuning),
            *cpu_pipeline.dataflow_lower_passes(target),
            EmptyConstantsAllocated(),
            *with_arena(cpu_generic.finalize_passes(target)),
        ]
        return tvm.transform.Sequential(passes)(mod), target


def with_arena(passes: list) -> list:
    """TVM's finalization passes with edgesdk.compile.arena's planner right after its memory plan,
    and the program it yields recorded (edgesdk.compile.program)."""
    at = next(index for index, step in enumerate(passes) if step.info.name == "StaticPlanBlockMemory")
    return [*passes[: at + 1], plan_arena(), record_program(), *passes[at + 1 :]]


def analyze_kernels(mod, packed: dict[str, str] | None = None) -> ModelAnalysis:
    """The fused kernels in call order (op classes, FLOPs, tensors; ``packed``: what each packed
    weight parameter holds, by name): see edgesdk.compile.kernels."""
    import tvm
    from tvm import relax

    target = tvm.target.Target({"kind": "llvm"})
    with target:
        # RewriteDataflowReshape as in the build: reshapes become views, not kernel calls.
        fused = tvm.transform.Sequential([*fusion_passes(target), relax.transform.RewriteDataflowReshape()])(mod)
    return analyze(fused, packed)


def tuned_kernels(mod) -> list[str]:
    """Names of the kernels ScheduleKernels took from the tuning database."""
    import tvm

    return sorted(gvar.name_hint for gvar, func in mod.functions.items() if isinstance(func, tvm.tirx.PrimFunc) and "edgesdk.tuned" in (func.attrs or {}))


def storage_bytes(mod) -> int:
    """What ``main`` of a lowered module allocates: the sizes of its ``alloc_storage`` calls (the
    arena edgesdk.compile.arena lays out in the kernels' run order, and one per model output)."""
    from tvm import relax

    total = 0
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.vm.alloc_storage":
                total += int(value.args[0].values[0])
    return total


def count_kernels(mod) -> int:
    import tvm

    return sum(isinstance(func, tvm.tirx.PrimFunc) for func in mod.functions.values())


def _include_dirs() -> list[Path]:
    import tvm
    import tvm_ffi

    tvm_root, ffi_root = Path(tvm.__file__).parent, Path(tvm_ffi.__file__).parent
    return [tvm_root / "include", ffi_root / "include", ffi_root / "3rdparty" / "dlpack" / "include"]


def build(
    mod,
    spec: BuildSpec,
    out_dir: Path,
    weights: Sequence[np.ndarray] | None = None,
    io_names: tuple[list[str], list[str]] | None = None,
    quantization: Mapping[str, IoQuantization] | None = None,
) -> BuildResult:
    """Build ``mod`` as ``spec`` says into ``out_dir``; C builds also get a runner without TVM's
    runtime (edgesdk.compile.standalone) when given the ``weights`` and the (input, output) names
    (and the ``quantization`` of integer I/O, for its header)."""
    from tvm import relax

    optimized, target = optimize(mod, spec.target, spec.tuning)
    kernels, arena = count_kernels(optimized), storage_bytes(optimized)
    tuned = tuned_kernels(optimized)
    executable = relax.build(optimized, target, relax_pipeline=None)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = spec.basename
    program = Program.model_validate_json(str(optimized["main"].attrs[PROGRAM_ATTR]))
    if spec.emit == "shared_library":
        executable.export_library(str(out_dir / spec.library_name), fcompile=spec.toolchain.fcompile())
        result = BuildResult(files=[spec.library_name], kernels=kernels, toolchain=spec.toolchain.describe(), tuned=tuned, arena_bytes=arena)
        code = [module for module in executable.mod.imports if module.kind == "llvm"]
        if spec.role == "device" and code:  # none when every node runs on onnxruntime
            code[0].export_library(str(out_dir / spec.kernels_library_name), fcompile=spec.toolchain.fcompile())
            result.files.append(spec.kernels_library_name)
        if spec.standalone:
            if weights is None or io_names is None:
                result.notes.append("no standalone library: no weights given")
            else:
                try:
                    _standalone_library(executable, program, spec, out_dir, weights, io_names, quantization or {}, result)
                except ValueError as exc:  # kernels that need more of TVM's VM or runtime than the runner has
                    result.notes.append(str(exc))
        return result

    kernels_c = "\n".join(module.inspect_source() for module in executable.mod.imports if module.kind == "c")
    if re.search(r"\bhalf\b", kernels_c):
        kernels_c = HALF_TYPE + kernels_c
    (out_dir / f"{stem}.c").write_text(kernels_c)
    # The VM program (which kernel runs when, on which buffers) as text, for the device's runtime,
    # and as data (edgesdk.compile.program) for a runner without it.
    (out_dir / f"{stem}.vm.txt").write_text(executable.as_text())
    (out_dir / PROGRAM_FILE).write_text(program.model_dump_json())
    result = BuildResult(
        files=[f"{stem}.c", f"{stem}.vm.txt", PROGRAM_FILE], kernels=kernels, toolchain=spec.toolchain.describe(), tuned=tuned, arena_bytes=arena
    )
    runner: list[str] = []
    if weights is not None and io_names is not None:
        try:
            plan = device_plan(program, kernels_c)
        except ValueError as exc:  # kernels that need more of TVM's VM or runtime than the runner has
            result.notes.append(str(exc))
        else:
            runner = write_runner(out_dir, stem, program, weights, _include_dirs(), *io_names, quantization or {}, kernels_c, plan)
            result.files += runner
            result.device_ram_bytes = plan.ram_bytes
    why_not = spec.toolchain.missing()
    if why_not is None:
        # With a runner, against the headers the artifact carries: what a firmware build will see.
        includes = [str(out_dir), str(out_dir / "include")] if runner else [str(directory) for directory in _include_dirs()]
        objects = []
        for source in [f"{stem}.c", *(name for name in runner if name.endswith("_runner.c"))]:
            objects.append(source.replace(".c", ".o"))
            spec.toolchain.compile_object(str(out_dir / objects[-1]), str(out_dir / source), includes)
        result.files += objects
        result.section_sizes = spec.toolchain.section_sizes([str(out_dir / name) for name in objects])
        if runner:
            result.undefined_symbols = undefined_symbols([out_dir / name for name in objects])
    else:
        result.notes.append(f"no object file: {why_not}")
        result.toolchain = f"none ({why_not})"
    return result


def _standalone_library(
    executable,
    program: Program,
    spec: BuildSpec,
    out_dir: Path,
    weights,
    io_names: tuple[list[str], list[str]],
    quantization: Mapping[str, IoQuantization],
    result: BuildResult,
) -> None:
    """The kernels as TVM's LLVM backend compiled them (an object), the runner compiled for the
    same target, both in ``lib<model>.a``; with the header, the headers it needs and the program.
    Adds them, the RAM they take and the symbols they need to ``result``."""
    stem = spec.basename
    kernels = [module for module in executable.mod.imports if module.kind == "llvm"]
    ir = "\n".join(module.inspect_source("ll") for module in kernels)  # their workspace requests
    plan = device_plan(program, ir)
    objects = []
    for index, module in enumerate(kernels):
        objects.append(out_dir / f"{stem}_kernels{index}.o")
        module.write_to_file(str(objects[-1]))
    (out_dir / PROGRAM_FILE).write_text(program.model_dump_json())
    runner = write_runner(out_dir, stem, program, weights, _include_dirs(), *io_names, quantization, ir, plan, fragment=False)
    runner_c = next(name for name in runner if name.endswith("_runner.c"))
    objects.append(out_dir / runner_c.replace(".c", ".o"))
    spec.toolchain.compile_object(str(objects[-1]), str(out_dir / runner_c), [str(out_dir), str(out_dir / "include")], ["-O2", "-fPIC"])
    library = f"lib{identifier(stem)}.a"
    spec.toolchain.archive(str(out_dir / library), [str(path) for path in objects])
    result.undefined_symbols = undefined_symbols(objects)
    for path in objects:
        path.unlink()
    result.files += [library, *runner, PROGRAM_FILE]
    result.device_ram_bytes = plan.ram_bytes


def save_weights(path: Path, weights: Sequence[np.ndarray], names: Sequence[str]) -> None:
    """Weights as npz, keys ``p0000_name`` so that sorted order is argument order."""
    arrays = {f"p{index:04d}_{name}": array for index, (name, array) in enumerate(zip(names, weights, strict=False))}
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub: mypy matches **arrays against allow_pickle: bool


def model_io(model_path: Path) -> tuple[list[str], dict[str, IoQuantization]]:
    """The model's output names, and the scale and zero point of its quantized integer I/O."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    return [output.name for output in proto.graph.output], io_quantization(proto)


def maybe_crash(stage: str, environ: Mapping[str, str] = os.environ) -> None:  # noqa: B006
    """Test hook: EDGESDK_TEST_CRASH=<stage> makes the worker segfault at that stage."""
    if environ.get("EDGESDK_TEST_CRASH") == stage:
        import ctypes

        ctypes.string_at(0)
