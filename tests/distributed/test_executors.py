"""The executors: every task's outcome comes back, in finishing order, on a local pool and on Ray;
a task that raises or whose process dies is a ``TaskFailed`` and the others are kept."""

from __future__ import annotations

import os
import signal

import pytest

from edgesdk.distributed.executors import LocalExecutor, TaskFailed, executor, run_task
from edgesdk.errors import CheckFailed, UserInputError


def square(value: int) -> int:
    return value * value


def cache_dir() -> str:
    return os.environ["EDGESDK_CACHE_DIR"]


def raises(kind: str) -> None:
    if kind == "input":
        raise UserInputError("bad model", hint="give another")
    if kind == "check":
        raise CheckFailed("numerics differ")
    raise ZeroDivisionError("division by zero")


def dies() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_local_pool_returns_every_outcome_and_keeps_the_others_when_one_dies():
    tasks = [(square, (n,)) for n in range(5)] + [(dies, ())]
    outcomes = dict(LocalExecutor(2).run(_call, [(function, args) for function, args in tasks]))
    assert [outcomes[n] for n in range(5)] == [0, 1, 4, 9, 16]
    assert isinstance(outcomes[5], TaskFailed) and outcomes[5].kind == "crash"
    assert "killed by SIGKILL" in outcomes[5].message


def _call(function, args):
    return function(*args)


def test_a_task_runs_with_the_drivers_cache(session_cache):
    ((_, found),) = LocalExecutor(1).run(cache_dir, [()])
    assert found == str(session_cache.absolute())


@pytest.mark.parametrize(("kind", "exit_code", "raised"), [("input", 2, UserInputError), ("check", 1, CheckFailed), ("bug", 1, ZeroDivisionError)])
def test_failures_are_outcomes_with_their_exit_code(kind, exit_code, raised):
    outcome = run_task({}, raises, (kind,))
    assert isinstance(outcome, TaskFailed) and outcome.exit_code == exit_code
    assert outcome.kind == ("InternalError" if raised is ZeroDivisionError else raised.__name__)
    assert outcome.error().exit_code == exit_code
    if kind == "bug":
        assert "ZeroDivisionError: division by zero (at test_executors.py:" in outcome.message


def test_unknown_executor_and_address_without_ray_are_one_line_errors():
    with pytest.raises(UserInputError, match="unknown executor"):
        executor("dask")
    with pytest.raises(UserInputError, match="--address goes with --executor ray"):
        executor("local", address="127.0.0.1:6379")
