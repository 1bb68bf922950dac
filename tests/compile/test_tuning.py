"""Tuned schedules: a record in the target's tuning database replaces the rules for its kernel,
matched by structure (edgesdk.compile.schedules.database, edgesdk.compile.tuning_db)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tests.compile.test_schedules import HOST, _int8_conv, _reference_conv  # noqa: E402


def _fused(mod, target):
    from edgesdk.compile.lowering import fusion_passes

    with target:
        return tvm.transform.Sequential(fusion_passes(target))(mod)


def commit_schedule(directory, module, target, schedule) -> None:
    """Record ``schedule(sch)`` for ``module`` in the database at ``directory``, as `edgesdk tune` would."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from edgesdk.compile.schedules.database import open_database

    sch = s_tir.Schedule(module)
    schedule(sch)
    database = open_database(directory)
    record = ms.database.TuningRecord(sch.trace, database.commit_workload(module), [1e-4], target, ms.arg_info.ArgInfo.from_prim_func(module["main"]))
    database.commit_tuning_record(record)


def parallel_rows(sch) -> None:
    """A schedule no rule makes: the conv's outer loops fused and parallel, nothing else."""
    block = sch.get_sblock("conv2d_nchw")
    loops = sch.get_loops(block)
    sch.parallel(sch.fuse(*loops[:3]))


def test_a_tuned_schedule_replaces_the_rules_for_its_kernel_only(tmp_path):
    from tvm import relax

    from edgesdk.compile import lowering
    from edgesdk.compile.tuner import tasks

    target = tvm.target.Target(HOST)
    mod = _int8_conv(1, 8, 16, (12, 12), 3, 1, "int8")
    ((name, _, module, macs),) = tasks(_fused(mod, target), target)
    assert macs == 16 * 10 * 10 * 8 * 3 * 3
    commit_schedule(tmp_path, module, target, parallel_rows)

    optimized, _ = lowering.optimize(mod, HOST, str(tmp_path))
    assert lowering.tuned_kernels(optimized) == [name]
    script = optimized[name].script()
    assert "T.parallel(" in script and 'scope="local"' not in script  # the record's schedule, not the rules'
    rng = np.random.default_rng(0)
    x, w = rng.integers(-128, 128, (1, 8, 12, 12)).astype(np.int8), rng.integers(-128, 128, (16, 8, 3, 3)).astype(np.int8)
    vm = relax.VirtualMachine(relax.build(optimized, target, relax_pipeline=None), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy(), _reference_conv(x, w, 1))

    # Another shape is another workload: the rules schedule it.
    other, _ = lowering.optimize(_int8_conv(1, 8, 16, (14, 14), 3, 1, "int8"), HOST, str(tmp_path))
    assert lowering.tuned_kernels(other) == []
