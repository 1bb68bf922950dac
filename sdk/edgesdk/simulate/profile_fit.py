"""Fit a device profile's free figures to measured whole-model latencies.

For a device we cannot hold, the only measurements are published whole-model latencies (Qualcomm
AI Hub's, benchmarks/device_fidelity.py). The cost model (edgesdk.simulate.cost_model) has
figures that are physical and public (peak rates of the int8 units, DRAM bandwidth) and figures
that are not (a unit's share of peak per op class, its per-op overhead, a synchronisation, the
fp16 and int16 rates of an NPU, which no vendor publishes). ``fit_figures`` chooses the latter:

- the objective is the mean squared log error of predicted over measured latency (a model 2x too
  slow and one 2x too fast weigh the same, whatever their size), plus a weak pull of each figure
  toward its first-order value (``PRIOR_WEIGHT``), so a figure the data do not determine stays
  where the profile's author put it;
- figures are searched in log space within bounds (``bounds``): a share of peak in (0, 1]; a
  narrower dtype's peak rate never above the unit's fastest; the rest within 100x of first order;
- the partition (which unit and dtype each kernel takes) and every byte count do not depend on
  the fitted figures, so each case is reduced once to arrays (``Case``) and the search evaluates
  the roofline in numpy; ``Case.predict_ms`` equals ``simulate`` on the profile with those figures;
- ``cross_validate`` refits without each model in turn and predicts it (leave one model out).

No per-model factor exists: one set of figures per device predicts every model.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.devices.profile import DeviceProfile, figure
from edgesdk.simulate.cost_model import crossings, dram_traffic, figure_key
from edgesdk.simulate.layout import padded_ops, streamed_bytes
from edgesdk.simulate.partition import on_device, partition

PRIOR_WEIGHT = 1e-3  # per squared natural-log unit of a figure's move from first order
WITHIN = 2.0  # "within 2x"
RESTARTS = 5


@dataclass(frozen=True, eq=False)  # compared by identity: it holds arrays
class Case:
    """One measured model on the device, reduced to what its predicted latency depends on: per
    kernel, the figure slots (indices into a figure vector) of its peak rate, efficiency and
    launch overhead, its ops, its DRAM time and its crossings."""

    model: str
    precision: str
    measured_ms: float
    ops: np.ndarray
    memory_s: np.ndarray  # DRAM time
    on_chip_bytes: np.ndarray
    on_chip: np.ndarray  # slot of the unit's on-chip bandwidth
    peak: np.ndarray
    efficiency: np.ndarray
    overhead: np.ndarray
    transfer_bytes: float
    transfers: int

    def predict_ms(self, values: np.ndarray, link_bandwidth: int, link_latency: int) -> float:
        compute = self.ops / (values[self.peak] * values[self.efficiency])
        memory = np.maximum(self.memory_s, self.on_chip_bytes / values[self.on_chip])
        seconds = np.maximum(compute, memory).sum() + values[self.overhead].sum()
        seconds += self.transfer_bytes / values[link_bandwidth] + self.transfers * values[link_latency]
        return float(seconds * 1e3)


class Figures:
    """The figure vector: every figure a case reads, by dotted path, with the profile's values."""

    def __init__(self, profile: DeviceProfile):
        self.profile = profile
        self.paths: list[str] = []
        self.index: dict[str, int] = {}

    def slot(self, path: str) -> int:
        if path not in self.index:
            self.index[path] = len(self.paths)
            self.paths.append(path)
        return self.index[path]

    def values(self, overrides: Mapping[str, float] = {}) -> np.ndarray:
        """The figures, ``overrides`` first; a figure the profile leaves out (null) is infinite:
        an on-chip bandwidth not modelled costs nothing."""
        return np.array([overrides.get(path, _or_infinite(figure(self.profile, path))) for path in self.paths])


def _or_infinite(value: float | None) -> float:
    return math.inf if value is None else float(value)


def prepare(model: str, precision: str, measured_ms: float, analysis: ModelAnalysis, figures: Figures) -> Case:
    """``analysis`` partitioned on the profile and reduced to a Case whose slots index ``figures``."""
    profile = figures.profile
    placed = partition(analysis, profile)
    analysis = on_device(analysis, placed.dtypes)
    consumers = {t.producer for k in analysis.kernels for t in k.inputs if t.producer is not None}
    rows: list[tuple[float, float, float, int, int, int, int]] = []
    moved, count = 0, 0
    for index, (kernel, unit_name, dtype) in enumerate(zip(analysis.kernels, placed.units, placed.dtypes, strict=True)):
        unit = profile.compute_units[unit_name]
        prefix = f"compute_units.{unit_name}"
        memory_s = dram_traffic(index, kernel, unit, consumers)[0] / profile.memory.dram_bandwidth_bytes_per_s
        rows.append((
            padded_ops(kernel, unit.channel_tile), memory_s, streamed_bytes(kernel, unit.channel_tile), figures.slot(f"{prefix}.tensor_bandwidth_bytes_per_s"),
            figures.slot(f"{prefix}.peak_ops_per_s.{figure_key(unit.peak_ops_per_s, dtype, min)}"),
            figures.slot(f"{prefix}.{unit.efficiency_key(kernel.op_class, dtype)}"),
            figures.slot(f"{prefix}.launch_overhead_s"),
        ))  # fmt: skip
        crossing_bytes, crossing_count = crossings(index, kernel, unit_name, placed, profile, consumers)
        moved, count = moved + crossing_bytes, count + crossing_count
    ops, seconds, on_chip_bytes, on_chip, peaks, efficiencies, overheads = (np.array(column) for column in zip(*rows, strict=True))
    return Case(
        model, precision, measured_ms, ops.astype(np.float64), seconds, on_chip_bytes.astype(np.float64), on_chip, peaks, efficiencies, overheads,
        float(moved), count,
    )  # fmt: skip


