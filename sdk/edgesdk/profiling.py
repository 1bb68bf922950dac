"""`edgesdk.profile`: the simulated cost of a model (or an artifact) on a device, without deploying.

For a model file, TVM imports and fuses it in the worker to get its kernels (cached like a
deploy's); for an artifact, its ``analysis.json`` is used, on its own device or any other.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from pydantic import BaseModel, ConfigDict

from edgesdk.artifact import (
    ANALYSIS_FILE,
    MODEL_FILE,
    Artifact,
    load_artifact,
    read_manifest,
)
from edgesdk.build_cache import BuildCache
from edgesdk.deploy import compile_model, deploy, runs_here
from edgesdk.device_registry import get_device
from edgesdk.errors import UserInputError
from edgesdk.kernels import ModelAnalysis
from edgesdk.manifest import Estimate, PartitionInfo
from edgesdk.measure import Measurement
from edgesdk.measure import measure as measure_runner
from edgesdk.model import random_inputs
from edgesdk.partition import partition
from edgesdk.precision import Calibration, Precision, Recipe, checked_options, prepare, recipe
from edgesdk.profiles import DeviceProfile
from edgesdk.simulate import simulate


class ProfileReport(BaseModel):
    """What `edgesdk profile --json` prints."""

    model_config = ConfigDict(extra="forbid")

    model: str
    device: str
    estimate: Estimate
    partition: PartitionInfo
    measured: Measurement | None = None


def _artifact(source) -> Artifact | None:
    if isinstance(source, onnx.ModelProto) or not Path(source).is_dir():
        return None
    if read_manifest(Path(source)) is None:
        raise UserInputError(f"{source}: neither an ONNX model nor an edgesdk artifact")
    return load_artifact(source)


def _read_analysis(artifact: Artifact) -> ModelAnalysis:
    return ModelAnalysis.model_validate_json((artifact.path / ANALYSIS_FILE).read_text())


def analysed(source, input_shapes, chosen: Recipe, calibration, timeout_s) -> tuple[ModelAnalysis, Precision]:
    """The kernels of ``source`` (a model) at ``chosen``, and the precision they were made from."""
    precision = prepare(source, input_shapes, chosen, calibration)
    compiled = compile_model(precision.compiled, [], BuildCache(), None, timeout_s=timeout_s, on_stage=lambda stage: None)
    return ModelAnalysis.model_validate_json((compiled.model_dir / ANALYSIS_FILE).read_text()), precision


def _analysis(source, input_shapes, chosen: Recipe, calibration, timeout_s) -> tuple[str, ModelAnalysis]:
    artifact = _artifact(source)
    if artifact is not None:
        return artifact.manifest.model.name, _read_analysis(artifact)
    analysis, precision = analysed(source, input_shapes, chosen, calibration, timeout_s)
    return precision.compiled.name, analysis


def _native_artifact(source, device: DeviceProfile, input_shapes, chosen: Recipe, calibration, profiles_dir, scratch: Path) -> Artifact:
    """An artifact of ``device`` that runs here: ``source`` itself, or a deploy of its model (cached)."""
    if not runs_here(device.target):
        raise UserInputError(f"--measure: code for '{device.id}' does not run on this host", hint="measure a device whose code runs here, e.g. --device pc")
    artifact = _artifact(source)
    if artifact is not None and artifact.manifest.device == device.id:
        return artifact
    model = artifact.path / MODEL_FILE if artifact else source
    return deploy(
        model, device.id, scratch / "a", input_shapes=None if artifact else input_shapes, quantize=chosen.scheme, calibration=calibration,
        profiles_dir=profiles_dir, **chosen.options(),
    )


def profile(
    source: str | os.PathLike | onnx.ModelProto,
    device: str | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    quantize: str | None = None,
    calibration: Calibration = None,
    unit: str | None = None,
    fallback: bool = True,
    profiles_dir: str | os.PathLike | None = None,
    timeout_s: float | None = None,
    measure: bool = False,
    repeat: int = 20,
    **quantize_options,
) -> ProfileReport:
    """Partition and simulate ``source`` (a model, or an artifact directory) on ``device``, at the
    precision ``quantize`` and ``quantize_options`` say (edgesdk.precision.recipe; an artifact
    keeps the one it was deployed at).

    ``measure=True`` also runs the device's code here (devices whose code runs on this host, such
    as pc) and reports measured total and per-kernel times beside the estimate.
    """
    artifact = _artifact(source)
    device = device or (artifact.manifest.device if artifact else None)
    if device is None:
        raise UserInputError("profile: which device? give --device", hint="`edgesdk devices` lists them")
    profile_ = get_device(device, profiles_dir)
    chosen = recipe(quantize, calibration, profile_, **checked_options(quantize_options, "profile"))
    scheme = chosen.scheme
    if artifact is not None and quantize is not None and scheme != artifact.manifest.quantization.scheme:
        raise UserInputError(
            f"--quantize {scheme}: {source} was deployed with --quantize {artifact.manifest.quantization.scheme}",
            hint="profile its model.onnx instead, or deploy it again at that precision",
        )
    with tempfile.TemporaryDirectory(prefix="edgesdk-measure-") as scratch:
        # Measuring needs the device's build; its analysis is then the one of what runs.
        native = _native_artifact(source, profile_, input_shapes, chosen, calibration, profiles_dir, Path(scratch)) if measure else None
        name, analysis = (native.manifest.model.name, _read_analysis(native)) if native else _analysis(source, input_shapes, chosen, calibration, timeout_s)
        placed = partition(analysis, profile_, unit=unit, fallback=fallback)
        report = ProfileReport(model=name, device=profile_.id, estimate=simulate(analysis, placed, profile_), partition=placed.info())
        if native:
            report.measured = measure_runner(native.runner, random_inputs(native.inputs, seed=0), analysis, repeat)
    return report
