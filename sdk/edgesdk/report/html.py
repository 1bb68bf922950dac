"""The HTML reports: one self-contained file each (inline CSS and SVG charts, no script, nothing
fetched), rendered by jinja2 from edgesdk/report/templates."""

from __future__ import annotations

import os
from pathlib import Path

import jinja2

from edgesdk.artifact.manifest import Manifest
from edgesdk.devices.profile import DeviceProfile
from edgesdk.errors import UserInputError
from edgesdk.quantization.layer_error import SAMPLES as LAYER_SAMPLES
from edgesdk.report.advice import fallback_reasons, hints
from edgesdk.simulate.cost_report import CompareReport, Estimate, PartitionInfo, byte_size
from edgesdk.simulate.measure import Measurement
from edgesdk.versions import edgesdk_version

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("edgesdk.report"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENVIRONMENT.filters["size"] = byte_size
_ENVIRONMENT.filters["ms"] = lambda ms: f"{ms:.4g} ms"


def cost_html(
    model: str, profile: DeviceProfile, estimate: Estimate, partition: PartitionInfo, *, manifest: Manifest | None = None, measured: Measurement | None = None
) -> str:
    """The report of ``model``'s simulated cost on ``profile``; with the deploy's ``manifest``, its
    quantization and verification too."""
    from edgesdk.report import charts  # matplotlib: a quarter second to import, paid only when a report is drawn

    drawn = {
        # No kernel (every node on onnxruntime): nothing to draw.
        "timeline": charts.timeline(estimate.per_layer, list(profile.compute_units)) if estimate.per_layer else "",
        "by_op_class": charts.by_op_class(estimate.per_layer) if estimate.per_layer else "",
        "memory": charts.memory_timeline(estimate.memory, {name: unit.on_chip_memory_bytes for name, unit in profile.compute_units.items()})
        if estimate.memory
        else "",
        "layer_error": charts.layer_error(manifest.quantization.layer_errors)
        if manifest and any(layer.sqnr_db is not None for layer in manifest.quantization.layer_errors)
        else "",
    }
    return _ENVIRONMENT.get_template("cost.html.j2").render(
        model=model,
        device=profile,
        estimate=estimate,
        partition=partition,
        manifest=manifest,
        measured=measured,
        charts=drawn,
        parts=estimate.split(),
        hints=hints(partition, profile),
        fallbacks=fallback_reasons(partition),
        layer_samples=LAYER_SAMPLES,
        version=edgesdk_version(),
    )


def compare_html(report: CompareReport) -> str:
    """The report of ``edgesdk compare``: latency per device and precision, and agreement."""
    from edgesdk.report import charts  # as in cost_html

    return _ENVIRONMENT.get_template("compare.html.j2").render(
        report=report,
        devices=list(dict.fromkeys(row.device for row in report.rows)),
        schemes=list(dict.fromkeys(row.scheme for row in report.rows)),
        chart=charts.comparison(report.rows),
        version=edgesdk_version(),
    )


def check_html_path(path: str | os.PathLike) -> Path:
    """``path`` where a report may be written: a new file in an existing directory (checked before
    the work, so a bad ``--html`` fails at once)."""
    path = Path(path)
    if path.exists():
        raise UserInputError(f"{path}: the file exists; edgesdk does not overwrite it", hint="choose another --html path or remove it")
    if not path.parent.is_dir():
        raise UserInputError(f"{path}: no directory {path.parent}")
    return path


def write_html(path: str | os.PathLike, text: str) -> Path:
    """Write a report to ``path``, never over an existing file, all or nothing."""
    path = check_html_path(path)
    staged = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with staged.open("x", encoding="utf-8") as partial:
            partial.write(text)
    except OSError as error:
        raise UserInputError(f"{path}: cannot write the report ({error.strerror})") from None
    try:
        os.link(staged, path)  # fails if the path appeared meanwhile: nothing is overwritten
    except FileExistsError:
        raise UserInputError(f"{path}: the file exists; edgesdk does not overwrite it") from None
    finally:
        staged.unlink()
    return path
