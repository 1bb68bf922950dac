"""Numerics check: the compiled model against onnxruntime on the same inputs, as the manifest
records it (edgesdk.frontend.agreement says how two outputs are compared)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgesdk.artifact.manifest import OutputCheck, VerificationInfo
from edgesdk.frontend.agreement import compare
from edgesdk.frontend.reference import reference_name


def check_output(name: str, actual: np.ndarray, reference: np.ndarray, float_rtol: float | None = None, stray_share: float = 0.0) -> OutputCheck:
    found = compare(np.asarray(actual), np.asarray(reference), float_rtol, stray_share)
    return OutputCheck(
        name=name, max_abs_err=found.max_abs_err, tolerance=found.tolerance, cosine=found.cosine, psnr_db=found.psnr_db,
        beyond_tolerance=found.beyond_tolerance, passed=found.passed,
    )  # fmt: skip


def verification(
    actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], *, inputs: str, float_rtol: float | None = None, stray_share: float = 0.0
) -> VerificationInfo:
    checks = [check_output(name, actual[name], ref, float_rtol, stray_share) for name, ref in reference.items()]
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
