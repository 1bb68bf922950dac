"""The front half of the pipeline, which every verb runs:
device -> recipe -> quantize -> analyse -> partition -> simulate.

``deploy`` goes on to build, verify and write an artifact; ``profile`` and ``compare`` stop at the
estimate; ``quantize`` at the quantized model. Options are checked here, once, for every verb.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from edgesdk.compile.build_cache import BuildCache
from edgesdk.compile.compiler import compile_model
from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.compile.onnxruntime_segments import SEGMENTS_DIR, read_segments
from edgesdk.compile.worker import ANALYSIS_FILE, UnsupportedNode
from edgesdk.devices.profile import DeviceProfile
from edgesdk.errors import UserInputError
from edgesdk.frontend.passes import apply_onnx_passes
from edgesdk.plugin.passes import PassChoice
from edgesdk.progress import relay
from edgesdk.quantization.recipe import RECIPE_OPTIONS, Calibration, Recipe
from edgesdk.quantization.schemes import Precision, prepare
from edgesdk.simulate.cost_model import simulate
from edgesdk.simulate.cost_report import Estimate, Fallback
from edgesdk.simulate.fit import device_fit
from edgesdk.simulate.partition import Partition, partition

InputShapes = Mapping[str, Sequence[int]] | None


def checked_options(options: Mapping, verb: str, own: Iterable[str] = ()) -> tuple[dict, dict]:
    """``options`` split into the quantization recipe's (``RECIPE_OPTIONS``) and the verb's ``own``;
    any other name is one clear error."""
    own = set(own)
    unknown = sorted(set(options) - set(RECIPE_OPTIONS) - own)
    if unknown:
        known = ", ".join(sorted({*RECIPE_OPTIONS, *own}))
        raise UserInputError(f"{verb}: unknown option(s) {', '.join(unknown)}", hint=f"options are: {known}")
    return {name: value for name, value in options.items() if name in RECIPE_OPTIONS}, {name: value for name, value in options.items() if name in own}


def load_precision(source, input_shapes: InputShapes, chosen: Recipe, calibration: Calibration, passes: Sequence[PassChoice] = (), examples=None) -> Precision:
    """The model loaded (input shapes bound, from ``input_shapes``, the ``examples`` inputs or the
    calibration arrays), run through the ``onnx``-stage plugin ``passes`` and brought to ``chosen``'s precision."""
    transform = (lambda model: apply_onnx_passes(model, passes)) if passes else None
    return prepare(source, input_shapes, chosen, calibration, transform=transform, examples=examples)


def analysed(
    precision: Precision,
    *,
    timeout_s: float | None = None,
    cache: BuildCache | None = None,
    on_stage: Callable[[str], None] | None = None,
    passes: Sequence[PassChoice] = (),
    onnxruntime: bool = False,
) -> tuple[ModelAnalysis, Path]:
    """The fused kernels of what ``precision`` compiles (imported by TVM in the worker, after the
    ``relax``-stage plugin ``passes``; cached), and the directory holding them (with the nodes
    onnxruntime runs, when ``onnxruntime`` lets it: ``onnxruntime_fallbacks``)."""
    compiled = compile_model(
        precision.compiled, [], cache or BuildCache(), None, timeout_s=timeout_s, on_stage=on_stage or relay(), passes=passes, onnxruntime=onnxruntime
    )
    return read_analysis(compiled.model_dir), compiled.model_dir


@contextlib.contextmanager
def unsupported_on(profile: DeviceProfile, hint: str | None = None) -> Iterator[None]:
    """A node TVM cannot lower, named with the device: ``unsupported on <device>: <op> (<reason>)``."""
    try:
        yield
    except UnsupportedNode as exc:
        raise UserInputError(f"unsupported on {profile.id}: {exc.what}", hint=hint) from None


def cpu_unit(profile: DeviceProfile) -> str:
    """The device's CPU (its first compute unit when it lists none)."""
    return next((name for name, unit in profile.compute_units.items() if unit.kind == "cpu"), next(iter(profile.compute_units)))


def onnxruntime_fallbacks(directory: Path, profile: DeviceProfile) -> list[Fallback]:
    """The nodes onnxruntime runs in the model compiled in ``directory`` (a compiled model's, or an
    artifact's; edgesdk.compile.onnxruntime_segments), as fallbacks from the CPU's TVM code."""
    return [
        Fallback(op=segment.op, from_unit=cpu_unit(profile), to_unit="onnxruntime", reason=f"node '{segment.node}': {segment.reason}")
        for segment in read_segments(directory / SEGMENTS_DIR)
    ]


def read_analysis(directory: Path) -> ModelAnalysis:
    """The kernel analysis stored in a compiled model's (or an artifact's) directory."""
    return ModelAnalysis.model_validate_json((directory / ANALYSIS_FILE).read_text())


def estimated(analysis: ModelAnalysis, profile: DeviceProfile, *, unit: str | None = None, fallback: bool = True) -> tuple[Partition, Estimate]:
    """Where each kernel runs on ``profile`` and what the model costs there, with the device's
    cost-model fit (`edgesdk calibrate`, or the profile's shipped calibration) when it has one."""
    placed = partition(analysis, profile, unit=unit, fallback=fallback)
    return placed, simulate(analysis, placed, profile, device_fit(profile))