@dataclass
class Fitter:
    """Fits ``paths`` of one profile to cases prepared against ``figures``, starting from and
    pulled toward ``first_order``."""

    figures: Figures
    paths: Sequence[str]
    first_order: Mapping[str, float]

    def __post_init__(self) -> None:
        self.link_bandwidth = self.figures.slot("interconnect.bandwidth_bytes_per_s")
        self.link_latency = self.figures.slot("interconnect.latency_s")
        self.free = np.array([self.figures.slot(path) for path in self.paths])

    def predict(self, cases: Iterable[Case], fitted: Mapping[str, float]) -> list[float]:
        values = self.figures.values(fitted)
        return [case.predict_ms(values, self.link_bandwidth, self.link_latency) for case in cases]

    def bounds(self) -> list[tuple[float, float]]:
        """Log bounds per free figure: a share of peak in (0, 1]; a peak rate no faster than the
        unit's fastest published one; anything else within 100x of its first-order value."""
        limits = []
        for path in self.paths:
            start = self.first_order[path]
            if ".efficiency." in path:
                low, high = 1e-4, 1.0
            elif ".peak_ops_per_s." in path:
                unit_peaks = figure(self.figures.profile, path.rsplit(".", 1)[0])
                fixed = [value for dtype, value in unit_peaks.items() if f"{path.rsplit('.', 1)[0]}.{dtype}" not in self.paths]
                low, high = start / 100, max(fixed, default=start * 100)
            else:
                low, high = start / 100, start * 100
            limits.append((math.log(low), math.log(high)))
        return limits

    def fit(self, cases: Sequence[Case]) -> dict[str, float]:
        """The free figures that best predict ``cases`` (module docstring)."""
        values = self.figures.values(self.first_order)
        prior = np.log([self.first_order[path] for path in self.paths])
        measured = np.log([case.measured_ms for case in cases])

        def loss(theta: np.ndarray) -> float:
            values[self.free] = np.exp(theta)
            predicted = np.log([case.predict_ms(values, self.link_bandwidth, self.link_latency) for case in cases])
            return float(np.mean((predicted - measured) ** 2) + PRIOR_WEIGHT * np.sum((theta - prior) ** 2))

        limits = self.bounds()
        start = np.clip(prior, [low for low, _ in limits], [high for _, high in limits])
        # Powell: the roofline's max() makes the loss kinked, which derivative-free search tolerates.
        # Restarted from where it stopped until it gains nothing: Powell's search directions
        # degenerate on a kinked loss and a fresh set gets it out.
        best = minimize(loss, start, method="Powell", bounds=limits, options={"xtol": 1e-4, "ftol": 1e-10, "maxfev": 20_000})
        for _ in range(RESTARTS):
            again = minimize(loss, best.x, method="Powell", bounds=limits, options={"xtol": 1e-4, "ftol": 1e-10, "maxfev": 20_000})
            if again.fun > best.fun - 1e-7:
                break
            best = again
        return {path: float(np.exp(theta)) for path, theta in zip(self.paths, best.x, strict=True)}

    def cross_validate(self, cases: Sequence[Case], on_fold: Callable[[str], None] = lambda model: None) -> list[float]:
        """Per case, its prediction by the figures fitted without its model (leave one model out)."""
        predicted: dict[int, float] = {}
        for model in sorted({case.model for case in cases}):
            on_fold(model)
            fitted = self.fit([case for case in cases if case.model != model])
            own = [index for index, case in enumerate(cases) if case.model == model]
            for index, value in zip(own, self.predict([cases[i] for i in own], fitted), strict=True):
                predicted[index] = value
        return [predicted[index] for index in range(len(cases))]


def errors(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Median and worst |predicted/measured - 1|, and the share within 2x either way."""
    ratios = [p / m for p, m in zip(predicted, measured, strict=True)]
    if not ratios:
        return {"cases": 0}
    relative = [abs(r - 1) for r in ratios]
    return {
        "cases": len(ratios),
        "median_error": statistics.median(relative),
        "worst_error": max(relative),
        "within_2x": sum(1 / WITHIN <= r <= WITHIN for r in ratios) / len(ratios),
    }


def with_figures(profile: DeviceProfile, values: Mapping[str, float]) -> DeviceProfile:
    """``profile`` with the figures at the dotted paths of ``values`` replaced (validated again)."""
    data = profile.model_dump()
    for path, value in values.items():
        *parents, last = path.split(".")
        figure(data, ".".join(parents))[last] = value
    changed = DeviceProfile.model_validate(data)
    return changed.with_source(profile.source) if profile.source is not None else changed
