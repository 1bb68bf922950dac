"""The cost-model fit: factors of one device's compute unit fitted to kernel timings measured on
this host by `edgesdk calibrate` (edgesdk.verbs.calibrate), stored as JSON in the edgesdk cache
(``<cache>/calibration/<device>.json``), and given to the simulator explicitly.

The fit inverts the cost model (docs/simulator.md) on the measurements:

- ``launch_overhead_s``: what a kernel call costs beyond its work: whole runs of a model of
  nothing but tiny kernels, divided by their number (edgesdk.verbs.calibrate);
- ``time_coefficients[class]``: per class with enough samples, the time model of float32 kernels
  (edgesdk.simulate.time_model: start + FLOPs + weight, activation and output bytes);
- ``efficiency[class]``: the median, over that class's kernels, of
  ``ops / (peak_ops_per_s x (measured time - overhead))``, clipped to (0, 1];
- every sample's own efficiency with its loop-nest features, and per class the feature weights
  that predict the samples best: the simulator interpolates a kernel's efficiency from the
  measured kernels most like it (edgesdk.simulate.efficiency_model), since untuned code's
  efficiency depends on its loop nest far more than on its class.

A profile may ship a default fit beside its YAML (``<profile>.calibration.json``, the pc's was
measured on the machine class edgesdk is developed and tested on): it applies until you calibrate
on your own host (``device_fit``). ``EDGESDK_NO_CALIBRATION=1`` makes every verb ignore stored
and shipped fits.
"""

from __future__ import annotations

import functools
import os
import statistics
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgesdk.compile.build_cache import cache_root
from edgesdk.compile.kernels import Kernel
from edgesdk.devices.profile import DeviceProfile
from edgesdk.simulate.efficiency_model import Sample, interpolate
from edgesdk.simulate.time_model import TERMS, fit_coefficients, predict_seconds

NO_FIT_ENV = "EDGESDK_NO_CALIBRATION"  # named after `edgesdk calibrate`
TINY_ELEMENTS = 256  # kernels this small measure the call overhead (edgesdk.verbs.calibrate), not efficiency


class CostFit(BaseModel):
    """Fitted factors of one device's compute unit, with the measurements they come from."""

    model_config = ConfigDict(extra="forbid")

    device: str
    unit: str
    created_utc: str
    host: str
    launch_overhead_s: float
    efficiency: dict[str, float]
    feature_weights: dict[str, dict[str, float]]  # per op class (efficiency_model.choose_weights)
    samples: list[Sample]
    # The time model's terms when the fit was made: coefficients for other terms mean nothing.
    time_terms: list[str]
    # Per op class, the time model's coefficients (edgesdk.simulate.time_model), float32 kernels.
    time_coefficients: dict[str, list[float]] = {}
    shipped: bool = False  # the profile's default calibration, not one made on this host

    def describe(self) -> str:
        where = "default calibration shipped with the profile, measured" if self.shipped else "measured"
        return f"{where} on {self.host} on {self.created_utc[:10]}"

    def seconds_of(self, kernel: Kernel) -> float | None:
        """The float32 kernel's busy time from its class's time model, or None (too few samples)."""
        coefficients = self.time_coefficients.get(kernel.op_class)
        return None if coefficients is None else predict_seconds(coefficients, kernel)

    def efficiency_of(self, kernel: Kernel) -> float | None:
        """The kernel's efficiency interpolated from the measured kernels most like it, or None."""
        return interpolate(self.samples, self.feature_weights, kernel)

    def applied(self, profile: DeviceProfile) -> DeviceProfile:
        """``profile`` with the fitted unit's efficiency and launch overhead."""
        if self.unit not in profile.compute_units:
            return profile
        units = dict(profile.compute_units)
        units[self.unit] = units[self.unit].model_copy(update={"efficiency": self.efficiency, "launch_overhead_s": self.launch_overhead_s})
        return profile.model_copy(update={"compute_units": units})


def fit_file(device_id: str) -> Path:
    return cache_root() / "calibration" / f"{device_id}.json"


def stored_fit(device_id: str) -> CostFit | None:
    """The stored fit of ``device_id``; None when there is none or the user set EDGESDK_NO_CALIBRATION."""
    path = fit_file(device_id)
    if os.environ.get(NO_FIT_ENV) or not path.is_file():
        return None
    return _read(path)


def _read(path: Path) -> CostFit | None:
    try:
        fit = CostFit.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None  # a file from another version: ignored, `calibrate` rewrites it
    return fit if fit.time_terms == list(TERMS) else None


def shipped_fit_file(profile: DeviceProfile) -> Path | None:
    """Where ``profile``'s default calibration would be: beside its YAML file."""
    path = profile.source.path if profile.source is not None else None
    return path.with_suffix(".calibration.json") if path is not None else None


def device_fit(profile: DeviceProfile) -> CostFit | None:
    """The fit the simulator applies to ``profile``: the one made on this host (``stored_fit``),
    else the profile's shipped default calibration, else None."""
    own = stored_fit(profile.id)
    if own is not None or os.environ.get(NO_FIT_ENV):
        return own
    path = shipped_fit_file(profile)
    shipped = _shipped(path) if path is not None and path.is_file() else None
    return shipped if shipped is not None and shipped.device == profile.id else None


@functools.lru_cache(maxsize=8)
def _shipped(path: Path) -> CostFit | None:
    """A shipped calibration (package data, not rewritten while we run): parsed once per process,
    not on every estimate."""
    fit = _read(path)
    return fit.model_copy(update={"shipped": True}) if fit is not None else None


def fit_times(samples: list[Sample], overhead_s: float) -> dict[str, list[float]]:
    """Per op class, the time model fitted to its samples' busy time (beyond the launch overhead).
    A sample that took less than twice the overhead is left out: its busy time is below what the
    per-kernel timing resolves, and as a near-zero target of a relative fit it outweighed every
    other sample (matmuls came out with no cost per FLOP)."""
    by_class: dict[str, tuple[list, list]] = {}
    for sample in samples:
        if sample.ops > TINY_ELEMENTS and sample.terms and sample.measured_ms * 1e-3 > 2 * overhead_s:
            terms, seconds = by_class.setdefault(sample.op_class, ([], []))
            terms.append(sample.terms)
            seconds.append(sample.measured_ms * 1e-3 - overhead_s)
    fitted = {op_class: fit_coefficients(terms, seconds) for op_class, (terms, seconds) in by_class.items()}
    return {op_class: coefficients for op_class, coefficients in fitted.items() if coefficients is not None}


def fit_factors(samples: list[Sample], peak_ops_per_s: float, overhead_s: float) -> dict[str, float]:
    """Fit the per-class efficiencies beyond the call ``overhead_s``; also set each sample's own
    efficiency (which ``choose_weights`` and ``interpolate`` then use)."""
    by_class: dict[str, list[float]] = {}
    for sample in samples:
        if sample.ops <= TINY_ELEMENTS:
            continue
        busy_s = max(sample.measured_ms * 1e-3 - overhead_s, 1e-9)
        sample.efficiency = min(1.0, sample.ops / (peak_ops_per_s * busy_s))
        by_class.setdefault(sample.op_class, []).append(sample.efficiency)
    efficiency = {op_class: statistics.median(values) for op_class, values in by_class.items()}
    efficiency["default"] = statistics.median(efficiency.values())
    return efficiency
