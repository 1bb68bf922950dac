"""MetaSchedule tuning of a model's conv and matmul kernels, against the schedule rules (worker side).

Each fused kernel a rule schedules is a task: MetaSchedule searches its own space (its default
CPU rules: multi-level tiling, vectorisation, parallelisation, unrolling) with an XGBoost cost
model for ``trials`` candidates measured on this machine. The winner is then timed beside the
rule-scheduled kernel, in the same way, here; one that beats the rules by more than the noise
(MARGIN) waits in ``pending/`` until the model's other kernels are done, and goes into the
database that builds read (edgesdk.compile.tuning_db) only if the whole model, built and timed
with and without the waiting schedules, is faster with them. The time budget is checked between
tasks; every finished task is kept at once, so a stopped tune resumes.
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
TIMING_REPEATS = 31
PENDING = "pending"  # schedules faster alone, not yet timed in the model
MODEL_ROUNDS, MODEL_CALLS = 12, 6  # the model check: turns of each build, calls per turn
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
    timer = library.mod.time_evaluator("main", tvm.cpu(), number=3, repeat=TIMING_REPEATS)
    return statistics.median(timer(*args).results) * 1e3


def tune(
    mod,
    weights: list[np.ndarray],
    target_json: dict[str, Any],
    directory: Path,
    *,
    trials: int,
    budget_s: float | None,
    seed: int,
    report: Callable[[str], None],
) -> tuple[list[TaskRecord], int, tuple[float, float] | None]:
    """Tune the contraction kernels of ``mod`` (a Relax module before legalization; ``weights``:
    its parameters after the inputs) for ``target_json``. Returns the records of this model's tasks
    (tuned now or before), how many tasks the budget left, and the whole model's time (ms) with the
    rules and with the new schedules when there were new ones to try.

    A kernel timed alone is not a kernel in a model (its weights and the thread pool are in
    another state there; an MLP's matmuls won 2.5x alone and lost 1.5x in the model), so new
    schedules wait in ``directory/pending`` until the model runs faster with them than without:
    only then do builds get them."""
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
    pending = open_database(directory / PENDING)
    started, untuned = time.monotonic(), 0
    todo = tasks(fused, target)
    for number, (name, key, module, macs) in enumerate(todo, start=1):
        if key in ledger:
            continue
        if budget_s is not None and time.monotonic() - started > budget_s:
            untuned += 1
            continue
        report(f"tune {number}/{len(todo)} {name}")
        func = module["main"]
        ruled = schedule_func(func, cpu) if cpu is not None else None
        rules_ms = kernel_ms(ruled if ruled is not None else func, measured_on)
        with tempfile.TemporaryDirectory(prefix="edgesdk-tune-") as work:
            scratch = ms.tune_tir(
                mod=module,
                target=measured_on,
                work_dir=work,
                max_trials_global=trials,
                num_trials_per_iter=min(16, trials),
                builder=ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S),
                runner=ms.runner.LocalRunner(timeout_sec=BUILD_TIMEOUT_S, evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=3)),
                seed=seed,
            )
            sch = ms.tir_integration.compile_tir(scratch, module, measured_on)
            tuned_ms = kernel_ms(sch.mod["main"], measured_on) if sch is not None else None
            faster = tuned_ms is not None and tuned_ms < rules_ms * (1 - MARGIN)
            if faster:
                _commit(scratch, pending, [module])
        chosen = "pending" if faster else "rules"
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
    keys = [key for _, key, _, _ in todo]
    model_ms = None
    waiting = {key: module for _, key, module, _ in todo if key in ledger and ledger[key].chosen == "pending"}
    if waiting:
        report("time the model")
        model_ms = _validate(mod, weights, target_json, directory, list(waiting.values()))
        accepted = model_ms[1] < model_ms[0] * (1 - MARGIN)
        if accepted:
            _commit(pending, open_database(directory), list(waiting.values()))
        for key in waiting:
            ledger[key] = ledger[key].model_copy(update={"chosen": "tuned" if accepted else "rules"})
        write_ledger(directory, ledger)
    return [ledger[key] for key in keys if key in ledger], untuned, model_ms


def _commit(source, destination, modules) -> None:
    """Copy the best record of each of ``modules`` from database ``source`` to ``destination``."""
    from tvm.s_tir import meta_schedule as ms

    for module in modules:
        top = source.get_top_k(source.commit_workload(module), 1)
        if top:
            best = top[0]
            destination.commit_tuning_record(
                ms.database.TuningRecord(best.trace, destination.commit_workload(module), best.run_secs, best.target, best.args_info)
            )


def _validate(mod, weights: list[np.ndarray], target_json: dict[str, Any], directory: Path, modules) -> tuple[float, float]:
    """The whole model's median time (ms) as builds make it now, and with the pending schedules of
    ``modules`` too: both built here and timed in turns on zeroed inputs."""
    import tvm
    from tvm import relax

    from edgesdk.compile.lowering import optimize

    with tempfile.TemporaryDirectory(prefix="edgesdk-tune-trial-") as trial:
        current = open_database(directory)
        merged = open_database(trial)
        _commit(current, merged, [record.workload.mod for record in current.get_all_tuning_records()])
        _commit(open_database(directory / PENDING), merged, modules)
        machines = []
        for tuning in (str(directory) if current.get_all_tuning_records() else None, trial):
            optimized, target = optimize(mod, target_json, tuning)
            machines.append(relax.VirtualMachine(relax.build(optimized, target, relax_pipeline=None), tvm.cpu()))
    params = mod["main"].params
    inputs = [tvm.runtime.tensor(np.zeros([int(dim) for dim in param.ty.shape], str(param.ty.dtype))) for param in params[: len(params) - len(weights)]]
    args = [*inputs, *(tvm.runtime.tensor(weight) for weight in weights)]
    samples: list[list[float]] = [[], []]
    for round_ in range(MODEL_ROUNDS):
        for machine, times in zip(machines, samples, strict=True):
            for call in range(MODEL_CALLS):
                start = time.perf_counter()
                machine["main"](*args)
                if round_ and call:  # the first round warms up; each turn's first call pays for the other's threads
                    times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples[0]), statistics.median(samples[1])
