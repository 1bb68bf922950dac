"""Kernel time as a sum of the work its phases do, fitted per op class to the measured kernels.

A scheduled kernel (edgesdk.compile.schedules) runs in phases whose cost is proportional to what
each touches: a fixed start (loop set-up, waking the thread pool), the multiply-adds, the weights
repacked into panels on every call, the activations read (padded, packed) and the outputs written
with their epilogue. So on a calibrated unit a float32 kernel's busy time is predicted as

    seconds = c_start + c_flop * FLOPs + c_weight * weight bytes + c_in * activation bytes read
              + c_out * bytes written

(c_start: one for kernels the rules run on one thread, one for those that fork) with non-negative
coefficients per op class, least squares on relative error over that class's
micro-benchmarks (edgesdk.verbs.calibrate). Unlike an efficiency looked up from the nearest
micro-benchmark, the terms add up for shapes the suite never ran (a small 1x1 conv in a model
costs its start and its few FLOPs, not a big conv's share of peak).
"""

from __future__ import annotations

import itertools

import numpy as np

from edgesdk.compile.kernels import Kernel
from edgesdk.compile.schedules.contraction import MIN_PARALLEL_MACS

TERMS = ("serial start", "parallel start", "flops", "weight bytes", "activation bytes read", "bytes written")
MIN_SAMPLES = 8  # a class with fewer measured kernels keeps the efficiency model


def time_terms(kernel: Kernel) -> tuple[float, ...]:
    """The amounts TERMS names, for ``kernel``."""
    weights = sum(t.bytes for t in kernel.inputs if t.source in ("weight", "constant"))
    activations = sum(t.bytes for t in kernel.inputs if t.source not in ("weight", "constant"))
    # The schedule rules start threads only for enough multiply-adds: a fork/join costs microseconds.
    parallel = float(kernel.flops // 2 >= MIN_PARALLEL_MACS)
    return (1.0 - parallel, parallel, float(kernel.flops), float(weights), float(activations), float(kernel.bytes_written))


def fit_coefficients(terms: list[tuple[float, ...]], seconds: list[float]) -> list[float] | None:
    """Non-negative coefficients minimising the squared relative error of ``terms`` . c against
    ``seconds``: the best least-squares fit over every subset of terms whose solution is
    non-negative (six terms: 63 subsets). None when there are too few samples."""
    if len(seconds) < MIN_SAMPLES:
        return None
    y = np.asarray(seconds, dtype=np.float64)
    a = np.asarray(terms, dtype=np.float64) / y[:, None]  # rows scaled: relative error
    scale = np.maximum(np.abs(a).max(axis=0), 1e-30)  # columns to comparable sizes
    a = a / scale
    best, best_error = None, np.inf
    for size in range(1, a.shape[1] + 1):
        for subset in itertools.combinations(range(a.shape[1]), size):
            solution, *_ = np.linalg.lstsq(a[:, subset], np.ones(len(y)), rcond=None)
            if np.any(solution < 0):
                continue
            error = float(np.sum((a[:, subset] @ solution - 1) ** 2))
            if error < best_error:
                best_error = error
                best = np.zeros(a.shape[1])
                best[list(subset)] = solution
    return None if best is None else [float(value) for value in best / scale]


def predict_seconds(coefficients: list[float], kernel: Kernel) -> float:
    return float(np.dot(coefficients, time_terms(kernel)))
