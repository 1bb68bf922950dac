"""Tensors users hand us or get back: ``.npz`` files, read without pickle, checked against specs."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgesdk.errors import UserInputError
from edgesdk.model import TensorSpec


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` file; object arrays (which would need pickle) are refused."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    with open(path, "rb") as stream:
        # A zip starts with a local header, or is empty (end record); np.load would take any
        # other bytes for a pickle.
        if stream.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise UserInputError(f"{path}: not a valid .npz file (not a zip archive)", hint="save arrays with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise UserInputError(f"{path}: holds Python objects (pickled); edgesdk reads only plain numeric arrays") from None
        raise UserInputError(f"{path}: not a valid .npz file: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserInputError(f"{path}: not a valid .npz file ({type(exc).__name__}: {exc})") from None


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write atomically: a temporary file beside ``path``, then a rename."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent or ".")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_inputs(arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], origin: str) -> dict[str, np.ndarray]:
    """The inputs in model order, each with the model's shape and dtype, or a clear error."""
    expected = [spec.name for spec in specs]
    missing = [name for name in expected if name not in arrays]
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(extra)}"] if extra else [])
        raise UserInputError(f"{origin}: inputs do not match the model ({'; '.join(parts)})", hint=f"the model's inputs are: {', '.join(expected)}")
    checked = {}
    for spec in specs:
        array = np.asarray(arrays[spec.name])
        if tuple(array.shape) != spec.shape:
            raise UserInputError(f"{origin}: input '{spec.name}' has shape {list(array.shape)}, the model expects {list(spec.shape)}")
        if array.dtype.name != spec.dtype:
            if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
                raise UserInputError(f"{origin}: input '{spec.name}' is {array.dtype.name}, the model expects {spec.dtype}")
            array = array.astype(spec.dtype)
        checked[spec.name] = np.ascontiguousarray(array)
    return checked
