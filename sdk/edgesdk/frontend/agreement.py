"""How close one output is to another: the one implementation of cosine, PSNR and tolerance that
verification (compiled vs onnxruntime) and accuracy (quantized vs float) share.

Tolerances are per dtype and relative to the output's scale: an output whose values reach 1000
may differ by more in absolute terms than one that stays within 1. Floats compare with
``max_abs_err <= rtol * max(1, max|reference|)`` over the finite values, and NaN and infinities
must be where the reference has them; integers and booleans must match exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RELATIVE_TOLERANCE = {"float32": 1e-4, "float64": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}
# Reduced-precision kernels round some values apart from onnxruntime: an int8 activation one step
# off when it lies on a rounding boundary, float16 activations that onnxruntime's CPU kernels keep
# in float32. Where the model is undecided (a softmax whose two best classes are close) such a
# difference moves an output far (PP-OCRv4 rec, int8 and fp16 alike: 1-2 probabilities of 265,000
# off by 0.055). With ``stray_share``, an output passes when at most that share of its elements
# exceed the tolerance and its cosine stays this close to 1: a wrong kernel is off everywhere.
STRAY_COSINE = 0.999
# A model whose own rounding noise (edgesdk.frontend.noise: the reference under perturbations of
# the size a different summation order makes) moves outputs further than that may disagree with
# the reference NOISE_MARGIN times as much: the compiled model is one more draw of that noise.
NOISE_MARGIN = 2.0


def _flat(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, np.float64).ravel()


def cosine(actual: np.ndarray, reference: np.ndarray) -> float:
    """Cosine similarity; 1 when both are all zeros, 0 when only one is."""
    a, r = _flat(actual), _flat(reference)
    norms = float(np.linalg.norm(a) * np.linalg.norm(r))
    if norms > 0:
        return float(np.dot(a, r) / norms)
    return 1.0 if not a.any() and not r.any() else 0.0


def psnr_db(actual: np.ndarray, reference: np.ndarray) -> float | None:
    """Peak signal-to-noise ratio against ``reference``'s peak; None when identical (or all zero)."""
    a, r = _flat(actual), _flat(reference)
    mse = float(np.mean((a - r) ** 2)) if a.size else 0.0
    peak = float(np.max(np.abs(r))) if r.size else 0.0
    return 10 * math.log10(peak**2 / mse) if mse > 0 and peak > 0 else None


def tolerance(reference: np.ndarray, float_rtol: float | None = None) -> float:
    """The largest absolute error allowed against ``reference``; ``float_rtol`` replaces the float
    tolerance (a reduced-precision deploy's)."""
    rtol = RELATIVE_TOLERANCE.get(reference.dtype.name)
    if rtol is None:
        return 0.0
    rtol = max(rtol, float_rtol or 0.0)
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return rtol * max(1.0, scale)


@dataclass(frozen=True)
class Comparison:
    max_abs_err: float
    tolerance: float
    cosine: float
    psnr_db: float | None
    beyond_tolerance: int  # elements whose error exceeds the tolerance
    passed: bool
    noise_beyond_tolerance: int | None = None  # the reference's own noise, worst over its draws
    noise_cosine: float | None = None


def compare(
    actual: np.ndarray, reference: np.ndarray, float_rtol: float | None = None, stray_share: float = 0.0, noise: Sequence[np.ndarray] = ()
) -> Comparison:
    """``actual`` against ``reference``: within tolerance everywhere, or (``stray_share`` > 0) beyond
    it in at most that share of elements with a cosine of at least ``STRAY_COSINE``. ``noise``
    (the reference re-run under rounding noise) widens both to ``NOISE_MARGIN`` times what the
    noise itself does."""
    if actual.shape != reference.shape:
        return Comparison(math.inf, 0.0, 0.0, None, int(reference.size), False)
    a, r = _flat(actual), _flat(reference)
    # NaN and infinities must be where the reference has them, the same; the rest is measured.
    finite = np.isfinite(r)
    same = (a == r) | (np.isnan(a) & np.isnan(r))
    misplaced = int(np.sum(np.where(finite, ~np.isfinite(a), ~same)))
    wrong_specials = int(np.sum(~finite & ~same))
    a, r = a[finite], r[finite]
    err = float(np.max(np.abs(a - r))) if a.size else 0.0
    similarity = cosine(a, r)
    limit = tolerance(np.asarray(reference)[np.isfinite(reference)], float_rtol)
    beyond = int(np.sum(~(np.abs(a - r) <= limit)))  # a NaN where the reference is finite counts
    allowed, floor = stray_share * a.size, STRAY_COSINE
    noise_beyond = noise_cosine = None
    if stray_share > 0 and noise:
        noise_beyond = max(int(np.sum(np.abs(_flat(n)[finite] - r) > limit)) for n in noise)
        noise_cosine = min(cosine(_flat(n)[finite], r) for n in noise)
        allowed, floor = max(allowed, NOISE_MARGIN * noise_beyond), min(floor, 1 - NOISE_MARGIN * (1 - noise_cosine))
    strays_only = stray_share > 0 and beyond <= allowed and similarity >= floor
    passed = misplaced == 0 and (err <= limit or strays_only)
    if misplaced:
        err, beyond = math.inf, beyond + wrong_specials
    return Comparison(err, limit, similarity, psnr_db(a, r), beyond, passed, noise_beyond, noise_cosine)
