"""Content-addressed cache of compiled builds, so an identical deploy does not compile again.

A key is the SHA-256 of canonical JSON naming everything that decides the output: the prepared
model's hash, the build spec (target, emit, toolchain), and the versions of edgesdk, TVM and the
lowering pipeline. Entries are directories written to a temporary name and renamed into place, so
concurrent deploys and interrupted ones never leave a half entry. Delete the directory to clear it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

CACHE_ENV = "EDGESDK_CACHE_DIR"


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgesdk"


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
        path = self.entry(kind, key)
        return path if self.enabled and path.is_dir() else None

    def staging(self) -> Path:
        """A scratch directory on the cache's file system, so that ``put`` is a rename."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def put(self, kind: str, key: str, staged: Path) -> Path:
        path = self.entry(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            staged.rename(path)
        except OSError:
            # Another deploy stored the same entry first; theirs is identical.
            shutil.rmtree(staged, ignore_errors=True)
        return path
