"""Content-addressed cache of compiled builds, so an identical deploy does not compile again.

A key is the SHA-256 of canonical JSON naming everything that decides the output: the prepared
model's hash, the build spec (target, emit, toolchain), and the versions of edgesdk, TVM and the
lowering pipeline. Entries are directories written to a temporary name and renamed into place, so
concurrent deploys and interrupted ones never leave a half entry. Each entry records the SHA-256
of its files (``DIGEST_FILE``); an entry whose files no longer match (a disk error, an edit) is
removed on reading and built again. Delete the directory to clear it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

CACHE_ENV = "EDGESDK_CACHE_DIR"
DIGEST_FILE = ".digest.json"
logger = logging.getLogger("edgesdk")


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgesdk"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale(directory: Path, prefix: str) -> None:
    """Remove the temporary directories ``<prefix><pid>-...`` in ``directory`` whose process is gone
    (a deploy or a build killed before it could clean up)."""
    for path in directory.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def hash_files(root: Path, record: str) -> dict[str, str]:
    """SHA-256 of every file under ``root`` but the ``record`` that lists them, by POSIX relative path."""
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() != record
    }


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class BuildCache:
    """``get(kind, key)`` -> the entry's directory or None; ``put`` moves a staged directory in."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = root or cache_root()
        self.enabled = enabled

    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def get(self, kind: str, key: str) -> Path | None:
        """The entry, when there is one and its files are as they were stored."""
        path = self.entry(kind, key)
        if not self.enabled or not path.is_dir():
            return None
        try:
            recorded = json.loads((path / DIGEST_FILE).read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded != hash_files(path, DIGEST_FILE):
            logger.warning(f"compile cache entry {path} was damaged (its files changed); building it again")
            doomed = path.with_name(f".damaged-{os.getpid()}-{path.name}")
            with contextlib.suppress(OSError):
                path.rename(doomed)  # out of the way at once; a concurrent reader may have taken it
                shutil.rmtree(doomed, ignore_errors=True)
            return None
        return path

    def staging(self) -> Path:
        """A scratch directory on the cache's file system, so that ``put`` is a rename."""
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale(self.root, ".staging-")
        return Path(tempfile.mkdtemp(prefix=f".staging-{os.getpid()}-", dir=self.root))

    def put(self, kind: str, key: str, staged: Path) -> Path:
        path = self.entry(kind, key)
        (staged / DIGEST_FILE).write_text(json.dumps(hash_files(staged, DIGEST_FILE), sort_keys=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            staged.rename(path)
        except OSError:
            # Another deploy stored the same entry first; theirs is identical.
            shutil.rmtree(staged, ignore_errors=True)
        return path
