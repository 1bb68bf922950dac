"""Numerics check: the compiled model against onnxruntime on the same inputs.

Tolerances are per dtype and relative to the output's scale: an output whose values reach 1000
may differ by more in absolute terms than one that stays within 1. Floats compare with
``max_abs_err <= rtol * max(1, max|reference|)``; integers and booleans must match exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from edgesdk.manifest import OutputCheck, VerificationInfo

RELATIVE_TOLERANCE = {"float32": 1e-4, "float64": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}
# Reduced-precision kernels round some values apart from onnxruntime: an int8 activation one step
# off when it lies on a rounding boundary, float16 activations that onnxruntime's CPU kernels keep
# in float32. Where the model is undecided (a softmax whose two best classes are close) such a
# difference moves an output far (PP-OCRv4 rec, int8 and fp16 alike: 1-2 probabilities of 265,000
# off by 0.055). With ``stray_share``, an output passes when at most that share of its elements
# exceed the tolerance and its cosine stays this close to 1: a wrong kernel is off everywhere.
STRAY_COSINE = 0.999


def reference_runner(model_bytes: bytes) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """A function from inputs to onnxruntime's outputs (CPU provider, basic optimizations only,
    like the prepared model)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda inputs: dict(zip(names, session.run(names, dict(inputs))))


def reference_outputs(model_bytes: bytes, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return reference_runner(model_bytes)(inputs)


def reference_name() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__}"


def tolerance(reference: np.ndarray, float_rtol: float | None = None) -> float:
    """``float_rtol`` replaces the float tolerance (a reduced-precision deploy's)."""
    rtol = RELATIVE_TOLERANCE.get(reference.dtype.name)
    if rtol is None:
        return 0.0
    rtol = max(rtol, float_rtol or 0.0)
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return rtol * max(1.0, scale)


def compare(name: str, actual: np.ndarray, reference: np.ndarray, float_rtol: float | None = None, stray_share: float = 0.0) -> OutputCheck:
    if actual.shape != reference.shape:
        return OutputCheck(name=name, max_abs_err=math.inf, tolerance=0.0, cosine=0.0, psnr_db=None, passed=False)
    a, r = actual.astype(np.float64).ravel(), reference.astype(np.float64).ravel()
    err = float(np.max(np.abs(a - r))) if a.size else 0.0
    norms = float(np.linalg.norm(a) * np.linalg.norm(r))
    cosine = float(np.dot(a, r) / norms) if norms > 0 else (1.0 if err == 0 else 0.0)
    mse = float(np.mean((a - r) ** 2)) if a.size else 0.0
    peak = float(np.max(np.abs(r))) if r.size else 0.0
    psnr = 10 * math.log10(peak**2 / mse) if mse > 0 and peak > 0 else None
    limit = tolerance(reference, float_rtol)
    beyond = int(np.sum(np.abs(a - r) > limit))
    strays_only = beyond <= stray_share * a.size and cosine >= STRAY_COSINE
    passed = bool(np.all(np.isfinite(a) == np.isfinite(r))) and (err <= limit or strays_only)
    return OutputCheck(name=name, max_abs_err=err, tolerance=limit, cosine=cosine, psnr_db=psnr, beyond_tolerance=beyond, passed=passed)


def verification(
    actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], *, inputs: str, float_rtol: float | None = None, stray_share: float = 0.0
) -> VerificationInfo:
    checks = [compare(name, np.asarray(actual[name]), np.asarray(ref), float_rtol, stray_share) for name, ref in reference.items()]
    psnrs = [check.psnr_db for check in checks if check.psnr_db is not None]
    return VerificationInfo(
        reference=reference_name(),
        inputs=inputs,
        max_abs_err=max((check.max_abs_err for check in checks), default=0.0),
        cosine=min((check.cosine for check in checks), default=1.0),
        psnr_db=min(psnrs) if psnrs else None,
        passed=all(check.passed for check in checks),
        outputs=checks,
    )
