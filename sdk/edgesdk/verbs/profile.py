"""`edgesdk profile`: the cost report of a model (or an artifact) on a device, without deploying.

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

from edgesdk.artifact.directory import Artifact, load_artifact
from edgesdk.artifact.files import MODEL_FILE, read_manifest
from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.compile.targets import runs_here
from edgesdk.devices.profile import DeviceProfile
from edgesdk.devices.registry import get_device
from edgesdk.distributed.boards import Board
from edgesdk.errors import UserInputError
from edgesdk.frontend.model import random_inputs
from edgesdk.progress import Listener, reporting, stage
from edgesdk.quantization.recipe import Calibration, Recipe, recipe
from edgesdk.report.html import check_html_path, cost_html, write_html
from edgesdk.simulate.cost_report import Estimate, PartitionInfo
from edgesdk.simulate.measure import Measurement
from edgesdk.simulate.measure import measure as measure_runner
from edgesdk.verbs.deploy import deploy, onnxruntime_runs_nodes
from edgesdk.verbs.pipeline import analysed, checked_options, estimated, load_precision, onnxruntime_fallbacks, read_analysis, unsupported_on


class CostReport(BaseModel):
    """What `edgesdk profile --json` prints: the simulated cost of a model on a device."""

    model_config = ConfigDict(extra="forbid")

    model: str
    device: str
    estimate: Estimate
    partition: PartitionInfo
    measured: Measurement | None = None


def as_artifact(source) -> Artifact | None:
    """``source`` as an artifact when it is an artifact directory; None for a model."""
    if isinstance(source, onnx.ModelProto) or not Path(source).is_dir():
        return None
    if read_manifest(Path(source)) is None:
        raise UserInputError(f"{source}: neither an ONNX model nor an edgesdk artifact")
    return load_artifact(source)


def _analysis(source, device: DeviceProfile, input_shapes, chosen: Recipe, calibration, timeout_s) -> tuple[str, ModelAnalysis, Path]:
    """The model's name, its kernels and the directory they are in (with its onnxruntime nodes)."""
    artifact = as_artifact(source)
    if artifact is not None:
        return artifact.manifest.model.name, read_analysis(artifact.path), artifact.path
    precision = load_precision(source, input_shapes, chosen, calibration)
    with unsupported_on(device):
        return precision.compiled.name, *analysed(precision, timeout_s=timeout_s, onnxruntime=onnxruntime_runs_nodes(device))


def _native_artifact(source, device: DeviceProfile, input_shapes, chosen: Recipe, calibration, profiles_dir, scratch: Path, board: Board | None) -> Artifact:
    """An artifact of ``device`` to measure (here, or on ``board``): ``source`` itself, or a deploy of its model (cached)."""
    if board is None and not runs_here(device.target):
        raise UserInputError(
            f"--measure: code for '{device.id}' does not run on this host",
            hint="measure it on a board with --remote HOST:PORT, or a device whose code runs here, e.g. --device pc",
        )
    artifact = as_artifact(source)
    if artifact is not None and artifact.manifest.device == device.id:
        return artifact
    model = artifact.path / MODEL_FILE if artifact else source
    return deploy(
        model, device.id, scratch / "a", input_shapes=None if artifact else input_shapes, quantize=chosen.scheme, calibration=calibration,
        profiles_dir=profiles_dir, **chosen.options(),
    )  # fmt: skip


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
    board: Board | None = None,
    html: str | os.PathLike | None = None,
    on_stage: Listener | None = None,
    **quantize_options,
) -> CostReport:
    """Partition and simulate ``source`` (a model, or an artifact directory) on ``device``, at the
    precision ``quantize`` and ``quantize_options`` say (edgesdk.quantization.recipe.recipe; an artifact
    keeps the one it was deployed at).

    ``measure=True`` also runs the device's code here (devices whose code runs on this host, such
    as pc), or on ``board`` over TVM RPC (edgesdk.distributed.boards; a board implies ``measure``),
    and reports measured total and per-kernel times beside the estimate; an artifact ``source``
    keeps them in its manifest's ``measured``. ``html``: also
    write the HTML report there (a new file; edgesdk.report.html). ``on_stage``: told each stage
    (edgesdk.progress).
    """
    recipe_options, _ = checked_options(quantize_options, "profile")
    if html is not None:
        check_html_path(html)
    artifact = as_artifact(source)
    device = device or (artifact.manifest.device if artifact else None)
    if device is None:
        raise UserInputError("profile: which device? give --device", hint="`edgesdk devices` lists them")
    device_profile = get_device(device, profiles_dir)
    chosen = recipe(quantize, calibration, device_profile, **recipe_options)
    if artifact is not None and quantize is not None and chosen.scheme != artifact.manifest.quantization.scheme:
        raise UserInputError(
            f"--quantize {chosen.scheme}: {source} was deployed with --quantize {artifact.manifest.quantization.scheme}",
            hint="profile its model.onnx instead, or deploy it again at that precision",
        )
    measure = measure or board is not None
    with tempfile.TemporaryDirectory(prefix="edgesdk-measure-") as scratch, reporting(on_stage):
        stage("analysing the model")
        # Measuring needs the device's build; its analysis is then the one of what runs.
        native = _native_artifact(source, device_profile, input_shapes, chosen, calibration, profiles_dir, Path(scratch), board) if measure else None
        if native:
            name, analysis, directory = native.manifest.model.name, read_analysis(native.path), native.path
        else:
            name, analysis, directory = _analysis(source, device_profile, input_shapes, chosen, calibration, timeout_s)
        stage("simulate")
        placed, estimate = estimated(analysis, device_profile, unit=unit, fallback=fallback)
        placed.fallbacks += onnxruntime_fallbacks(directory, device_profile)
        # What the device code allocates is known where it was built for this device.
        built = native or (artifact if artifact is not None and artifact.manifest.device == device_profile.id else None)
        stored = built.manifest.estimate if built is not None else None
        if estimate.memory is not None and stored is not None and stored.memory is not None:
            estimate.memory.arena_bytes, estimate.memory.device_ram_bytes = stored.memory.arena_bytes, stored.memory.device_ram_bytes
        report = CostReport(model=name, device=device_profile.id, estimate=estimate, partition=placed.info())
        if native:
            stage(f"measuring {repeat} runs" + (f" on {board}" if board else ""))
            inputs = random_inputs(native.inputs, seed=0)
            report.measured = board.measure(native, inputs, repeat) if board else measure_runner(native.runner, inputs, analysis, repeat)
            if artifact is not None and native.path == artifact.path:  # measured beside the deploy's estimate
                native.record(report.measured)
    if html is not None:
        manifest = built.manifest if built is not None else None
        write_html(html, cost_html(name, device_profile, estimate, report.partition, manifest=manifest, measured=report.measured))
    return report
