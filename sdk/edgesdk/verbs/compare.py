"""`edgesdk compare`: one model on many devices, at one or more precisions, simulated side by side.

Each precision is compiled (analysed) once per recipe, not once per device, each analysis a task
in its own worker process (a local pool or Ray: edgesdk.distributed.executors); every device then
partitions and simulates the same kernels in the driver (edgesdk.verbs.pipeline.estimated).
``auto`` resolves per device, so devices whose recipes differ get their own quantized model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx

from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.devices.profile import DeviceProfile
from edgesdk.devices.registry import devices as all_devices
from edgesdk.devices.registry import get_device
from edgesdk.distributed.executors import TaskFailed
from edgesdk.distributed.executors import executor as executor_named
from edgesdk.errors import UserInputError
from edgesdk.progress import Listener, reporting, stage
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
    source, input_shapes, chosen: Recipe, calibration: Calibration, eval_data: Calibration, timeout_s: float | None, profile: DeviceProfile
) -> tuple[str, ModelAnalysis, Path, Accuracy | None, Accuracy | None]:
    """In a worker: the kernels of ``chosen``'s model and their directory (with the nodes
    onnxruntime runs, where ``profile`` lets it), and its agreement with the float model on the
    calibration samples and on the held-out ``eval_data``."""
    with unsupported_on(profile):
        precision = load_precision(source, input_shapes, chosen, calibration if chosen.scheme != "none" else None)
        analysis, directory = analysed(precision, timeout_s=timeout_s, onnxruntime=onnxruntime_runs_nodes(profile))
    held_out = on_samples = None
    if chosen.scheme != "none":
        eval_arrays = calibration_arrays(eval_data)
        if eval_arrays is not None:
            samples = calibration_samples(eval_arrays, precision.original.inputs, calibration_origin(eval_data, "--eval"))
            held_out = measure_agreement(precision.compiled.serialized, precision.original.serialized, samples)
        if precision.samples:
            on_samples = measure_agreement(precision.compiled.serialized, precision.original.serialized, precision.samples)
    return precision.compiled.name, analysis, directory, on_samples, held_out


def _absolute(value):
    """A path the user gave, absolute when it exists: a Ray worker may start in another directory."""
    return Path(value).absolute() if isinstance(value, str | os.PathLike) and Path(value).exists() else value


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
    executor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    **quantize_options,
) -> CompareReport:
    """Simulate ``source`` on each of ``devices`` ("all", ids, or "a,b") at each precision of
    ``quantize`` (a scheme, a list, or "none,int8,w4a16"); each of ``quantize_options``
    (edgesdk.quantization.recipe.recipe) goes to the schemes that use it. Quantized precisions report their
    agreement with the float model on the calibration samples, and on ``eval_data`` (held-out inputs,
    stacked like calibration samples) when given. ``html``: also write the HTML report there.
    ``on_stage``: told each analysis as it finishes (edgesdk.progress).

    Each precision's model is analysed once (once more on devices where onnxruntime runs what TVM
    cannot lower), as a task in its own worker process (edgesdk.distributed.executors): on
    ``executor`` "local" (``workers`` at once, default one per core) or "ray" (the cluster at
    ``address``, or one started here); devices then partition and simulate here."""
    if as_artifact(source) is not None:
        raise UserInputError(f"{source}: compare takes an ONNX model", hint="give the artifact's model.onnx")
    quantize_options, _ = checked_options(quantize_options, "compare")
    if html is not None:
        check_html_path(html)
    profiles = [get_device(device, profiles_dir) for device in _device_ids(devices, profiles_dir)]
    chosen_executor = executor_named(executor, address=address, workers=workers)
    calibration_arrays(eval_data)  # a bad --eval file: one error before any work
    cases = []  # (profile, recipe, key): per recipe, and whether onnxruntime may run what TVM cannot lower (pc)
    for profile in profiles:
        for scheme in _schemes(quantize):
            resolved = profile.quantization.scheme if scheme == "auto" else scheme
            chosen = recipe(scheme, calibration if resolved != "none" else None, profile, **options_for(resolved, quantize_options))
            cases.append((profile, chosen, (chosen, onnxruntime_runs_nodes(profile))))
    owners = {key: (profile, chosen) for profile, chosen, key in reversed(cases)}  # the first case of each key
    keys = list(owners)
    inputs = (_absolute(source), input_shapes)
    tasks = [(*inputs, chosen, _absolute(calibration), _absolute(eval_data), timeout_s, profile) for profile, chosen in owners.values()]
    analyses: dict[tuple[Recipe, bool], tuple[str, ModelAnalysis, Path, Accuracy | None, Accuracy | None]] = {}
    with reporting(on_stage):
        for done, (index, outcome) in enumerate(chosen_executor.run(_analysis, tasks), 1):
            if isinstance(outcome, TaskFailed):
                raise outcome.error()
            analyses[keys[index]] = outcome
            devices = ", ".join(profile.id for profile, _, key in cases if key == keys[index])
            stage(f"compare {done}/{len(keys)} analysed: {keys[index][0].scheme} for {devices}")
    rows: list[CompareRow] = []
    first_latency: dict[str, float] = {}
    for profile, chosen, key in cases:
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
