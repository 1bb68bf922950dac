"""`edgesdk deploy`: one model to one device, as a verified artifact directory.

The stages: the front half (edgesdk.verbs.pipeline: device, recipe, load and quantize) -> find the
device's backend -> import and build through TVM in a worker process, for the device and for this
host (edgesdk.compile.compiler), reusing cached builds -> partition and simulate -> run the host
build against onnxruntime (edgesdk.artifact.verification) -> write the artifact beside its
destination and rename it into place (edgesdk.artifact.files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgesdk.artifact.directory import Artifact, failure_message, load_artifact
from edgesdk.artifact.files import (
    ANALYSIS_FILE,
    INPUTS_FILE,
    MODEL_FILE,
    REPORT_FILE,
    WEIGHTS_FILE,
    check_destination,
    destination_lock,
    hash_tree,
    place,
    sha256_file,
    staging_dir,
)
from edgesdk.artifact.manifest import (
    MANIFEST_NAME,
    BuildInfo,
    Manifest,
    ModelInfo,
    PartitionInfo,
    QuantizationInfo,
    QuantizedLayer,
    SectionSizes,
    TensorInfo,
    VerificationInfo,
)
from edgesdk.artifact.verification import verify_against_reference
from edgesdk.compile import patches
from edgesdk.compile.build_cache import DIGEST_FILE, BuildCache
from edgesdk.compile.compiler import Compiled, compile_model
from edgesdk.compile.divergence import diverging_nodes
from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.compile.lowering import BuildSpec
from edgesdk.compile.onnxruntime_segments import SEGMENTS_DIR
from edgesdk.compile.targets import half_target, host_target, runs_here
from edgesdk.compile.tuning_db import build_fields
from edgesdk.compile.worker import WorkerFailed
from edgesdk.devices.profile import DeviceProfile
from edgesdk.devices.registry import get_device
from edgesdk.errors import CheckFailed, DoesNotFit, UserInputError
from edgesdk.frontend.model import Model, random_inputs
from edgesdk.frontend.tensors import check_inputs, load_npz, save_npz
from edgesdk.plugin import manager as plugin_manager
from edgesdk.plugin.kinds import Backend
from edgesdk.plugin.passes import choose
from edgesdk.plugin.toolchains import host_toolchain
from edgesdk.progress import relay, reporting, stage
from edgesdk.quantization.accuracy import measure_agreement
from edgesdk.quantization.layer_error import layer_errors
from edgesdk.quantization.recipe import recipe
from edgesdk.quantization.schemes import Precision, weight_bytes
from edgesdk.report.html import cost_html
from edgesdk.simulate.budget import activation_bytes, over_budget
from edgesdk.simulate.cost_report import Estimate, Fallback, PatchInfo, byte_size
from edgesdk.simulate.partition import ARITHMETIC_CLASSES, Partition, compute_dtype
from edgesdk.training.origin import training_origin
from edgesdk.verbs.pipeline import checked_options, cpu_unit, estimated, load_precision, onnxruntime_fallbacks, read_analysis, unsupported_on
from edgesdk.versions import edgesdk_version, tvm_version

# Why a write can fail that is not edgesdk's fault: the disk, a quota, a read-only or forbidden place.
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# Rounds of moving the nodes whose TVM result differs from onnxruntime's there (pc only): each
# round locates where the numbers part, the next looks again after them.
LOCATE_ROUNDS = 3
# Builds tried with the first stage in patches: each plans for the RAM the previous one overshot.
PATCH_ATTEMPTS = 3
OWN_OPTIONS = ("timeout_s", "cache", "profiles_dir", "seed", "on_stage", "unit", "fallback", "passes", "standalone")


def find_backend(profile: DeviceProfile) -> Backend:
    """The backend that builds for ``profile``; two plugins offering one backend name is an error."""
    offered = [(plugin, backend) for plugin, backend in plugin_manager.collect("edgesdk_backends") if isinstance(backend, Backend)]
    backends = plugin_manager.unique(offered, "backend", lambda backend: backend.name)
    if profile.backend_name not in backends:
        raise UserInputError(
            f"device '{profile.id}': no installed plugin provides its backend '{profile.backend_name}'",
            hint="`edgesdk plugins` lists what is installed; a profile's `backend` field names the backend it needs",
        )
    return backends[profile.backend_name][1]


def _inputs(model: Model, arrays: Mapping[str, np.ndarray] | None, origin: str, seed: int) -> tuple[dict[str, np.ndarray], bool]:
    if arrays is None:
        return random_inputs(model.inputs, seed), False
    # Inputs that set a shape are part of the model now (Model.bound_inputs).
    return check_inputs({name: array for name, array in arrays.items() if name not in model.bound_inputs}, model.inputs, origin), True


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
    ``adaround_seconds`` (see edgesdk.quantization.recipe.recipe),
    ``timeout_s`` (compile time limit), ``cache`` (False to rebuild), ``profiles_dir``,
    ``seed`` (of the random verification inputs), ``on_stage`` (a callable told each stage's name),
    ``unit`` (place every kernel on this compute unit), ``fallback`` (False: fail with exit 1
    instead of letting kernels fall back from their preferred unit), ``passes`` (plugin passes to
    run, ``{name: config}`` with a dict, JSON text or None for each config; edgesdk.plugin.passes),
    ``standalone`` (True: devices with a shared library also get ``lib<model>.a``, the kernels and a
    runner without TVM's runtime, with its header; the mcu always has its C runner).
    Raises ``CheckFailed`` (exit 1) after writing the artifact when verification fails.
    """
    recipe_options, options = checked_options(options, "deploy", OWN_OPTIONS)
    with reporting(options.get("on_stage")), contextlib.ExitStack() as held:
        stage("load")
        profile = get_device(device, options.get("profiles_dir"))
        backend = find_backend(profile)
        chosen = recipe(quantize, calibration, profile, **recipe_options)
        passes = choose(options.get("passes"))
        scheme = chosen.scheme
        if scheme != "none":
            stage("load and quantize")
        examples = load_npz(inputs) if inputs is not None and not isinstance(inputs, Mapping) else inputs
        precision = load_precision(model, input_shapes, chosen, calibration, passes, examples=examples)
        prepared = precision.original
        verify_inputs, user_inputs = _inputs(prepared, examples, "inputs" if isinstance(inputs, Mapping) else str(inputs), int(options.get("seed", 0)))
        inputs_kind = "user" if user_inputs else "random"
        if precision.samples and inputs is None:
            verify_inputs, inputs_kind = precision.samples[0], "calibration"  # in the calibrated range, unlike random inputs
        # The precision is in the default name: an int8 deploy must not replace the float artifact.
        destination = Path(out) if out is not None else Path("build") / "-".join([prepared.name, profile.id, *([scheme] if scheme != "none" else [])])
        check_destination(destination)
        held.enter_context(destination_lock(destination))  # until the artifact is in place
        missing = backend.toolchain.missing()
        if missing and backend.emit == "shared_library":
            raise UserInputError(f"device '{profile.id}': cannot link its library: {missing}")

        device_target = half_target(profile.target, precision.compiled)
        standalone = bool(options.get("standalone")) and backend.emit == "shared_library"
        # onnxruntime runs what TVM cannot lower only where the device's own library runs here; a
        # program without TVM's runtime cannot call it.
        onnxruntime = onnxruntime_allowed(profile, backend, device_target) and not standalone
        specs = [
            BuildSpec(
                role="device",
                target=device_target,
                emit=backend.emit,
                toolchain=backend.toolchain,
                basename=prepared.name,
                standalone=standalone,
                **build_fields(device_target),
            )
        ]
        if not runs_here(device_target):
            simulated = host_target(precision.compiled)
            specs.append(
                BuildSpec(role="host", target=simulated, emit="shared_library", toolchain=host_toolchain(), basename=prepared.name, **build_fields(simulated))
            )
        # cache=False compiles into a throw-away cache, so both paths are one.
        private = None if options.get("cache", True) else Path(tempfile.mkdtemp(prefix="edgesdk-nocache-"))
        staged = None
        try:
            cache = BuildCache(private)
            timeout_s, on_compile_stage = options.get("timeout_s"), relay("compile: ")  # called from the compiler's threads

            def build(model: Model, diverging: Mapping[str, str] | None = None) -> tuple[Compiled, ModelAnalysis, Partition, Estimate]:
                hint = "--standalone code cannot call onnxruntime; deploy without it" if standalone and backend.onnxruntime_fallback else None
                with unsupported_on(profile, hint):
                    compiled = compile_model(
                        model,
                        specs,
                        cache,
                        verify_inputs,
                        timeout_s=timeout_s,
                        on_stage=on_compile_stage,
                        passes=passes,
                        onnxruntime=onnxruntime,
                        diverging=diverging,
                    )
                stage("simulate")
                analysis = read_analysis(compiled.model_dir)
                placement, estimate = estimated(analysis, profile, unit=options.get("unit"), fallback=options.get("fallback", True))
                if estimate.memory is not None:
                    estimate.memory.arena_bytes = compiled.builds[0][1].arena_bytes
                    estimate.memory.device_ram_bytes = compiled.builds[0][1].device_ram_bytes
                return compiled, analysis, placement, estimate

            compiled, analysis, placement, estimate = build(precision.compiled)
            too_big = over_budget(estimate, analysis, profile)
            if too_big is not None and profile.memory.flash_bytes is not None:
                # Too big for the MCU's RAM: its first stage run patch by patch may fit (MCUNetV2).
                ram, unpatched_bytes = profile.memory.dram_bytes, activation_bytes(estimate)
                limit = ram
                for _attempt in range(PATCH_ATTEMPTS):
                    found = patches.plan(precision.compiled.proto, limit)
                    if found is None:
                        break
                    patched, plan = found
                    grid = f"{plan.grid[0]}x{plan.grid[1]} patches"
                    if plan.estimated_peak_bytes > limit:
                        too_big = (f"{too_big[0]}; with its first stage in {grid} it would still need about {byte_size(plan.estimated_peak_bytes)}", too_big[1])
                        break
                    stage("patch-based first stage")
                    compiled, analysis, placement, estimate = build(dataclasses.replace(precision.compiled, proto=patched))
                    assert estimate.memory is not None  # a fresh build is ordered
                    estimate.memory.patches = PatchInfo.of(plan, unpatched_bytes, activation_bytes(estimate))
                    too_big = over_budget(estimate, analysis, profile)
                    if too_big is None:
                        break
                    too_big = (f"{too_big[0]}, even with its first stage in {grid}", too_big[1])
                    # The code needs more than the tensors the plan counts (the kernels' scratch, the
                    # arena's gaps): leave that much room next time.
                    limit = ram - (activation_bytes(estimate) - plan.estimated_peak_bytes)
            if too_big is not None:
                raise DoesNotFit(*too_big)  # before anything is written
            stage("verify")

            def verified(compiled: Compiled) -> VerificationInfo:
                assert compiled.outputs is not None  # compile_model runs the simulation when given inputs
                return verify_against_reference(compiled.outputs, precision.reference.serialized, verify_inputs, inputs_kind=inputs_kind, scheme=scheme)

            result = verified(compiled)
            diverging: dict[str, str] = {}
            # A relax-stage plugin pass rewrote TVM's code: a difference is the pass's, to report, not to move away.
            locate = onnxruntime and not result.passed and not any(choice.stage == "relax" for choice in passes)
            for _round in range(LOCATE_ROUNDS if locate else 0):
                # TVM's numbers differ from onnxruntime's: the nodes where they part run on onnxruntime.
                stage("locate the nodes that differ")
                located = diverging_nodes(
                    precision.compiled,
                    specs[-1],
                    cache,
                    verify_inputs,
                    scheme=scheme,
                    diverging=diverging,
                    timeout_s=timeout_s,
                    on_stage=on_compile_stage,
                    passes=passes,
                )
                if not located:
                    break
                diverging |= located
                try:
                    rebuilt = build(precision.compiled, diverging)
                except (UserInputError, WorkerFailed):  # a node onnxruntime cannot take alone: keep TVM's build
                    break
                retried = verified(rebuilt[0])
                if retried.passed:
                    (compiled, analysis, placement, estimate), result = rebuilt, retried
                    break
            staged = staging_dir(destination)
            simulation = _assemble(staged, precision.reference, compiled, specs, verify_inputs)
            stage("write")
            manifest = _manifest(profile, backend, prepared, precision, analysis, specs, compiled, simulation, result, files=hash_tree(staged))
            manifest.partition, manifest.estimate, manifest.passes = placement.info(), estimate, passes
            _record_segments(manifest, onnxruntime_fallbacks(compiled.model_dir, profile))
            if set(placement.units) - {cpu_unit(profile)}:
                manifest.build.notes.append(
                    "the device code is CPU code; kernels placed on other units are simulated there (edgesdk does not generate NPU/GPU code yet)"
                )
            (staged / REPORT_FILE).write_text(cost_html(manifest.model.name, profile, estimate, manifest.partition, manifest=manifest), encoding="utf-8")
            manifest.files[REPORT_FILE] = sha256_file(staged / REPORT_FILE)
            (staged / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
            place(staged, destination)
        except OSError as exc:
            if exc.errno not in WRITE_ERRORS:
                raise
            raise UserInputError(
                f"{destination}: cannot write the artifact: {exc.strerror}", hint="nothing was written; free space or choose another -o"
            ) from None
        finally:
            for scratch in (staged, private):
                if scratch is not None:
                    shutil.rmtree(scratch, ignore_errors=True)
        if not result.passed:
            raise CheckFailed(failure_message(destination, result))
        return load_artifact(destination)


def _copy_build(source: Path, target: Path) -> None:
    """A cached build's files (not its cache records) copied into the artifact. (Not
    shutil.copytree, which wraps a full disk's OSError into a list that hides its errno.)"""
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.name not in ("build.json", DIGEST_FILE):
            copy = target / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)


