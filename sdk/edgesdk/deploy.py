"""`edgesdk.deploy`: one model to one device, as a verified artifact directory.

The stages: load and prepare the model (edgesdk.model) -> find the device's backend -> import and
build through TVM in a worker process, for the device and for this host (edgesdk.tvm_worker),
reusing cached builds -> run the host build against onnxruntime (edgesdk.verify) -> write the
artifact beside its destination and rename it into place (edgesdk.artifact).
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgesdk import plugin_manager
from edgesdk.artifact import (
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
from edgesdk.tvm_worker import Job, run_in_worker
from edgesdk.device_registry import get_device
from edgesdk.errors import CheckFailed, UserInputError
from edgesdk.extensions import Backend
from edgesdk.lowering import PIPELINE_VERSION, BuildResult, BuildSpec
from edgesdk.manifest import (
    MANIFEST_NAME,
    BuildInfo,
    Manifest,
    ModelInfo,
    PartitionInfo,
    QuantizationInfo,
    TensorInfo,
)
from edgesdk.model import Model, load_model, random_inputs
from edgesdk.profiles import DeviceProfile
from edgesdk.tensors import check_inputs, load_npz, save_npz
from edgesdk.toolchains import host_toolchain
from edgesdk.verify import reference_outputs, verification
from edgesdk.versions import edgesdk_version, tvm_version

OPTIONS = {"timeout_s", "cache", "profiles_dir", "seed", "on_stage"}


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


def _host_target() -> dict[str, Any]:
    # Spelled like the pc profile's target, so a pc build and a host build share a cache entry.
    return {"kind": "llvm", "mtriple": f"{_host_arch()}-linux-gnu"}


def _runs_here(target: dict[str, Any]) -> bool:
    """Whether code for ``target`` runs on this machine (then the device build is the simulation)."""
    return target.get("kind") == "llvm" and str(target.get("mtriple", "")).split("-")[0] == _host_arch()


def _check_quantize(quantize: str | None, calibration: Any) -> str:
    scheme = "none" if quantize is None else str(quantize)
    if scheme != "none":
        raise UserInputError(
            f"--quantize {scheme}: quantization is not available in this edgesdk version yet",
            hint="deploy without --quantize (or --quantize none) to keep the model's precision",
        )
    if calibration is not None:
        raise UserInputError("--calibration is only used with --quantize", hint="drop --calibration")
    return scheme


def _inputs(model: Model, inputs: str | os.PathLike | Mapping[str, np.ndarray] | None, seed: int) -> tuple[dict[str, np.ndarray], bool]:
    if inputs is None:
        return random_inputs(model.inputs, seed), False
    if isinstance(inputs, Mapping):
        return check_inputs(inputs, model.inputs, "inputs"), True
    return check_inputs(load_npz(inputs), model.inputs, str(inputs)), True


def _build_key(model: Model, spec: BuildSpec) -> str:
    return cache_key(
        # Not the role: a device build that targets this host is the host build.
        {"model": model.sha256, "spec": spec.model_dump(mode="json", exclude={"role"}), "edgesdk": edgesdk_version(), "tvm": tvm_version(), "pipeline": PIPELINE_VERSION}
    )


def _compile(
    model: Model, specs: Sequence[BuildSpec], cache: BuildCache, *, timeout_s: float | None, on_stage: Callable[[str], None]
) -> tuple[Path, list[tuple[Path, BuildResult]], bool, float]:
    """Weights and builds for ``model``: from the cache, or compiled by the worker (then cached)."""
    weights_key = cache_key({"model": model.sha256, "tvm": tvm_version(), "pipeline": PIPELINE_VERSION})
    keys = [_build_key(model, spec) for spec in specs]
    weights_dir = cache.get("weights", weights_key)
    found = [cache.get("builds", key) for key in keys]
    if weights_dir is not None and all(found):
        builds = [(path, BuildResult.model_validate_json((path / "build.json").read_text())) for path in found]
        return weights_dir, builds, True, 0.0

    scratch = cache.staging()
    try:
        (scratch / "model.onnx").write_bytes(model.serialized)
        todo = [(index, spec) for index, spec in enumerate(specs) if not found[index]]
        job = Job(
            model=str(scratch / "model.onnx"),
            shapes={spec.name: list(spec.shape) for spec in model.inputs},
            weights_dir=str(scratch / "weights"),
            builds=[(spec, str(scratch / f"build{index}")) for index, spec in todo],
        )
        result = run_in_worker(job, scratch / "job", model_name=model.name, timeout_s=timeout_s, on_stage=on_stage)
        for (index, _), built in zip(todo, result.builds):
            (scratch / f"build{index}" / "build.json").write_text(built.model_dump_json())
            found[index] = cache.put("builds", keys[index], scratch / f"build{index}")
        weights_dir = cache.put("weights", weights_key, scratch / "weights")
        builds = [(path, BuildResult.model_validate_json((path / "build.json").read_text())) for path in found]
        return weights_dir, builds, False, result.seconds
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

    Options: ``timeout_s`` (compile time limit), ``cache`` (False to rebuild), ``profiles_dir``,
    ``seed`` (of the random verification inputs), ``on_stage`` (a callable told each stage's name).
    Raises ``CheckFailed`` (exit 1) after writing the artifact when verification fails.
    """
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise UserInputError(f"deploy: unknown option(s) {', '.join(unknown)}", hint=f"options are: {', '.join(sorted(OPTIONS))}")
    on_stage: Callable[[str], None] = options.get("on_stage") or (lambda stage: None)

    on_stage("load")
    profile = get_device(device, options.get("profiles_dir"))
    backend = find_backend(profile)
    scheme = _check_quantize(quantize, calibration)
    prepared = load_model(model, input_shapes)
    verify_inputs, user_inputs = _inputs(prepared, inputs, int(options.get("seed", 0)))
    destination = Path(out) if out is not None else Path("build") / f"{prepared.name}-{profile.id}"
    check_destination(destination)
    missing = backend.toolchain.missing()
    if missing and backend.emit == "shared_library":
        raise UserInputError(f"device '{profile.id}': cannot link its library: {missing}")

    native = _runs_here(profile.target)
    specs = [BuildSpec(role="device", target=profile.target, emit=backend.emit, toolchain=backend.toolchain, basename=prepared.name)]
    if not native:
        specs.append(BuildSpec(role="host", target=_host_target(), emit="shared_library", toolchain=host_toolchain(), basename=prepared.name))
    # cache=False compiles into a throw-away cache, so both paths are one.
    private = None if options.get("cache", True) else Path(tempfile.mkdtemp(prefix="edgesdk-nocache-"))
    staged = None
    try:
        weights_dir, builds, cached, compile_seconds = _compile(
            prepared, specs, BuildCache(private), timeout_s=options.get("timeout_s"), on_stage=lambda stage: on_stage(f"compile: {stage}")
        )
        staged = staging_dir(destination)
        on_stage("verify")
        (staged / MODEL_FILE).write_bytes(prepared.serialized)
        shutil.copyfile(weights_dir / PARAMS_FILE, staged / PARAMS_FILE)
        for (source, _), spec in zip(builds, specs):
            shutil.copytree(source, staged / spec.role, ignore=shutil.ignore_patterns("build.json"))
        (staged / "verification").mkdir()
        save_npz(staged / INPUTS_FILE, verify_inputs)
        device_build = builds[0][1]
        simulation = f"device/{device_build.files[0]}" if native else f"host/{builds[1][1].files[0]}"
        manifest_fields = dict(
            edgesdk_version=edgesdk_version(),
            tvm_version=tvm_version(),
            created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            device=profile.id,
            target=profile.target,
            model=ModelInfo(
                name=prepared.name,
                sha256=prepared.source_sha256,
                prepared_sha256=prepared.sha256,
                opset=prepared.opset,
                inputs=[TensorInfo(**spec.to_json()) for spec in prepared.inputs],
                outputs=[TensorInfo(**spec.to_json()) for spec in prepared.outputs],
            ),
            quantization=QuantizationInfo(scheme=scheme),
            # Until the partitioner (issue 5), every kernel is CPU code for the device's CPU unit.
            partition=PartitionInfo(units={_cpu_unit(profile): device_build.kernels}),
            build=BuildInfo(
                backend=backend.name,
                toolchain=device_build.toolchain,
                device_files=[f"device/{name}" for name in device_build.files],
                simulation_library=simulation,
                kernels=device_build.kernels,
                cache_key=_build_key(prepared, specs[0]),
                cached=cached,
                compile_seconds=round(compile_seconds, 3),
                notes=device_build.notes,
            ),
        )
        runner = HostRunner(staged / simulation, staged / PARAMS_FILE, prepared.inputs, [spec.name for spec in prepared.outputs])
        result = verification(runner.run(verify_inputs, isolated=True), reference_outputs(prepared.serialized, verify_inputs), user_inputs=user_inputs)
        manifest = Manifest(**manifest_fields, verification=result, files=hash_tree(staged))
        on_stage("write")
        (staged / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
        place(staged, destination)
    finally:
        for scratch in (staged, private):
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    if not result.passed:
        raise CheckFailed(failure_message(destination, result))
    return load_artifact(destination)


def _cpu_unit(profile: DeviceProfile) -> str:
    return next((name for name, unit in profile.compute_units.items() if unit.kind == "cpu"), next(iter(profile.compute_units)))
