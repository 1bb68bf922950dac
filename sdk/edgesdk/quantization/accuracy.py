"""How far a quantized model's outputs are from the float model's, on the calibration samples."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgesdk.frontend.agreement import cosine, psnr_db
from edgesdk.frontend.reference import reference_runner


class OutputAgreement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    cosine: float = Field(description="Cosine similarity to the float model's output, over all samples.")
    psnr_db: float | None = Field(description="Peak signal-to-noise ratio against the float output (None when identical).")
    top1_agreement: float | None = Field(
        None, description="Share of samples whose arg-max (last axis) matches the float model's: classifier-like outputs only."
    )


class Accuracy(BaseModel):
    """Agreement of the quantized model with the float model (onnxruntime runs both)."""

    model_config = ConfigDict(extra="forbid")

    samples: int
    outputs: list[OutputAgreement]

    @property
    def cosine(self) -> float:
        """The worst output's cosine similarity."""
        return min((output.cosine for output in self.outputs), default=1.0)

    @property
    def top1_agreement(self) -> float | None:
        """The worst classifier-like output's top-1 agreement (None: no such output)."""
        shares = [output.top1_agreement for output in self.outputs if output.top1_agreement is not None]
        return min(shares) if shares else None

    def short(self) -> str:
        """E.g. ``top-1 98.4%, cos 0.9991``: what a table cell shows."""
        top1 = self.top1_agreement
        return (f"top-1 {100 * top1:.1f}%, " if top1 is not None else "") + f"cos {self.cosine:.4f}"

    def text(self, what: str) -> str:
        """One line: agreement with the float model on ``what`` (e.g. calibration samples)."""
        return f"{self.short()} vs the float model on {self.samples} {what}"


def agreement(name: str, quantized: list[np.ndarray], reference: list[np.ndarray]) -> OutputAgreement:
    q = np.stack([np.asarray(a, np.float64) for a in quantized])
    r = np.stack([np.asarray(a, np.float64) for a in reference])
    classifier = r.ndim >= 2 and r.shape[-1] > 1 and int(np.prod(r.shape[1:-1])) == 1  # one score vector per sample
    top1 = float(np.mean(q.reshape(len(q), -1).argmax(axis=-1) == r.reshape(len(r), -1).argmax(axis=-1))) if classifier else None
    return OutputAgreement(name=name, cosine=cosine(q, r), psnr_db=psnr_db(q, r), top1_agreement=top1)


def measure_agreement(quantized_bytes: bytes, float_bytes: bytes, samples: list[dict[str, np.ndarray]]) -> Accuracy:
    run_quantized, run_float = reference_runner(quantized_bytes), reference_runner(float_bytes)
    quantized = [run_quantized(sample) for sample in samples]
    reference = [run_float(sample) for sample in samples]
    names = list(reference[0])
    return Accuracy(samples=len(samples), outputs=[agreement(n, [q[n] for q in quantized], [r[n] for r in reference]) for n in names])