def _assemble(staged: Path, prepared: Model, compiled: Compiled, specs: Sequence[BuildSpec], inputs: dict[str, np.ndarray]) -> str:
    """Copy the model, weights, builds and inputs into ``staged``; return the simulation library."""
    (staged / MODEL_FILE).write_bytes(prepared.serialized)
    for name in (WEIGHTS_FILE, ANALYSIS_FILE):
        shutil.copyfile(compiled.model_dir / name, staged / name)
    if (compiled.model_dir / SEGMENTS_DIR).is_dir():
        _copy_build(compiled.model_dir / SEGMENTS_DIR, staged / SEGMENTS_DIR)
    for (source, _), spec in zip(compiled.builds, specs, strict=False):
        _copy_build(source, staged / spec.role)
    (staged / "verification").mkdir()
    save_npz(staged / INPUTS_FILE, inputs)
    # The last build is the host's; with none, the device build runs here (pc) and simulates.
    return f"{specs[-1].role}/{compiled.builds[-1][1].files[0]}"


def _record_segments(manifest: Manifest, fallbacks: Sequence[Fallback]) -> None:
    """The nodes onnxruntime runs, among the partition's fallbacks, with a note on what the
    estimate leaves out."""
    manifest.partition.fallbacks += fallbacks
    if fallbacks:
        manifest.build.notes.append(
            f"{len(fallbacks)} node(s) run on onnxruntime, called from the compiled code ({SEGMENTS_DIR}/): the artifact needs onnxruntime "
            "where it runs, and their time is not in the estimate"
        )


