"""`edgesdk compare`: one model on many devices, at one or more precisions, simulated side by side.

Each precision is compiled (analysed) once per recipe, not once per device; every device then
partitions and simulates the same kernels (edgesdk.verbs.pipeline.estimated). ``auto`` resolves
per device, so devices whose recipes differ get their own quantized model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx

from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.devices.registry import devices as all_devices
from edgesdk.devices.registry import get_device
from edgesdk.errors import UserInputError
from edgesdk.progress import Listener, counted, reporting, stage
from edgesdk.quantization.accuracy import Accuracy, measure_agreement
from edgesdk.quantization.ptq import calibration_samples
from edgesdk.quantization.recipe import Calibration, Recipe, options_for, recipe
from edgesdk.quantization.schemes import calibration_arrays, calibration_origin
from edgesdk.report.html import check_html_path, compare_html, write_html
from edgesdk.simulate.cost_report import CompareReport, CompareRow
from edgesdk.verbs.deploy import onnxruntime_runs_nodes
from edgesdk.verbs.pipeline import analysed, checked_options, estimated, load_precision, onnxruntime_fallbacks, unsupported_on
from edgesdk.verbs.profile import as_artifact


def _device_ids(devices: str | Sequence[str], profiles_dir) -> list[str]:
    if isinstance(devices, str):
        if devices == "all":
            return [profile.id for profile in all_devices(profiles_dir)]
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    if not devices:
        raise UserInputError("--devices: no device given", hint="--devices all, or a comma-separated list of ids (`edgesdk devices`)")
    return list(dict.fromkeys(devices))


def _schemes(quantize: str | Sequence[str] | None) -> list[str]:
    if quantize is None:
        return ["none"]
    if isinstance(quantize, str):
        quantize = quantize.split(",")
    schemes = [s.strip() for s in quantize if s.strip()]
    return list(dict.fromkeys(schemes)) or ["none"]


def _analysis(
    source, input_shapes, chosen: Recipe, calibration: Calibration, eval_data: Calibration, eval_arrays, timeout_s: float | None, onnxruntime: bool
) -> tuple[str, ModelAnalysis, Path, Accuracy | None, Accuracy | None]:
    """The kernels of ``chosen``'s model and their directory (with the nodes onnxruntime runs, when
    ``onnxruntime`` lets it), and its agreement with the float model on the calibration samples and
    on the held-out ``eval_data``."""
    precision = load_precision(source, input_shapes, chosen, calibration if chosen.scheme != "none" else None)
    analysis, directory = analysed(precision, timeout_s=timeout_s, onnxruntime=onnxruntime)
    held_out = on_samples = None
    if chosen.scheme != "none":
        stage("measuring agreement with the float model")
        if eval_arrays is not None:
            samples = calibration_samples(eval_arrays, precision.original.inputs, calibration_origin(eval_data, "--eval"))
            held_out = measure_agreement(precision.compiled.serialized, precision.original.serialized, samples)
        if precision.samples:
            on_samples = measure_agreement(precision.compiled.serialized, precision.original.serialized, precision.samples)
    return precision.compiled.name, analysis, directory, on_samples, held_out


def compare(
    source: str | os.PathLike | onnx.ModelProto,
    devices: str | Sequence[str] = "all",
    *,
    quantize: str | Sequence[str] | None = None,
    calibration: Calibration = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    profiles_dir: str | os.PathLike | None = None,
    timeout_s: float | None = None,
    eval_data: Calibration = None,
    html: str | os.PathLike | None = None,
    on_stage: Listener | None = None,
    **quantize_options,
) -> CompareReport:
    """Simulate ``source`` on each of ``devices`` ("all", ids, or "a,b") at each precision of
    ``quantize`` (a scheme, a list, or "none,int8,w4a16"); each of ``quantize_options``
    (edgesdk.quantization.recipe.recipe) goes to the schemes that use it. Quantized precisions report their
    agreement with the float model on the calibration samples, and on ``eval_data`` (held-out inputs,
    stacked like calibration samples) when given. ``html``: also write the HTML report there.
    ``on_stage``: told each device and precision as it starts (edgesdk.progress)."""
    if as_artifact(source) is not None:
        raise UserInputError(f"{source}: compare takes an ONNX model", hint="give the artifact's model.onnx")
    quantize_options, _ = checked_options(quantize_options, "compare")
    if html is not None:
        check_html_path(html)
    profiles = [get_device(device, profiles_dir) for device in _device_ids(devices, profiles_dir)]
    eval_arrays = calibration_arrays(eval_data)
    # Per recipe, and whether onnxruntime may run what TVM cannot lower (pc): the same kernels otherwise.
    analyses: dict[tuple[Recipe, bool], tuple[str, ModelAnalysis, Path, Accuracy | None, Accuracy | None]] = {}
    rows: list[CompareRow] = []
    first_latency: dict[str, float] = {}
    cases = [(profile, scheme) for profile in profiles for scheme in _schemes(quantize)]
    with reporting(on_stage):
        for profile, scheme in counted(cases, "compare", lambda case: f"{case[0].id} {case[1]}"):
            resolved = profile.quantization.scheme if scheme == "auto" else scheme
            chosen = recipe(scheme, calibration if resolved != "none" else None, profile, **options_for(resolved, quantize_options))
            key = (chosen, onnxruntime_runs_nodes(profile))
            if key not in analyses:
                with unsupported_on(profile):
                    analyses[key] = _analysis(source, input_shapes, chosen, calibration, eval_data, eval_arrays, timeout_s, key[1])
            _, analysis, directory, on_samples, held_out = analyses[key]
            placed, estimate = estimated(analysis, profile)
            placed.fallbacks += onnxruntime_fallbacks(directory, profile)
            first = first_latency.setdefault(profile.id, estimate.latency_ms)
            info = placed.info()
            rows.append(
                CompareRow(
                    device=profile.id, scheme=chosen.scheme, latency_ms=estimate.latency_ms, energy_mj=estimate.energy_mj,
                    peak_memory_bytes=estimate.peak_memory_bytes, weight_bytes=estimate.weight_bytes, units=info.units,
                    fallbacks=len(info.fallbacks), speedup=first / estimate.latency_ms if estimate.latency_ms else 1.0,
                    accuracy=on_samples, eval_accuracy=held_out,
                )
            )  # fmt: skip
    report = CompareReport(model=next(iter(analyses.values()))[0], rows=rows)
    if html is not None:
        write_html(html, compare_html(report))
    return report
