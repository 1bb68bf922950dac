"""The charts of the HTML reports, drawn by matplotlib as inline SVG: no script, no network, a
few kilobytes each. Each function takes report data and returns an ``<svg>`` element's text."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from typing import Any, get_args

import matplotlib
from matplotlib.figure import Figure

from edgesdk.devices.profile import OpClass
from edgesdk.quantization.layer_error import LayerError
from edgesdk.simulate.cost_report import SPLIT, CompareRow, LayerCost, MemoryInfo

# Text stays text (smaller, searchable); ids are stable, so the same report renders the same bytes.
STYLE: dict[Any, Any] = {"svg.fonttype": "none", "svg.hashsalt": "edgesdk", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}
PALETTE = matplotlib.color_sequences["tab20"]
CLASS_COLORS = {name: PALETTE[index % len(PALETTE)] for index, name in enumerate((*get_args(OpClass), "other"))}
PART_COLORS = dict(zip(SPLIT, ("#4c72b0", "#dd8452", "#b0b0b0", "#333333"), strict=True))
TRANSFER = PART_COLORS["transfer"]


def _chart(draw: Callable[..., Figure]) -> Callable[..., str]:
    """``draw`` builds a Figure under the report's style; the wrapper returns its SVG element."""

    @wraps(draw)
    def svg(*args, **kwargs) -> str:
        with matplotlib.rc_context(STYLE):
            figure = draw(*args, **kwargs)
            buffer = io.StringIO()
            figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
        text = buffer.getvalue()
        return text[text.index("<svg") :]  # inline in HTML: no XML prolog or doctype

    return svg


def _color(op_class: str) -> Any:
    return CLASS_COLORS.get(op_class, CLASS_COLORS["other"])


@_chart
def timeline(layers: Sequence[LayerCost], units: Sequence[str]) -> Figure:
    """Each kernel as a bar on its unit's row, one after another in run order; its incoming
    transfer first, in black."""
    rows = [unit for unit in units if any(layer.unit == unit for layer in layers)]
    figure = Figure(figsize=(9, 0.9 + 0.5 * len(rows)))
    axes = figure.subplots()
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    start = 0.0
    for layer in layers:
        if layer.transfer_ms:
            spans.setdefault((layer.unit, "transfer"), []).append((start, layer.transfer_ms))
        spans.setdefault((layer.unit, layer.op_class), []).append((start + layer.transfer_ms, layer.latency_ms - layer.transfer_ms))
        start += layer.latency_ms
    for (unit, kind), bars in spans.items():
        color = TRANSFER if kind == "transfer" else _color(kind)
        axes.broken_barh(bars, (rows.index(unit) - 0.35, 0.7), facecolors=color, label=kind)
    handles = {label: handle for handle, label in zip(*axes.get_legend_handles_labels(), strict=True)}
    axes.legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    axes.set_yticks(range(len(rows)), rows)
    axes.set_ylim(len(rows) - 0.5, -0.5)
    axes.set_xlim(0, start or 1)
    axes.set_xlabel("simulated time (ms)")
    return figure


@_chart
def by_op_class(layers: Sequence[LayerCost]) -> Figure:
    """Latency by op class, split into compute, memory, launch and transfer; energy beside it."""
    latency: dict[str, dict[str, float]] = {}
    energy: dict[str, float] = {}
    for layer in layers:
        parts = latency.setdefault(layer.op_class, dict.fromkeys(PART_COLORS, 0.0))
        for part, ms in layer.split().items():
            parts[part] += ms
        energy[layer.op_class] = energy.get(layer.op_class, 0.0) + layer.energy_mj
    classes = sorted(latency, key=lambda name: sum(latency[name].values()))
    figure = Figure(figsize=(9, 0.9 + 0.32 * len(classes)))
    time_axes, energy_axes = figure.subplots(1, 2, sharey=True)
    left = [0.0] * len(classes)
    for part, color in PART_COLORS.items():
        widths = [latency[name][part] for name in classes]
        if any(widths):
            time_axes.barh(classes, widths, left=left, color=color, label=part)
            left = [a + b for a, b in zip(left, widths, strict=True)]
    time_axes.set_xlabel("latency (ms)")
    time_axes.legend(frameon=False, loc="lower right")
    energy_axes.barh(classes, [energy[name] for name in classes], color=[_color(name) for name in classes])
    energy_axes.set_xlabel("energy (mJ)")
    return figure