def onnxruntime_allowed(profile: DeviceProfile, backend: Backend, target: dict) -> bool:
    """Whether a node TVM cannot lower may run on onnxruntime for ``profile``: its backend allows
    it and the code (for ``target``) runs on this host, beside onnxruntime."""
    return backend.onnxruntime_fallback and runs_here(target)


def onnxruntime_runs_nodes(profile: DeviceProfile) -> bool:
    """``onnxruntime_allowed`` for the device's own backend and target (what profile and compare analyse)."""
    return onnxruntime_allowed(profile, find_backend(profile), profile.target)


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
    sizes = device_build.section_sizes
    kernels_library = specs[0].kernels_library_name if specs[0].kernels_library_name in device_build.files else None
    return Manifest(
        edgesdk_version=edgesdk_version(),
        tvm_version=tvm_version(),
        created_utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        device=profile.id,
        target=specs[0].target,  # what was compiled: the profile's, + F16C for a float16 model on x86-64
        model=ModelInfo(
            name=prepared.name,
            sha256=prepared.source_sha256,
            prepared_sha256=prepared.sha256,
            opset=prepared.opset,
            inputs=[TensorInfo(**spec.to_json()) for spec in prepared.inputs],
            outputs=[TensorInfo(**spec.to_json()) for spec in prepared.outputs],
            bound_inputs={name: value.ravel().tolist() for name, value in prepared.bound_inputs.items()},
            trained=training_origin(precision.original.proto),
        ),
        quantization=_quantization_info(prepared, precision, analysis, _stored_bytes(compiled.model_dir / WEIGHTS_FILE)),
        files=files,
        # What the device code runs on; deploy() replaces it with the simulated placement.
        partition=PartitionInfo(units={cpu_unit(profile): device_build.kernels}),
        verification=result,
        build=BuildInfo(
            backend=backend.name,
            toolchain=device_build.toolchain,
            device_files=[*(f"device/{name}" for name in device_build.files if name != kernels_library), WEIGHTS_FILE],
            simulation_library=simulation,
            kernels_library=f"device/{kernels_library}" if kernels_library else None,
            kernels=device_build.kernels,
            cache_key=compiled.keys[0],
            cached=compiled.cached,
            compile_seconds=round(compiled.seconds, 3),
            compile_stages=compiled.stages,
            tuned_kernels=device_build.tuned,
            notes=[*precision.compiled.notes, *_target_notes(profile, specs[0]), *device_build.notes],
            section_sizes=SectionSizes(text_bytes=sizes[0], data_bytes=sizes[1], bss_bytes=sizes[2]) if sizes else None,
            undefined_symbols=device_build.undefined_symbols,
        ),
    )


