"""The artifact directory's layout, hashes, and how it is put in place.

Layout (the paths are recorded, with their SHA-256, in ``manifest.json``)::

    manifest.json            how and from what the artifact was made (edgesdk.artifact.manifest)
    model.onnx               the prepared model: static shapes, folded; the numerics reference
    params.npz               the weights, in the compiled function's argument order
    analysis.json            the fused kernels in call order: op classes, FLOPs, tensors
    device/                  what goes to the device (shared library, or C source + object)
    host/                    the build of the same lowered model for this machine (simulation);
                             absent when the device build runs natively here
    verification/inputs.npz  the inputs the deploy verified on
    report.html              the deploy's report: cost, partition, memory, quantization, verification

A directory is written under a temporary name beside its destination and renamed into place,
while a lock (``destination_lock``) keeps a second deploy from writing the same destination; the
temporary directories of a deploy that was killed are removed by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from edgesdk.artifact.manifest import MANIFEST_NAME, Manifest
from edgesdk.compile.build_cache import cache_root, hash_files, remove_stale, sha256_file
from edgesdk.compile.worker import ANALYSIS_FILE, WEIGHTS_FILE
from edgesdk.errors import UserInputError, describe_validation_error

MODEL_FILE = "model.onnx"
INPUTS_FILE = "verification/inputs.npz"
REPORT_FILE = "report.html"
__all__ = [
    "ANALYSIS_FILE",
    "INPUTS_FILE",
    "MANIFEST_NAME",
    "MODEL_FILE",
    "REPORT_FILE",
    "WEIGHTS_FILE",
    "check_destination",
    "destination_lock",
    "hash_tree",
    "place",
    "read_manifest",
    "sha256_file",
    "staging_dir",
]


def hash_tree(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` but the manifest, by POSIX relative path."""
    return hash_files(root, MANIFEST_NAME)


def read_manifest(path: Path) -> Manifest | None:
    """The manifest of the artifact at ``path``, or None when ``path`` is not an artifact."""
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        return None
    try:
        return Manifest.model_validate_json(manifest_path.read_bytes())
    except ValidationError as exc:
        raise UserInputError(f"{manifest_path}: not a valid edgesdk manifest: {describe_validation_error(exc)}") from None


def check_destination(out: Path) -> None:
    """Refuse a destination that holds something other than an edgesdk artifact, or where nothing
    can be written (checked by making and removing a directory in its nearest existing parent)."""
    if not out.exists():
        parent = next(ancestor for ancestor in out.absolute().parents if ancestor.exists())
        if not parent.is_dir():
            raise UserInputError(f"{out}: {parent} is a file, not a directory", hint="choose another output directory with -o")
        try:
            Path(tempfile.mkdtemp(prefix=".edgesdk-probe-", dir=parent)).rmdir()
        except OSError as exc:
            raise UserInputError(f"{out}: cannot write in {parent} ({exc.strerror or exc})", hint="choose another output directory with -o") from None
        return
    if not out.is_dir():
        raise UserInputError(f"{out}: exists and is not a directory; refusing to replace it")
    if any(out.iterdir()) and read_manifest(out) is None:
        raise UserInputError(
            f"{out}: exists and is not an edgesdk artifact; refusing to write into it",
            hint="choose another output directory with -o",
        )


@contextlib.contextmanager
def destination_lock(out: Path) -> Iterator[None]:
    """Held while a deploy writes ``out``: a second deploy to the same destination fails at once
    (exit 2) instead of racing the first. The lock file lives in the cache directory, keyed by the
    destination's absolute path, so nothing appears beside the user's files; the temporary
    directories a killed deploy left beside ``out`` are removed once the lock is held."""
    locks = cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{hashlib.sha256(str(out.absolute()).encode()).hexdigest()[:32]}.lock"
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise UserInputError(f"{out}: another deploy is writing it now", hint="wait for it to finish, or choose another -o") from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                break  # ours is the file at that path, not one its last holder removed
        os.close(descriptor)
    try:
        if out.parent.is_dir():
            remove_stale(out.parent, f".{out.name}.partial-")
            remove_stale(out.parent, f".{out.name}.old-")
        yield
    finally:
        os.unlink(path)
        os.close(descriptor)


def staging_dir(out: Path) -> Path:
    """A temporary directory beside ``out``, on the same file system, so placing it is a rename
    (named with our process id, so a later deploy knows when its owner is gone)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))


def place(staged: Path, out: Path) -> None:
    """Move a complete artifact into ``out``, replacing an older artifact there."""
    check_destination(out)
    if out.exists() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        staged.rename(out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
    retired.rmdir()
    out.rename(retired)
    try:
        staged.rename(out)
    except OSError:
        retired.rename(out)
        raise
    shutil.rmtree(retired, ignore_errors=True)
