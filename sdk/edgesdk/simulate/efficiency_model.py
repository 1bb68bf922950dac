"""Shape-aware efficiency: a kernel's share of peak, interpolated from measured kernels like it.

Compiled loop code reaches a share of peak that depends on its loop nest far more than on its op
class: on this host, untuned convolutions run at 1.5-16% of peak depending on shape. So on a
calibrated unit, the simulator gives a kernel the efficiency of the measured micro-benchmark
kernels of its class nearest to it in ``efficiency_features`` (k nearest neighbours, weighted by
closeness, averaged in log space). How much each feature counts is chosen per host by
``choose_weights``: the weights that best predict each micro-benchmark from the others
(leave-one-out), so no evaluated model is ever used to set them.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgesdk.compile.kernels import Kernel

VECTOR_LANES = 8  # floats per vectorized loop step (4-lane SSE, unrolled twice by LLVM)
FEATURES = (
    "log2 reduction",
    "log2 inner extent",
    "inner share in whole vectors",
    "log2 outputs",
    "log2 inner step",
    "log2 L1 set overflow",
    "log2 reduction stride",
    "log2 transcendentals",
)
NEIGHBOURS = 4
MIN_SAMPLES = 6  # a class with fewer measured kernels keeps its single fitted efficiency
WEIGHT_CHOICES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


class Sample(BaseModel):
    """One measured kernel of a calibration."""

    model_config = ConfigDict(extra="forbid")

    kernel: str
    op_class: str
    ops: int
    features: tuple[float, ...]  # efficiency_features()
    measured_ms: float
    terms: tuple[float, ...] = ()  # edgesdk.simulate.time_model.time_terms()
    efficiency: float = 0.0  # filled by edgesdk.simulate.fit.fit()


def efficiency_features(kernel: Kernel) -> tuple[float, ...]:
    """What decides the speed of compiled loop code (FEATURES names them): the reduction length
    (short reductions are unrolled and the loop over outputs vectorized; long ones run as a scalar
    chain), the innermost output extent and the share of it that fills whole vectors, the output
    size, the innermost read step (strided convolutions step by 2+), how far a reduction loop
    overflows the L1 cache sets its strided walk maps to (``l1_set_overflow``), the largest
    reduction stride in bytes (a matmul's K loop walks down a column of B: one cache line per step),
    and the transcendental calls (exp, erf, tanh...) per element."""
    out = kernel.outputs[0] if kernel.outputs else None
    elements = max(1, int(np.prod(out.shape, dtype=np.int64))) if out else 1
    nest = kernel.nest
    if nest is None:
        reduction, inner, step, overflow, transcendentals = max(1.0, kernel.flops / (2 * elements)), (out.shape[-1] if out and out.shape else 1), 1, 1.0, 0
        reduction_stride = 4
    else:
        itemsize = np.dtype(out.dtype).itemsize if out else 4
        reduction, inner, step = nest.reduction, max(1, nest.inner_extent), max(1, nest.inner_stride_bytes // itemsize)
        overflow = max(map(l1_set_overflow, nest.reduction_strides_bytes, nest.reduction_extents), default=1.0)
        transcendentals = nest.transcendentals
        reduction_stride = max(nest.reduction_strides_bytes, default=0)
    in_vectors = (inner - inner % VECTOR_LANES) / inner
    return (
        float(np.log2(reduction)),
        float(np.log2(inner)),
        in_vectors,
        float(np.log2(elements)),
        float(np.log2(step)),
        float(np.log2(overflow)),
        float(np.log2(1 + reduction_stride)),
        float(np.log2(1 + transcendentals)),
    )


# L1 data cache geometry of current x86-64 and Arm cores: 64 sets x 8 ways x 64-byte lines (32 KiB).
L1_SETS, L1_WAYS, LINE_BYTES = 64, 8, 64


def l1_set_overflow(stride_bytes: int, steps: int) -> float:
    """Lines a loop of ``steps`` strided reads touches / lines the L1 sets they map to can hold
    (at least 1). A stride that is a multiple of 4 KiB maps every step to one set (8 lines): a
    1x1 convolution reducing 32 channels of 32x32 float planes overflows it 4x and runs 4-5x slower
    than its neighbours; a matmul's K loop over 512 columns (2 KiB stride) uses 2 sets."""
    if stride_bytes < LINE_BYTES:
        return 1.0
    period = L1_SETS * LINE_BYTES
    sets = min(L1_SETS, period // math.gcd(stride_bytes, period))
    return max(1.0, steps / (sets * L1_WAYS))


def _classes(samples: list[Sample]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per op class with enough samples: (features matrix, log2 efficiencies)."""
    grouped: dict[str, list[Sample]] = {}
    for sample in samples:
        if sample.efficiency > 0 and len(sample.features) == len(FEATURES):
            grouped.setdefault(sample.op_class, []).append(sample)
    return {
        op_class: (np.array([s.features for s in own]), np.log2([s.efficiency for s in own])) for op_class, own in grouped.items() if len(own) >= MIN_SAMPLES
    }


def _predict(features: np.ndarray, log_efficiency: np.ndarray, weights: np.ndarray, points: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
    """Log2 efficiency at ``points``: the mean over the nearest samples, weighted by inverse
    squared distance."""
    distances = np.linalg.norm((points[:, None, :] - features[None, :, :]) * weights, axis=2)
    if leave_one_out:
        np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1)[:, :NEIGHBOURS]
    closeness = 1.0 / (np.take_along_axis(distances, nearest, axis=1) + 0.25) ** 2
    return np.sum(closeness * log_efficiency[nearest], axis=1) / np.sum(closeness, axis=1)


def interpolate(samples: list[Sample], weights: dict[str, dict[str, float]], kernel: Kernel) -> float | None:
    """The efficiency of ``kernel`` from the measured kernels of its class, or None when its class
    has fewer than MIN_SAMPLES of them. ``weights``: per op class, per feature (choose_weights)."""
    measured = _classes([s for s in samples if s.op_class == kernel.op_class]).get(kernel.op_class)
    if measured is None:
        return None
    vector = _vector(weights.get(kernel.op_class, {}))
    return float(2 ** _predict(*measured, vector, np.array([efficiency_features(kernel)]))[0])


def _vector(weights: dict[str, float]) -> np.ndarray:
    return np.array([weights.get(name, 1.0) for name in FEATURES])


def loo_error(features: np.ndarray, log_efficiency: np.ndarray, weights: dict[str, float]) -> float:
    """Mean |log2(predicted / measured efficiency)| when each sample is predicted from the others."""
    predicted = _predict(features, log_efficiency, _vector(weights), features, leave_one_out=True)
    return float(np.mean(np.abs(predicted - log_efficiency)))


def choose_weights(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """Per op class, the feature weights that minimise the leave-one-out error over its measured
    micro-benchmarks (coordinate descent over WEIGHT_CHOICES, from all ones)."""
    chosen = {}
    for op_class, (features, log_efficiency) in _classes(samples).items():
        weights = dict.fromkeys(FEATURES, 1.0)
        best = loo_error(features, log_efficiency, weights)
        for _ in range(4):
            improved = False
            for name in FEATURES:
                for choice in WEIGHT_CHOICES:
                    trial = {**weights, name: choice}
                    error = loo_error(features, log_efficiency, trial)
                    if error < best - 1e-9:
                        weights, best, improved = trial, error, True
            if not improved:
                break
        chosen[op_class] = weights
    return chosen
