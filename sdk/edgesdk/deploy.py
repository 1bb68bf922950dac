"""`edgesdk.deploy`: one model to one device, as a verified artifact directory.

The stages: load and prepare the model (edgesdk.model) -> find the device's backend -> import and
build through TVM in a worker process, for the device and for this host (edgesdk.tvm_worker),
reusing cached builds -> run the host build against onnxruntime (edgesdk.verify) -> write the
artifact beside its destination and rename it into place (edgesdk.artifact).
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgesdk import plugin_manager
from edgesdk.artifact import (
    ANALYSIS_FILE,
    INPUTS_FILE,
    MODEL_FILE,
    PARAMS_FILE,
    Artifact,
    HostRunner,
    check_destination,
    failure_message,
    hash_tree,
    load_artifact,
    place,
    staging_dir,
)
from edgesdk.build_cache import BuildCache, cache_key
from edgesdk.device_registry import get_device
from edgesdk.errors import CheckFailed, UserInputError
from edgesdk.extensions import Backend
from edgesdk.kernels import ModelAnalysis
from edgesdk.lowering import PIPELINE_VERSION, BuildResult, BuildSpec
from edgesdk.manifest import (
    MANIFEST_NAME,
    BuildInfo,
    Manifest,
    ModelInfo,
    PartitionInfo,
    QuantizationInfo,
    QuantizedLayer,
    TensorInfo,
    VerificationInfo,
)
from edgesdk.model import Model, random_inputs
from edgesdk.partition import ARITHMETIC_CLASSES, compute_dtype, partition
from edgesdk.quantization.accuracy import measure_agreement
from edgesdk.quantization.packed_kernels import packed_weight_dtype
from edgesdk.precision import RECIPE_OPTIONS, Precision, float_tolerance, prepare, recipe, stray_share, weight_bytes
from edgesdk.profiles import DeviceProfile
from edgesdk.simulate import simulate
from edgesdk.tensors import check_inputs, load_npz, save_npz
from edgesdk.toolchains import host_toolchain
from edgesdk.tvm_worker import Job, RunTask, run_in_worker
from edgesdk.verify import reference_outputs, verification
from edgesdk.versions import edgesdk_version, tvm_version

OPTIONS = {*RECIPE_OPTIONS, "timeout_s", "cache", "profiles_dir", "seed", "on_stage", "unit", "fallback"}


def find_backend(profile: DeviceProfile) -> Backend:
    serving = [backend for _, backend in plugin_manager.collect("edgesdk_backends") if isinstance(backend, Backend) and backend.serves(profile)]
    if not serving:
        raise UserInputError(
            f"device '{profile.id}': no installed plugin provides its backend '{profile.backend_name}'",
            hint="`edgesdk plugins` lists what is installed; a profile's `backend` field names the backend it needs",
        )
    return serving[0]


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


def _host_target(model: Model) -> dict[str, Any]:
    """The simulation build's target: spelled like the pc profile's, so that a pc build and a host
    build share a cache entry (and, for a float16 model, F16C where this CPU has it)."""
    target: dict[str, Any] = {"kind": "llvm", "mtriple": f"{_host_arch()}-linux-gnu"}
    return _half_target(target, model) if "f16c" in _host_features() else target


# x86-64 has no float16 arithmetic: LLVM computes each float16 op in float32 and rounds it back,
# and on baseline x86-64 each conversion is a library call. Unrolled, one float16 kernel becomes
# thousands of calls (a PP-OCRv4 rec conv: 19,000) and LLVM's codegen spends minutes on each (PP-OCR
# cls host build 232 s -> 19 s with F16C, bit-identical outputs). F16C converts in one instruction
# with the same rounding: x86-64 builds of a model that computes in float16 use it.
HALF_CONVERSION = {"x86_64": "+f16c"}


def _half_target(target: dict[str, Any], model: Model) -> dict[str, Any]:
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


def _inputs(model: Model, inputs: str | os.PathLike | Mapping[str, np.ndarray] | None, seed: int) -> tuple[dict[str, np.ndarray], bool]:
    if inputs is None:
        return random_inputs(model.inputs, seed), False
    if isinstance(inputs, Mapping):
        return check_inputs(inputs, model.inputs, "inputs"), True
    return check_inputs(load_npz(inputs), model.inputs, str(inputs)), True


def _read_build(path: Path) -> BuildResult:
    return BuildResult.model_validate_json((path / "build.json").read_text())


def _build_key(model: Model, spec: BuildSpec) -> str:
    return cache_key(
        # Not the role: a device build that targets this host is the host build.
        {"model": model.sha256, "spec": spec.model_dump(mode="json", exclude={"role"}), "edgesdk": edgesdk_version(), "tvm": tvm_version(), "pipeline": PIPELINE_VERSION}
    )


@dataclass
class Compiled:
    model_dir: Path  # params.npz and analysis.json
    builds: list[tuple[Path, BuildResult]]  # per spec: its directory and what it holds
    cached: bool
    seconds: float
    outputs: dict[str, np.ndarray] | None  # of the simulation on the verification inputs, if run


def compile_model(
    model: Model,
    specs: Sequence[BuildSpec],
    cache: BuildCache,
    inputs: dict[str, np.ndarray] | None,
    *,
    timeout_s: float | None,
    on_stage: Callable[[str], None],
) -> Compiled:
    """Weights, kernel analysis and builds for ``model``: from the cache, or made by the worker
    (then cached). With no specs, only the model is imported and analysed.

    A worker that compiles also runs the simulation build (the last spec) on ``inputs``, saving a
    second start.
    """
    model_key = cache_key({"model": model.sha256, "tvm": tvm_version(), "pipeline": PIPELINE_VERSION})
    keys = [_build_key(model, spec) for spec in specs]
    model_dir = cache.get("models", model_key)
    found = [cache.get("builds", key) for key in keys]
    if model_dir is not None and all(found):
        return Compiled(model_dir, [(path, _read_build(path)) for path in found], True, 0.0, None)

    scratch = cache.staging()
    try:
        (scratch / "model.onnx").write_bytes(model.serialized)
        todo = [(index, spec) for index, spec in enumerate(specs) if not found[index]]
        job = Job(
            model=str(scratch / "model.onnx"),
            shapes={spec.name: list(spec.shape) for spec in model.inputs},
            model_dir=str(scratch / "model"),
            builds=[(spec, str(scratch / f"build{index}")) for index, spec in todo],
        )
        if specs and inputs is not None:
            simulation = found[-1] or scratch / f"build{len(specs) - 1}"
            save_npz(scratch / "inputs.npz", inputs)
            job.run = RunTask(
                library=str(simulation / specs[-1].library_name),
                weights=str(scratch / "model" / PARAMS_FILE),
                inputs=str(scratch / "inputs.npz"),
                outputs=str(scratch / "outputs.npz"),
                output_names=[spec.name for spec in model.outputs],
            )
        result = run_in_worker(job, scratch / "job", model_name=model.name, timeout_s=timeout_s, on_stage=on_stage)
        outputs = load_npz(scratch / "outputs.npz") if job.run else None
        for (index, _), built in zip(todo, result.builds):
            (scratch / f"build{index}" / "build.json").write_text(built.model_dump_json())
            found[index] = cache.put("builds", keys[index], scratch / f"build{index}")
        model_dir = cache.put("models", model_key, scratch / "model")
        return Compiled(model_dir, [(path, _read_build(path)) for path in found], False, result.seconds, outputs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def deploy(
    model: str | os.PathLike | onnx.ModelProto,
    device: str,
    out: str | os.PathLike | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    quantize: str | None = None,
    calibration: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    inputs: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    **options: Any,
) -> Artifact:
    """Compile ``model`` for ``device`` through TVM, verify it against onnxruntime, write the artifact.

    Options: ``range_method``, ``equalize``, ``group_size``, ``bias_correction``, ``vq_dim``, ``vq_bits``,
    ``adaround_seconds`` (see edgesdk.precision.recipe),
    ``timeout_s`` (compile time limit), ``cache`` (False to rebuild), ``profiles_dir``,
    ``seed`` (of the random verification inputs), ``on_stage`` (a callable told each stage's name),
    ``unit`` (place every kernel on this compute unit), ``fallback`` (False: fail with exit 1
    instead of letting kernels fall back from their preferred unit).
    Raises ``CheckFailed`` (exit 1) after writing the artifact when verification fails.
    """
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise UserInputError(f"deploy: unknown option(s) {', '.join(unknown)}", hint=f"options are: {', '.join(sorted(OPTIONS))}")
    on_stage: Callable[[str], None] = options.get("on_stage") or (lambda stage: None)

    on_stage("load")
    profile = get_device(device, options.get("profiles_dir"))
    backend = find_backend(profile)
    chosen = recipe(quantize, calibration, profile, **{name: value for name, value in options.items() if name in RECIPE_OPTIONS})
    scheme = chosen.scheme
    if scheme != "none":
        on_stage("load and quantize")
    precision = prepare(model, input_shapes, chosen, calibration)
    prepared = precision.original
    verify_inputs, user_inputs = _inputs(prepared, inputs, int(options.get("seed", 0)))
    inputs_kind = "user" if user_inputs else "random"
    if precision.samples and inputs is None:
        verify_inputs, inputs_kind = precision.samples[0], "calibration"  # in the calibrated range, unlike random inputs
    # The precision is in the default name: an int8 deploy must not replace the float artifact.
    destination = Path(out) if out is not None else Path("build") / "-".join([prepared.name, profile.id, *([scheme] if scheme != "none" else [])])
    check_destination(destination)
    missing = backend.toolchain.missing()
    if missing and backend.emit == "shared_library":
        raise UserInputError(f"device '{profile.id}': cannot link its library: {missing}")

    device_target = _half_target(profile.target, precision.compiled)
    specs = [BuildSpec(role="device", target=device_target, emit=backend.emit, toolchain=backend.toolchain, basename=prepared.name)]
    if not runs_here(device_target):
        specs.append(BuildSpec(role="host", target=_host_target(precision.compiled), emit="shared_library", toolchain=host_toolchain(), basename=prepared.name))
    # cache=False compiles into a throw-away cache, so both paths are one.
    private = None if options.get("cache", True) else Path(tempfile.mkdtemp(prefix="edgesdk-nocache-"))
    staged = None
    try:
        compiled = compile_model(
            precision.compiled, specs, BuildCache(private), verify_inputs, timeout_s=options.get("timeout_s"), on_stage=lambda stage: on_stage(f"compile: {stage}")
        )
        on_stage("simulate")
        analysis = ModelAnalysis.model_validate_json((compiled.model_dir / ANALYSIS_FILE).read_text())
        placement = partition(analysis, profile, unit=options.get("unit"), fallback=options.get("fallback", True))
        estimate = simulate(analysis, placement, profile)
        on_stage("verify")
        staged = staging_dir(destination)
        simulation = _assemble(staged, precision.reference, compiled, specs, verify_inputs)
        outputs = compiled.outputs
        if outputs is None:  # cached builds: run the simulation now, isolated like a compile
            runner = HostRunner(staged / simulation, staged / PARAMS_FILE, prepared.inputs, [spec.name for spec in prepared.outputs])
            outputs = runner.run(verify_inputs, isolated=True)
        result = verification(
            outputs, reference_outputs(precision.reference.serialized, verify_inputs), inputs=inputs_kind,
            float_rtol=float_tolerance(scheme, precision.reference.proto), stray_share=stray_share(scheme),
        )
        on_stage("write")
        manifest = _manifest(profile, backend, prepared, precision, analysis, specs, compiled, simulation, result, files=hash_tree(staged))
        manifest.partition, manifest.estimate = placement.info(), estimate
        if set(placement.units) - {_cpu_unit(profile)}:
            manifest.build.notes.append(
                "the device code is CPU code; kernels placed on other units are simulated there "
                "(edgesdk does not generate NPU/GPU code yet)"
            )
        (staged / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
        place(staged, destination)
    finally:
        for scratch in (staged, private):
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    if not result.passed:
        raise CheckFailed(failure_message(destination, result))
    return load_artifact(destination)


def _assemble(staged: Path, prepared: Model, compiled: Compiled, specs: Sequence[BuildSpec], inputs: dict[str, np.ndarray]) -> str:
    """Copy the model, weights, builds and inputs into ``staged``; return the simulation library."""
    (staged / MODEL_FILE).write_bytes(prepared.serialized)
    for name in (PARAMS_FILE, ANALYSIS_FILE):
        shutil.copyfile(compiled.model_dir / name, staged / name)
    for (source, _), spec in zip(compiled.builds, specs):
        shutil.copytree(source, staged / spec.role, ignore=shutil.ignore_patterns("build.json"))
    (staged / "verification").mkdir()
    save_npz(staged / INPUTS_FILE, inputs)
    # The last build is the host's; with none, the device build runs here (pc) and simulates.
    return f"{specs[-1].role}/{compiled.builds[-1][1].files[0]}"


def _manifest(
    profile: DeviceProfile,
    backend: Backend,
    prepared: Model,
    precision: Precision,
    analysis: ModelAnalysis,
    specs: Sequence[BuildSpec],
    compiled: Compiled,
    simulation: str,
    result: VerificationInfo,
    files: dict[str, str],
) -> Manifest:
    device_build = compiled.builds[0][1]
    return Manifest(
        edgesdk_version=edgesdk_version(),
        tvm_version=tvm_version(),
        created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=profile.id,
        target=specs[0].target,  # what was compiled: the profile's, + F16C for a float16 model on x86-64
        model=ModelInfo(
            name=prepared.name,
            sha256=prepared.source_sha256,
            prepared_sha256=prepared.sha256,
            opset=prepared.opset,
            inputs=[TensorInfo(**spec.to_json()) for spec in prepared.inputs],
            outputs=[TensorInfo(**spec.to_json()) for spec in prepared.outputs],
        ),
        quantization=_quantization_info(prepared, precision, analysis),
        files=files,
        # What the device code runs on; deploy() replaces it with the simulated placement.
        partition=PartitionInfo(units={_cpu_unit(profile): device_build.kernels}),
        verification=result,
        build=BuildInfo(
            backend=backend.name,
            toolchain=device_build.toolchain,
            device_files=[f"device/{name}" for name in device_build.files],
            simulation_library=simulation,
            kernels=device_build.kernels,
            cache_key=_build_key(precision.compiled, specs[0]),
            cached=compiled.cached,
            compile_seconds=round(compiled.seconds, 3),
            notes=[*precision.compiled.notes[len(prepared.notes) :], *_target_notes(profile, specs[0]), *device_build.notes],
        ),
    )


def _target_notes(profile: DeviceProfile, spec: BuildSpec) -> list[str]:
    added = [feature for feature in spec.target.get("mattr", []) if feature not in profile.target.get("mattr", [])]
    return [f"float16 computation: the device code also uses {', '.join(added)} (the CPU must have it)"] if added else []


def _quantization_info(prepared: Model, precision: Precision, analysis: ModelAnalysis) -> QuantizationInfo:
    layers = [
        QuantizedLayer(
            name=kernel.name,
            op_class=kernel.op_class,
            weight_dtype=packed_weight_dtype(kernel.name)
            or max((t for t in kernel.inputs if t.source in ("weight", "constant")), key=lambda t: t.bytes, default=kernel.outputs[0]).dtype,
            compute_dtype=compute_dtype(kernel),
        )
        for kernel in analysis.kernels
        if kernel.op_class in ARITHMETIC_CLASSES
    ]
    return QuantizationInfo(
        scheme=precision.scheme,
        range_method=precision.recipe.range_method,
        group_size=precision.recipe.group_size,
        equalize=precision.recipe.equalize,
        bias_correction=precision.recipe.bias_correction,
        vq_dim=precision.recipe.vq_dim,
        vq_bits=precision.recipe.vq_bits,
        adaround_seconds=precision.recipe.adaround_seconds,
        weight_bytes=weight_bytes(precision.compiled.proto),
        float_weight_bytes=weight_bytes(prepared.proto),
        layers=layers,
        # Only deploys measure it (profile needs no accuracy): both models run on every sample.
        accuracy=measure_agreement(precision.compiled.serialized, prepared.serialized, precision.samples) if precision.samples else None,
    )


def _cpu_unit(profile: DeviceProfile) -> str:
    return next((name for name, unit in profile.compute_units.items() if unit.kind == "cpu"), next(iter(profile.compute_units)))
