"""Options that several commands share, and how JSON reaches stdout."""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgesdk.frontend.model import parse_input_shape

# `edgesdk --quiet`: set by the root command for one invocation (main() resets it).
QUIET: ContextVar[bool] = ContextVar("quiet", default=False)


def console(**options: Any) -> Console:
    """Where a command's human-readable output goes: nowhere with --quiet (errors and --json output
    are not affected). Text lines are not wrapped (a path stays whole); tables fit the width."""
    return Console(quiet=QUIET.get(), soft_wrap=True, **options)


JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout, nothing else.")]
EmulateOption = Annotated[
    bool, typer.Option("--emulate", help="Run the device's own code on its instruction set under QEMU (mcu: firmware on qemu-system-arm).")
]
WideOption = Annotated[bool, typer.Option("--wide", help="Every column, whole (kernel names uncut): lines may be longer than the terminal.")]
HtmlOption = Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML report (charts, partition, memory) to this new file.")]
ProfilesDirOption = Annotated[Path | None, typer.Option("--profiles-dir", help="Also read device profiles (*.yaml) from this directory.")]
InputShapeOption = Annotated[
    list[str] | None,
    typer.Option("--input-shape", help="NAME=D1,D2,... for an input with dynamic dims (repeat per input)."),
]
QuantizeOption = Annotated[
    str | None,
    typer.Option(
        "--quantize",
        help="Precision: none (keep the model's), fp16, int8 (needs --calibration), w8a16, w4a16 (int8/int4 weights, fp16 activations), "
        "w4a8 (needs --calibration), vq (k-means codebooks), or auto (the device's recipe).",
    ),
]
CalibrationOption = Annotated[
    Path | None,
    typer.Option(
        "--calibration",
        help="Sample inputs (.npz: per input, N samples stacked on a new first axis): int8 calibrates on them; every scheme reports its accuracy on them.",
    ),
]
EqualizeOption = Annotated[bool, typer.Option("--equalize", help="int8: cross-layer equalization of Conv-ReLU-Conv pairs before quantizing.")]
RangeMethodOption = Annotated[
    str | None,
    typer.Option("--range-method", help="How int8 activation ranges are calibrated: minmax, percentile or mse [default: percentile; auto: the profile's]."),
]
GroupSizeOption = Annotated[
    int | None,
    typer.Option(
        "--group-size", help="w4a16/w8a16/w4a8: weights per scale along the reduction axis, e.g. 32, 64, 128 [default: 32; w8a16 per output channel]."
    ),
]
BiasCorrectionOption = Annotated[
    bool, typer.Option("--bias-correction", help="Correct each conv/Gemm bias for the mean shift quantization causes, measured on --calibration.")
]
VqDimOption = Annotated[int | None, typer.Option("--vq-dim", help="vq: weights per codebook vector [default: 2].")]
VqBitsOption = Annotated[int | None, typer.Option("--vq-bits", help="vq: bits per index, 4 or 8 (a codebook of 16 or 256 vectors per layer) [default: 8].")]
AdaroundOption = Annotated[
    float | None,
    typer.Option(
        "--adaround",
        metavar="SECONDS",
        help="Learn each weight's rounding (AdaRound) on --calibration within this many seconds (after one run that collects the layers' inputs).",
    ),
]
UnitOption = Annotated[str | None, typer.Option("--unit", help="Place every kernel on this compute unit (e.g. cpu).")]
ExecutorOption = Annotated[
    str, typer.Option("--executor", help="Where the tasks run: local (a process per task, one per core at once) or ray (a Ray cluster).")
]
AddressOption = Annotated[str | None, typer.Option("--address", help="--executor ray: the cluster to connect to (HOST:PORT) [default: start Ray here].")]
WorkersOption = Annotated[int | None, typer.Option("--workers", min=1, help="--executor local: tasks at once [default: the number of cores].")]
RemoteOption = Annotated[str | None, typer.Option("--remote", metavar="HOST:PORT", help="On a board: its TVM RPC server (python -m tvm.exec.rpc_server).")]
TrackerOption = Annotated[str | None, typer.Option("--tracker", metavar="HOST:PORT", help="On a board from this TVM RPC tracker (with --key).")]
KeyOption = Annotated[str | None, typer.Option("--key", help="--tracker: the key the board's RPC server registered with.")]
NoFallbackOption = Annotated[bool, typer.Option("--no-fallback", help="Fail (exit 1) if any kernel would fall back from its preferred unit.")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


# The quantization options (edgesdk.quantization.recipe.RECIPE_OPTIONS) every precision-taking command has.
_QUANTIZE_OPTIONS = {
    "range_method": (RangeMethodOption, None),
    "equalize": (EqualizeOption, False),
    "group_size": (GroupSizeOption, None),
    "bias_correction": (BiasCorrectionOption, False),
    "vq_dim": (VqDimOption, None),
    "vq_bits": (VqBitsOption, None),
    "adaround_seconds": (AdaroundOption, None),
}


def with_quantize_options(command: Callable) -> Callable:
    """Give ``command`` the quantization options; it receives those given as one dict,
    ``quantize_options``, for edgesdk's API functions (``**quantize_options``)."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # the Annotated options, not strings
    own = [parameter.replace(annotation=hints[parameter.name]) for parameter in signature.parameters.values() if parameter.name != "quantize_options"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default) for name, (kind, default) in _QUANTIZE_OPTIONS.items()]

    @functools.wraps(command)
    def wrapper(**kwargs):
        given = {name: kwargs.pop(name) for name in _QUANTIZE_OPTIONS}
        return command(**kwargs, quantize_options={name: value for name, value in given.items() if value is not None and value is not False})

    # what typer reads; functools.wraps' _Wrapped type does not declare __signature__
    wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    return wrapper


def input_shapes(texts: list[str] | None) -> dict[str, list[int]]:
    """The repeated ``--input-shape NAME=D1,D2,...`` options as ``{name: dims}``."""
    return dict(parse_input_shape(text) for text in texts or [])
