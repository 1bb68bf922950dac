"""Where tuning records live, and what a build needs to know about them (no TVM here).

One database per target, in the edgesdk cache: ``tuning/v<TUNING_VERSION>/<target digest>/``, with
MetaSchedule's JSON database (``database_workload.json``, ``database_tuning_record.json``: a
workload is a fused kernel, matched by structure, so a layer tuned once serves every model that
contains it) and our ledger (``ledger.json``: per workload, the rule-scheduled and the tuned time
and which one builds use). Only schedules that made their model faster are in that database
(candidates wait in ``pending/``: edgesdk.compile.tuner); the ledger also remembers the others,
so a second `tune` does not measure them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgesdk.compile.build_cache import cache_key, cache_root
from edgesdk.versions import tvm_version

TUNING_VERSION = 1
NO_TUNING_ENV = "EDGESDK_NO_TUNING"  # set: builds ignore every tuning database (rules only)
LEDGER = "ledger.json"
RECORD_FILES = ("database_workload.json", "database_tuning_record.json")


class TaskRecord(BaseModel):
    """One tuned workload (a fused kernel)."""

    model_config = ConfigDict(extra="forbid")

    kernel: str  # its name in the model it was first tuned in
    workload: str  # structural hash
    macs: int
    rules_ms: float
    tuned_ms: float | None  # None: MetaSchedule found no valid schedule
    trials: int
    chosen: str  # "tuned", "rules", or "pending" (faster alone; not yet checked in its model)


def database_dir(target: dict[str, Any]) -> Path:
    digest = cache_key({"target": target, "tvm": tvm_version(), "tuning": TUNING_VERSION})[:20]
    return cache_root() / "tuning" / f"v{TUNING_VERSION}" / digest


def read_ledger(directory: Path) -> dict[str, TaskRecord]:
    path = directory / LEDGER
    if not path.is_file():
        return {}
    return {key: TaskRecord.model_validate(value) for key, value in json.loads(path.read_text()).items()}


def write_ledger(directory: Path, ledger: dict[str, TaskRecord]) -> None:
    """Atomically: a tune killed between two tasks keeps every task it finished."""
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".ledger-")
    with os.fdopen(handle, "w") as stream:
        json.dump({key: record.model_dump() for key, record in ledger.items()}, stream, indent=1)
    os.replace(temporary, directory / LEDGER)


def build_fields(target: dict[str, Any]) -> dict[str, str]:
    """BuildSpec's ``tuning`` (the database directory) and ``tuning_digest`` (of its records) when
    the target's database holds a tuned schedule, else nothing (also with EDGESDK_NO_TUNING set)."""
    if os.environ.get(NO_TUNING_ENV):
        return {}
    directory = database_dir(target)
    if not any(record.chosen == "tuned" for record in read_ledger(directory).values()):
        return {}
    digest = hashlib.sha256()
    for name in RECORD_FILES:
        path = directory / name
        digest.update(path.read_bytes() if path.is_file() else b"")
    return {"tuning": str(directory), "tuning_digest": digest.hexdigest()}
