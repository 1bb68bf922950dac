"""MetaSchedule tuning of a model's conv and matmul kernels, against the schedule rules (worker side).

Each fused kernel a rule schedules is a task: MetaSchedule searches its own space (its default
CPU rules: multi-level tiling, vectorisation, parallelisation, unrolling) with an XGBoost cost
model for ``trials`` candidates measured on this machine. The winner is then timed beside the
rule-scheduled kernel, in the same way, here; only a schedule that beats the rules by more than the
noise (MARGIN) goes into the database that builds read (edgesdk.compile.tuning_db). The time
budget is checked between tasks; every finished task is kept at once, so a stopped tune resumes.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.compile.schedules.database import open_database, workload
from edgesdk.compile.tuning_db import TaskRecord, read_ledger, write_ledger

MARGIN = 0.03  # a tuned kernel must be this much faster than the rules' to be used
TIMING_REPEATS = 7
# Per candidate. MetaSchedule's default (30 s) fails every build of a loaded 2-core machine: each
# builder process imports TVM and compiles with LLVM.
BUILD_TIMEOUT_S = 180


def tasks(mod, target) -> list[tuple[str, str, Any, int]]:
    """(kernel name, workload hash, workload, multiply-adds) of every distinct contraction kernel,
    most work first."""
    import tvm
    import tvm_ffi
    from tvm import s_tir

    from edgesdk.compile.schedules import contraction

    found: dict[str, tuple[str, str, Any, int]] = {}
    for gvar, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        nest = contraction.match(s_tir.Schedule(func))
        if nest is None:
            continue
        module = workload(func)
        key = f"{tvm_ffi.structural_hash(module) & (2**64 - 1):016x}"
        found.setdefault(key, (gvar.name_hint, key, module, math.prod(nest.spatial) * math.prod(nest.reduction)))
    return sorted(found.values(), key=lambda task: -task[3])


def kernel_ms(func, target) -> float:
    """Median time of one call of ``func`` built for ``target``, on zeroed arguments."""
    import tvm

    library = tvm.compile(workload(func), target=target)
    args = [tvm.runtime.tensor(np.zeros([int(dim) for dim in param.shape], str(param.dtype))) for param in func.params]
    timer = library.mod.time_evaluator("main", tvm.cpu(), number=10, repeat=TIMING_REPEATS, min_repeat_ms=20)
    return statistics.median(timer(*args).results) * 1e3


def tune(
    mod, target_json: dict[str, Any], directory: Path, *, trials: int, budget_s: float | None, seed: int, report: Callable[[str], None]
) -> tuple[list[TaskRecord], int]:
    """Tune the contraction kernels of ``mod`` (a Relax module before legalization) for
    ``target_json``; returns the records of this model's tasks (tuned now or before) and how many
    tasks the budget left untuned."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from edgesdk.compile.lowering import fusion_passes
    from edgesdk.compile.schedules import cpu_spec, schedule_func

    report("fuse")
    target = tvm.target.Target(target_json)
    with target:
        fused = tvm.transform.Sequential(fusion_passes(target))(mod)
    # MetaSchedule sizes its parallel loops by the target's core count.
    measured_on = tvm.target.Target({**target_json, "num-cores": os.cpu_count() or 1})
    cpu = cpu_spec(target)
    ledger = read_ledger(directory)
    database = open_database(directory)
    started, results, untuned = time.monotonic(), [], 0
    todo = tasks(fused, target)
    for number, (name, key, module, macs) in enumerate(todo, start=1):
        if key in ledger:
            results.append(ledger[key])
            continue
        if budget_s is not None and time.monotonic() - started > budget_s:
            untuned += 1
            continue
        report(f"tune {number}/{len(todo)} {name}")
        func = module["main"]
        ruled = schedule_func(func, cpu) if cpu is not None else None
        rules_ms = kernel_ms(ruled if ruled is not None else func, measured_on)
        tuned_ms, best = None, None
        with tempfile.TemporaryDirectory(prefix="edgesdk-tune-") as work:
            scratch = ms.tune_tir(
                mod=module,
                target=measured_on,
                work_dir=work,
                max_trials_global=trials,
                num_trials_per_iter=min(16, trials),
                builder=ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S),
                runner=ms.runner.LocalRunner(timeout_sec=BUILD_TIMEOUT_S),
                seed=seed,
            )
            top = scratch.get_top_k(scratch.commit_workload(module), 1)
            if top:
                best = top[0]
                sch = ms.tir_integration.compile_tir(scratch, module, measured_on)
                tuned_ms = kernel_ms(sch.mod["main"], measured_on) if sch is not None else None
        chosen = "tuned" if tuned_ms is not None and tuned_ms < rules_ms * (1 - MARGIN) else "rules"
        if chosen == "tuned" and best is not None:
            database.commit_tuning_record(ms.database.TuningRecord(best.trace, database.commit_workload(module), best.run_secs, measured_on, best.args_info))
        ledger[key] = TaskRecord(
            kernel=name,
            workload=key,
            macs=macs,
            rules_ms=round(rules_ms, 5),
            tuned_ms=None if tuned_ms is None else round(tuned_ms, 5),
            trials=trials,
            chosen=chosen,
        )
        write_ledger(directory, ledger)
        results.append(ledger[key])
    return results, untuned
