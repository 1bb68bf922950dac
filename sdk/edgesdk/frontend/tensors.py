"""Tensors users hand us or get back: ``.npz`` files, read without pickle, checked against specs."""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgesdk.errors import UserInputError
from edgesdk.frontend.model import TensorSpec

logger = logging.getLogger("edgesdk")


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
            np.savez(stream, **arrays)  # type: ignore[arg-type]  # numpy's stub: mypy matches **arrays against allow_pickle: bool
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def as_dtype(array: np.ndarray, spec: TensorSpec, origin: str, *, cast: bool = False) -> np.ndarray:
    """``array`` in ``spec``'s dtype. A conversion that keeps every value is silent; float64 to
    float32 (rounding only) is a warning; one that could change values (int64 to float32, float to
    int, int64 to int32) is an error unless ``cast``, then a warning."""
    if array.dtype.name == spec.dtype:
        return array
    if np.can_cast(array.dtype, spec.dtype, casting="safe"):
        return array.astype(spec.dtype)
    rounding = array.dtype.kind == "f" and np.dtype(spec.dtype).kind == "f"
    if not (rounding or cast):
        raise UserInputError(
            f"{origin}: input '{spec.name}' is {array.dtype.name}, the model expects {spec.dtype}; converting could change its values",
            hint=f"save it as {spec.dtype} (edgesdk run: or give --cast to convert anyway)",
        )
    logger.warning(f"{origin}: input '{spec.name}' is {array.dtype.name}, converted to the model's {spec.dtype}")
    return array.astype(spec.dtype)


def check_inputs(arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], origin: str, *, cast: bool = False) -> dict[str, np.ndarray]:
    """The inputs in model order, each with the model's shape and dtype (see `as_dtype`), or a clear error."""
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
        converted = as_dtype(array, spec, origin, cast=cast)
        # (np.ascontiguousarray would make a 0-d input 1-d)
        checked[spec.name] = converted if converted.flags.c_contiguous else np.ascontiguousarray(converted)
    return checked