def _target_notes(profile: DeviceProfile, spec: BuildSpec) -> list[str]:
    added = [feature for feature in spec.target.get("mattr", []) if feature not in profile.target.get("mattr", [])]
    return [f"float16 computation: the device code also uses {', '.join(added)} (the CPU must have it)"] if added else []


def _stored_bytes(weights_file: Path) -> int:
    """Bytes of the weights as the artifact stores them (packed int4, float16 scales...)."""
    with np.load(weights_file, allow_pickle=False) as arrays:
        return sum(arrays[name].nbytes for name in arrays.files)


def _quantization_info(prepared: Model, precision: Precision, analysis: ModelAnalysis, stored_bytes: int) -> QuantizationInfo:
    layers = [
        QuantizedLayer(
            name=kernel.name,
            op_class=kernel.op_class,
            weight_dtype=kernel.packed_weight_dtype
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
        weight_bytes=stored_bytes,
        float_weight_bytes=weight_bytes(prepared.proto),
        layers=layers,
        # Only deploys measure it (profile needs no accuracy): both models run on every sample.
        accuracy=measure_agreement(precision.compiled.serialized, prepared.serialized, precision.samples) if precision.samples else None,
        layer_errors=layer_errors(precision.compiled.proto, prepared.proto, precision.samples) if precision.scheme != "none" else [],
    )
