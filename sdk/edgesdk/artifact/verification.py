"""Numerics check: the compiled model against onnxruntime on the same inputs, as the manifest
records it (edgesdk.frontend.agreement says how two outputs are compared)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from edgesdk.artifact.manifest import OutputCheck, VerificationInfo
from edgesdk.frontend.agreement import compare
from edgesdk.frontend.noise import noise_outputs
from edgesdk.frontend.reference import reference_name, reference_outputs
from edgesdk.quantization.recipe import float_tolerance, stray_share


def check_output(
    name: str, actual: np.ndarray, reference: np.ndarray, float_rtol: float | None = None, stray_share: float = 0.0, noise: Sequence[np.ndarray] = ()
) -> OutputCheck:
    found = compare(np.asarray(actual), np.asarray(reference), float_rtol, stray_share, noise)
    return OutputCheck(
        name=name, max_abs_err=found.max_abs_err, tolerance=found.tolerance, cosine=found.cosine, psnr_db=found.psnr_db,
        beyond_tolerance=found.beyond_tolerance, noise_beyond_tolerance=found.noise_beyond_tolerance, noise_cosine=found.noise_cosine,
        passed=found.passed,
    )  # fmt: skip


def verification(
    actual: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    *,
    inputs: str,
    float_rtol: float | None = None,
    stray_share: float = 0.0,
    noise: Sequence[Mapping[str, np.ndarray]] = (),
) -> VerificationInfo:
    checks = [check_output(name, actual[name], ref, float_rtol, stray_share, [draw[name] for draw in noise]) for name, ref in reference.items()]
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


def verify_against_reference(
    actual: Mapping[str, np.ndarray], model: bytes, inputs: Mapping[str, np.ndarray], *, inputs_kind: str, scheme: str
) -> VerificationInfo:
    """``actual`` (the compiled model's outputs on ``inputs``) against onnxruntime running
    ``model``, with the tolerances of the precision ``scheme``; a reduced-precision scheme's also
    measure the reference's own rounding noise (edgesdk.frontend.noise)."""
    share, proto = stray_share(scheme), onnx.ModelProto.FromString(model)
    return verification(
        actual,
        reference_outputs(model, inputs),
        inputs=inputs_kind,
        float_rtol=float_tolerance(scheme, proto),
        stray_share=share,
        noise=noise_outputs(proto, inputs) if share else (),
    )
