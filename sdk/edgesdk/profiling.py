"""`edgesdk.profile`: the simulated cost of a model (or an artifact) on a device, without deploying.

For a model file, TVM imports and fuses it in the worker to get its kernels (cached like a
deploy's); for an artifact, its ``analysis.json`` is used, on its own device or any other.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from pydantic import BaseModel, ConfigDict

from edgesdk.artifact import ANALYSIS_FILE, load_artifact, read_manifest
from edgesdk.build_cache import BuildCache
from edgesdk.deploy import compile_model
from edgesdk.device_registry import get_device
from edgesdk.errors import UserInputError
from edgesdk.kernels import ModelAnalysis
from edgesdk.manifest import Estimate, PartitionInfo
from edgesdk.model import load_model
from edgesdk.partition import partition
from edgesdk.simulate import simulate


class ProfileReport(BaseModel):
    """What `edgesdk profile --json` prints."""

    model_config = ConfigDict(extra="forbid")

    model: str
    device: str
    estimate: Estimate
    partition: PartitionInfo


def _analysis(source, input_shapes, timeout_s) -> tuple[str, ModelAnalysis, str | None]:
    """(model name, its kernels, the artifact's device when ``source`` is an artifact)."""
    if not isinstance(source, onnx.ModelProto) and Path(source).is_dir():
        if read_manifest(Path(source)) is None:
            raise UserInputError(f"{source}: neither an ONNX model nor an edgesdk artifact")
        artifact = load_artifact(source)
        analysis = ModelAnalysis.model_validate_json((artifact.path / ANALYSIS_FILE).read_text())
        return artifact.manifest.model.name, analysis, artifact.manifest.device
    prepared = load_model(source, input_shapes)
    compiled = compile_model(prepared, [], BuildCache(), None, timeout_s=timeout_s, on_stage=lambda stage: None)
    return prepared.name, ModelAnalysis.model_validate_json((compiled.model_dir / ANALYSIS_FILE).read_text()), None


def profile(
    source: str | os.PathLike | onnx.ModelProto,
    device: str | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    unit: str | None = None,
    fallback: bool = True,
    profiles_dir: str | os.PathLike | None = None,
    timeout_s: float | None = None,
) -> ProfileReport:
    """Partition and simulate ``source`` (a model, or an artifact directory) on ``device``."""
    name, analysis, artifact_device = _analysis(source, input_shapes, timeout_s)
    device = device or artifact_device
    if device is None:
        raise UserInputError("profile: which device? give --device", hint="`edgesdk devices` lists them")
    profile_ = get_device(device, profiles_dir)
    placed = partition(analysis, profile_, unit=unit, fallback=fallback)
    return ProfileReport(model=name, device=profile_.id, estimate=simulate(analysis, placed, profile_), partition=placed.info())