@_chart
def memory_timeline(memory: MemoryInfo, on_chip: Mapping[str, int]) -> Figure:
    """Live activation bytes after each kernel in run order, with each unit's on-chip memory drawn
    where it is near (a limit far above the peak is named in the legend)."""
    kib = [count / 1024 for count in memory.timeline]
    peak = max(kib, default=0.0)
    figure = Figure(figsize=(9, 2.6))
    axes = figure.subplots()
    axes.step(range(1, len(kib) + 1), kib, where="post", color="#4c72b0", label="live activations")
    axes.fill_between(range(1, len(kib) + 1), kib, step="post", alpha=0.2, color="#4c72b0")
    top = peak * 1.15 or 1.0
    for index, (unit, limit) in enumerate(sorted(on_chip.items(), key=lambda item: item[1])):
        if limit / 1024 <= 4 * peak:
            axes.axhline(limit / 1024, color=PALETTE[2 * index + 2], linestyle="--", label=f"{unit} on-chip {limit / 1024:,.0f} KiB")
            top = max(top, limit / 1024 * 1.1)
        else:
            axes.plot([], [], " ", label=f"{unit} on-chip {limit / 2**20:,.1f} MiB (above)")
    axes.set_ylim(0, top)
    axes.set_xlim(0, max(len(kib), 1) + 0.5)
    axes.set_xlabel("kernel (run order)")
    axes.set_ylabel("KiB")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return figure


@_chart
def comparison(rows: Sequence[CompareRow]) -> Figure:
    """Latency per device, a bar per precision, labelled with its ms; the agreement of each
    quantized precision with the float model below, where it was measured."""
    devices = list(dict.fromkeys(row.device for row in rows))
    schemes = list(dict.fromkeys(row.scheme for row in rows))
    measured = [row for row in rows if row.accuracy is not None or row.eval_accuracy is not None]
    figure = Figure(figsize=(9, 5.2 if measured else 3.2))
    latency_axes, *accuracy_axes = figure.subplots(2 if measured else 1, 1, squeeze=False)[:, 0]
    width = 0.8 / len(schemes)
    for index, scheme in enumerate(schemes):
        chosen = {row.device: row for row in rows if row.scheme == scheme}
        xs = [position + (index - (len(schemes) - 1) / 2) * width for position, device in enumerate(devices) if device in chosen]
        values = [chosen[device].latency_ms for device in devices if device in chosen]
        bars = latency_axes.bar(xs, values, width, label=scheme, color=PALETTE[2 * index])
        latency_axes.bar_label(bars, labels=[f"{value:.3g}" for value in values], fontsize=7, padding=1)
    latency_axes.set_xticks(range(len(devices)), devices)
    latency_axes.set_ylabel("simulated latency (ms)")
    if max(row.latency_ms for row in rows) > 30 * min(row.latency_ms for row in rows):
        latency_axes.set_yscale("log")
    latency_axes.legend(frameon=False, ncols=len(schemes), loc="upper left", bbox_to_anchor=(0, 1.15))
    for axes in accuracy_axes:
        labels = [f"{row.device}\n{row.scheme}" for row in measured]
        agreement = [(row.eval_accuracy or row.accuracy).cosine for row in measured]  # type: ignore[union-attr]  # measured rows have one
        axes.bar(labels, agreement, color=[PALETTE[2 * schemes.index(row.scheme)] for row in measured])
        axes.set_ylim(min(agreement) - (1 - min(agreement)) * 0.5 - 1e-4, 1.0)
        axes.set_ylabel("cosine vs float")
        axes.tick_params(axis="x", labelsize=7)
    return figure


@_chart
def layer_error(layers: Sequence[LayerError]) -> Figure:
    """Each measured layer's output SQNR against the float model, in graph order, and the bits per
    weight it is stored at."""
    measured = [layer for layer in layers if layer.sqnr_db is not None]
    figure = Figure(figsize=(9, 2.8))
    axes = figure.subplots()
    positions = list(range(len(measured)))
    axes.bar(positions, [layer.sqnr_db or 0.0 for layer in measured], color=PART_COLORS["compute"])
    axes.set_ylabel("output SQNR vs float (dB)")
    bits = axes.twinx()
    bits.plot(positions, [layer.bits_per_weight for layer in measured], color=PART_COLORS["memory"], marker="o", markersize=3)
    bits.set_ylabel("bits per weight as stored")
    bits.set_ylim(0, None)
    bits.spines["right"].set_visible(True)
    # Names fit up to a few dozen layers; beyond that, the position in graph order.
    if len(measured) <= 40:
        axes.set_xticks(positions, [layer.node for layer in measured], rotation=90, fontsize=7)
    else:
        axes.set_xlabel("conv/matmul layers in graph order")
    axes.set_xlim(-0.6, len(measured) - 0.4)
    return figure
