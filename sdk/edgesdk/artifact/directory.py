"""The ``Artifact`` a deploy returns and ``load_artifact`` reads: its manifest, its files, a run of
it on this host and a check of it (edgesdk.artifact.files has the layout)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgesdk.artifact.emulation import EmulatedRun, run_device_code
from edgesdk.artifact.files import ANALYSIS_FILE, INPUTS_FILE, MANIFEST_NAME, MODEL_FILE, WEIGHTS_FILE, hash_tree, read_manifest
from edgesdk.artifact.manifest import Manifest, VerificationInfo
from edgesdk.compile.host_runner import HostRunner
from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.compile.standalone import identifier
from edgesdk.compile.worker import run_isolated
from edgesdk.errors import CheckFailed, UserInputError
from edgesdk.frontend.model import TensorSpec
from edgesdk.frontend.tensors import check_inputs, load_npz
from edgesdk.simulate.measure import Measurement


class Artifact:
    """A deployed model: its manifest, its files, and a functional run of it on this host."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = Path(path)
        self.manifest = manifest
        inputs = [TensorSpec(t.name, tuple(t.shape), t.dtype) for t in manifest.model.inputs]
        outputs = [t.name for t in manifest.model.outputs]
        self._runner = HostRunner(self.path / manifest.build.simulation_library, self.path / WEIGHTS_FILE, inputs, outputs)

    def __repr__(self) -> str:
        return f"Artifact({str(self.path)!r}, device={self.manifest.device!r}, model={self.manifest.model.name!r})"

    @property
    def runner(self) -> HostRunner:
        """The host simulation (for pc, the device library itself)."""
        return self._runner

    @property
    def runs_natively(self) -> bool:
        """Whether the device files themselves run on this host (then they are the simulation)."""
        return self.manifest.build.simulation_library in self.manifest.build.device_files

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs, with the static shapes it was compiled for."""
        return list(self._runner.inputs)

    @property
    def analysis(self) -> ModelAnalysis:
        """The compiled kernels in call order (``analysis.json``)."""
        return ModelAnalysis.model_validate_json((self.path / ANALYSIS_FILE).read_bytes())

    def checked_inputs(self, inputs: Mapping[str, np.ndarray], *, cast: bool = False) -> dict[str, np.ndarray]:
        """``inputs`` as the compiled code takes them: the model's dtypes (``cast``: see ``run``),
        without the inputs fixed at deploy."""
        return check_inputs(self._without_bound(inputs), self.inputs, "inputs", cast=cast)

    def run(self, inputs: Mapping[str, np.ndarray], *, isolated: bool = False, cast: bool = False) -> dict[str, np.ndarray]:
        """Run the compiled model on this host; outputs keyed by the model's output names.

        ``isolated=True`` runs it in a child process (TVM loaded there), so that a crash in the
        compiled code becomes an ``EdgeSDKError`` instead of taking the caller down. Inputs of
        another dtype are converted when no value can change (float64 to float32 with a warning);
        ``cast=True`` converts any (int64 to float32, say). An input fixed at deploy
        (``manifest.model.bound_inputs``) may be given only with its fixed value.
        """
        if not isolated:
            return self._runner.run(self._without_bound(inputs), cast=cast)
        runner = self._runner
        return run_isolated(runner.library, runner.weights_file, self.checked_inputs(inputs, cast=cast), runner.outputs)

    def _without_bound(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        bound = self.manifest.model.bound_inputs
        for name in set(bound) & set(inputs):
            if not np.array_equal(np.asarray(inputs[name]).ravel(), np.asarray(bound[name]).ravel()):
                raise UserInputError(
                    f"{self.path}: input '{name}' sets a shape and was fixed to {bound[name]} at deploy; this artifact runs only with that value",
                    hint="deploy again with --inputs holding the new value",
                )
        return {name: array for name, array in inputs.items() if name not in bound} if set(bound) & set(inputs) else inputs

    def record(self, measurement: Measurement) -> None:
        """Add ``measurement`` to the manifest's ``measured`` (the file replaced whole; the other
        files and their hashes are untouched)."""
        self.manifest.measured.append(measurement)
        manifest_path = self.path / MANIFEST_NAME
        staged = manifest_path.with_name(f".{MANIFEST_NAME}.{os.getpid()}.partial")
        staged.write_text(self.manifest.model_dump_json(indent=2) + "\n")
        os.replace(staged, manifest_path)

    def check_files(self) -> None:
        """Raise ``CheckFailed`` naming the first file that is missing, changed or unexpected."""
        actual = hash_tree(self.path)
        for name, digest in self.manifest.files.items():
            if name not in actual:
                raise CheckFailed(f"{self.path}: file {name} is missing")
            if actual[name] != digest:
                raise CheckFailed(f"{self.path}: file {name} was modified (sha256 differs from the manifest)")
        extra = sorted(set(actual) - set(self.manifest.files))
        if extra:
            raise CheckFailed(f"{self.path}: file {extra[0]} is not part of the artifact")

    def emulate(self, inputs: Mapping[str, np.ndarray], *, cast: bool = False) -> EmulatedRun:
        """Run the device's own code on its instruction set under QEMU (edgesdk.artifact.emulation):
        mcu artifacts as firmware, AArch64 ones deployed with ``standalone`` as a static program."""
        checked = self.checked_inputs(inputs, cast=cast)
        name = self.manifest.model.name
        emulated = run_device_code(self.path / "device", name, identifier(name), self.manifest.target, checked, self.inputs, self.manifest.model.outputs)
        if emulated.info.instructions is not None and self.manifest.estimate is not None:
            emulated.info.simulated_cycles = self.manifest.estimate.cycles
        return emulated

    def verify(self, *, emulate: bool = False) -> VerificationInfo:
        """Re-check every file's hash, then the numerics against onnxruntime on the stored inputs:
        of the simulation on this host, or (``emulate``) of the device code under QEMU, recorded
        in the result's ``emulation``."""
        from edgesdk.artifact.verification import verify_against_reference

        self.check_files()
        inputs = load_npz(self.path / INPUTS_FILE)
        model = (self.path / MODEL_FILE).read_bytes()
        emulated = self.emulate(inputs) if emulate else None
        outputs = emulated.outputs if emulated is not None else self.run(inputs, isolated=True)
        result = verify_against_reference(outputs, model, inputs, inputs_kind=self.manifest.verification.inputs, scheme=self.manifest.quantization.scheme)
        if emulated is not None:
            result.emulation = emulated.info
        if not result.passed:
            raise CheckFailed(failure_message(self.path, result))
        return result


def failure_message(path: Path, result: VerificationInfo) -> str:
    failed = [check for check in result.outputs if not check.passed]
    described = ", ".join(
        f"'{c.name}' (max abs err {c.max_abs_err:.3g} > {c.tolerance:.3g}; {c.beyond_tolerance} of its values beyond it, cosine {c.cosine:.6f}"
        + (f"; onnxruntime under rounding noise: {c.noise_beyond_tolerance}, cosine {c.noise_cosine:.6f}" if c.noise_cosine is not None else "")
        + ")"
        for c in failed
    )
    return f"{path}: numerics differ from {result.reference} on output {described}"


def load_artifact(path: str | os.PathLike) -> Artifact:
    path = Path(path)
    if not path.is_dir():
        raise UserInputError(f"{path}: no such artifact directory")
    manifest = read_manifest(path)
    if manifest is None:
        raise UserInputError(f"{path}: not an edgesdk artifact (no {MANIFEST_NAME})")
    return Artifact(path, manifest)
