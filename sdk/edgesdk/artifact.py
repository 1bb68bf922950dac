"""An artifact directory: what `deploy` writes, and what `run` and `verify` read.

Layout (the paths are recorded, with their SHA-256, in ``manifest.json``)::

    manifest.json            how and from what the artifact was made (edgesdk.manifest)
    model.onnx               the prepared model: static shapes, folded; the numerics reference
    params.npz               the weights, in the compiled function's argument order
    analysis.json            the fused kernels in call order: op classes, FLOPs, tensors
    device/                  what goes to the device (shared library, or C source + object)
    host/                    the build of the same lowered model for this machine (simulation);
                             absent when the device build runs natively here
    verification/inputs.npz  the inputs the deploy verified on

A directory is written under a temporary name beside its destination and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from edgesdk.errors import CheckFailed, UserInputError, describe_validation_error
from edgesdk.manifest import MANIFEST_NAME, Manifest, VerificationInfo
from edgesdk.model import TensorSpec
from edgesdk.tensors import check_inputs, load_npz, save_npz

MODEL_FILE = "model.onnx"
PARAMS_FILE = "params.npz"
ANALYSIS_FILE = "analysis.json"
INPUTS_FILE = "verification/inputs.npz"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` but the manifest, by POSIX relative path."""
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() != MANIFEST_NAME
    }


def read_manifest(path: Path) -> Manifest | None:
    """The manifest of the artifact at ``path``, or None when ``path`` is not an artifact."""
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        return None
    try:
        return Manifest.model_validate_json(manifest_path.read_bytes())
    except ValidationError as exc:
        raise UserInputError(f"{manifest_path}: not a valid edgesdk manifest: {describe_validation_error(exc)}") from None


class HostRunner:
    """The functional simulation: a host build of the lowered model, run by TVM's Relax VM."""

    def __init__(self, library: Path, weights: Path, inputs: list[TensorSpec], outputs: list[str]):
        self.library, self.weights_file, self.inputs, self.outputs = library, weights, inputs, outputs
        self._vm = None
        self._weights: list = []

    def _load(self) -> None:
        import tvm
        from tvm import relax

        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(self.library)), tvm.cpu())
        weights = load_npz(self.weights_file)
        self._weights = [tvm.runtime.tensor(weights[key]) for key in sorted(weights)]

    @property
    def vm(self):
        """TVM's Relax VM running the library, loaded on first use."""
        if self._vm is None:
            self._load()
        return self._vm

    def run(self, inputs: Mapping[str, np.ndarray], *, isolated: bool = False, cast: bool = False) -> dict[str, np.ndarray]:
        """Outputs by name. ``isolated`` runs in a TVM worker process, so a crash is an error;
        ``cast`` converts inputs whose dtype conversion could change values (edgesdk.tensors.as_dtype)."""
        arrays = check_inputs(inputs, self.inputs, "inputs", cast=cast)
        return self._run_in_worker(arrays) if isolated else self._run_here(arrays)

    def _run_in_worker(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from edgesdk.tvm_worker import Job, RunTask, run_in_worker

        with tempfile.TemporaryDirectory(prefix="edgesdk-run-") as scratch:
            inputs, outputs = Path(scratch) / "inputs.npz", Path(scratch) / "outputs.npz"
            save_npz(inputs, arrays)
            task = RunTask(library=str(self.library), weights=str(self.weights_file), inputs=str(inputs), outputs=str(outputs), output_names=self.outputs)
            run_in_worker(Job(run=task), Path(scratch) / "job", model_name=self.library.stem)
            return load_npz(outputs)

    def invoker(self, inputs: Mapping[str, np.ndarray]):
        """A call of the compiled function on inputs already in TVM's memory: what a device does
        per inference, without converting numpy arrays (used to time it)."""
        import tvm

        arrays = [tvm.runtime.tensor(array) for array in check_inputs(inputs, self.inputs, "inputs").values()]
        main = self.vm["main"]
        return lambda: main(*arrays, *self._weights)

    def _run_here(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tvm

        result = self.vm["main"](*(tvm.runtime.tensor(array) for array in arrays.values()), *self._weights)
        values = [result] if hasattr(result, "numpy") else list(result)
        return {name: value.numpy() for name, value in zip(self.outputs, values)}


class Artifact:
    """A deployed model: its manifest, its files, and a functional run of it on this host."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = Path(path)
        self.manifest = manifest
        inputs = [TensorSpec(t.name, tuple(t.shape), t.dtype) for t in manifest.model.inputs]
        outputs = [t.name for t in manifest.model.outputs]
        self._runner = HostRunner(self.path / manifest.build.simulation_library, self.path / PARAMS_FILE, inputs, outputs)

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

    def run(self, inputs: Mapping[str, np.ndarray], *, isolated: bool = False, cast: bool = False) -> dict[str, np.ndarray]:
        """Run the compiled model on this host; outputs keyed by the model's output names.

        ``isolated=True`` runs it in a child process (TVM loaded there), so that a crash in the
        compiled code becomes an ``EdgeSDKError`` instead of taking the caller down. Inputs of
        another dtype are converted when no value can change (float64 to float32 with a warning);
        ``cast=True`` converts any (int64 to float32, say).
        """
        return self._runner.run(inputs, isolated=isolated, cast=cast)

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

    def verify(self) -> VerificationInfo:
        """Re-check every file's hash, then the numerics against onnxruntime on the stored inputs."""
        import onnx

        from edgesdk.precision import float_tolerance, stray_share
        from edgesdk.verify import reference_outputs, verification

        self.check_files()
        inputs = load_npz(self.path / INPUTS_FILE)
        model = (self.path / MODEL_FILE).read_bytes()
        reference = reference_outputs(model, inputs)
        result = verification(
            self.run(inputs, isolated=True), reference, inputs=self.manifest.verification.inputs,
            float_rtol=float_tolerance(self.manifest.quantization.scheme, onnx.ModelProto.FromString(model)),
            stray_share=stray_share(self.manifest.quantization.scheme),
        )
        if not result.passed:
            raise CheckFailed(failure_message(self.path, result))
        return result


def failure_message(path: Path, result: VerificationInfo) -> str:
    failed = [check for check in result.outputs if not check.passed]
    described = ", ".join(
        f"'{c.name}' (max abs err {c.max_abs_err:.3g} > {c.tolerance:.3g}; {c.beyond_tolerance} of its values beyond it, cosine {c.cosine:.6f})" for c in failed
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


def check_destination(out: Path) -> None:
    """Refuse a destination that holds something other than an edgesdk artifact."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserInputError(f"{out}: exists and is not a directory; refusing to replace it")
    if any(out.iterdir()) and read_manifest(out) is None:
        raise UserInputError(
            f"{out}: exists and is not an edgesdk artifact; refusing to write into it",
            hint="choose another output directory with -o",
        )


def staging_dir(out: Path) -> Path:
    """A temporary directory beside ``out``, on the same file system, so placing it is a rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))


def place(staged: Path, out: Path) -> None:
    """Move a complete artifact into ``out``, replacing an older artifact there."""
    check_destination(out)
    if out.exists() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        staged.rename(out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    retired.rmdir()
    out.rename(retired)
    try:
        staged.rename(out)
    except OSError:
        retired.rename(out)
        raise
    shutil.rmtree(retired, ignore_errors=True)
