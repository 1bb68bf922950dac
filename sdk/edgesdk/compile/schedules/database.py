"""Tuned schedules: the records `edgesdk tune` keeps (edgesdk.compile.tuning_db), looked up by a
kernel's structure."""

from __future__ import annotations

from pathlib import Path

from edgesdk.compile.tuning_db import RECORD_FILES


def workload(func):
    """The IRModule a kernel is tuned and looked up as: MetaSchedule's key is its structure."""
    import tvm

    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


def open_database(directory: str | Path):
    from tvm.s_tir import meta_schedule as ms

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    workloads, records = (str(directory / name) for name in RECORD_FILES)
    return ms.database.JSONDatabase(path_workload=workloads, path_tuning_record=records, allow_missing=True, module_equality="structural")


def tuned_schedule(database, func, target):
    """``func`` with its tuned schedule from ``database``, or None when it has no record."""
    from tvm.s_tir import meta_schedule as ms

    mod = workload(func)
    if not database.has_workload(mod):
        return None
    sch = ms.tir_integration.compile_tir(database, mod, target)
    return None if sch is None else sch.mod["main"]
