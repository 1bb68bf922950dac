"""Independent tasks (a deploy, an analysis), each in its own worker process: on this machine (a
pool of processes sized to the cores) or on a Ray cluster. Outcomes come back as tasks finish.

A task is a module-level function and its arguments, pickled to the worker: our own objects, never
a file a user handed us. Its outcome is what it returns, or a ``TaskFailed`` when it raised or its
process died: one task's failure never costs the others theirs.

The worker runs with the driver's edgesdk settings (the ``EDGESDK_*`` environment, the cache
directory made absolute), passed with each task: a Ray worker started elsewhere has its own
environment, and every worker must find the same build cache and plugins as the driver.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from edgesdk.compile.build_cache import CACHE_ENV, cache_root
from edgesdk.distributed.network import check_reachable, parse_address
from edgesdk.errors import CheckFailed, DoesNotFit, EdgeSDKError, InternalError, ProfileError, UnknownDeviceError, UserInputError

EXECUTORS = ("local", "ray")
SETTINGS_PREFIX = "EDGESDK_"
RAY_EXTRA = "pip install 'edgesdk[distributed]'"
_ERRORS = (UserInputError, ProfileError, UnknownDeviceError, CheckFailed, DoesNotFit, InternalError)


@dataclass(frozen=True)
class TaskFailed:
    """A task that raised (``kind``: the error's class) or whose process died (``kind`` "crash")."""

    kind: str
    message: str
    hint: str | None = None
    exit_code: int = 1

    def error(self) -> EdgeSDKError:
        """The failure as the driver raises it: the worker's error again, of its class."""
        kinds: dict[str, type[EdgeSDKError]] = {kind.__name__: kind for kind in _ERRORS}
        failed = kinds.get(self.kind, EdgeSDKError)(self.message, self.hint)
        failed.exit_code = self.exit_code
        return failed


def settings() -> dict[str, str]:
    """The driver's edgesdk settings that a worker must share (edgesdk.distributed.executors)."""
    found = {name: value for name, value in os.environ.items() if name.startswith(SETTINGS_PREFIX)}
    found[CACHE_ENV] = str(cache_root().absolute())
    return found


def run_task(environment: dict[str, str], function: Callable[..., Any], args: tuple) -> Any:
    """In the worker: ``function(*args)`` with the driver's settings, its failure as a ``TaskFailed``."""
    os.environ.update(environment)  # this process exists for this one task
    try:
        return function(*args)
    except EdgeSDKError as exc:
        return TaskFailed(type(exc).__name__, exc.message, exc.hint, exc.exit_code)
    except Exception as exc:  # a bug: reported in the task's row with where it happened
        where = traceback.extract_tb(exc.__traceback__)[-1]
        first = (str(exc).strip().splitlines() or [""])[0]
        message = f"{type(exc).__name__}: {first} (at {os.path.basename(where.filename)}:{where.lineno})"
        return TaskFailed("InternalError", message, "this is a bug in edgesdk, please report it", 1)


def _child(connection: Connection, environment: dict[str, str], function: Callable[..., Any], args: tuple) -> None:
    connection.send(run_task(environment, function, args))
    connection.close()


def _died(exitcode: int | None) -> TaskFailed:
    killed = exitcode is not None and exitcode < 0
    how = f"was killed by {signal.Signals(-exitcode).name}" if killed else f"exited with status {exitcode} before returning"  # type: ignore[operator]
    return TaskFailed("crash", f"the task's worker process {how}", "the other tasks' results are kept; run again to retry it")


class LocalExecutor:
    """A new process per task, at most ``workers`` at once (default: the cores)."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)

    def run(self, function: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """(index into ``tasks``, outcome) of each task as it finishes."""
        context = multiprocessing.get_context("spawn")  # no forked copy of the driver's threads
        environment = settings()
        waiting = list(enumerate(tasks))[::-1]
        running: dict[Any, tuple[int, BaseProcess]] = {}  # by the pipe's reading end
        try:
            while waiting or running:
                while waiting and len(running) < self.workers:
                    index, args = waiting.pop()
                    reader, writer = context.Pipe(duplex=False)
                    process: BaseProcess = context.Process(target=_child, args=(writer, environment, function, args), daemon=True)
                    process.start()
                    writer.close()  # ours is closed: the reader sees the end when the child's is
                    running[reader] = (index, process)
                for ready in wait(list(running)):
                    index, process = running.pop(ready)
                    reader = ready  # type: ignore[assignment]  # wait() hands back the readers it was given
                    try:
                        outcome = reader.recv()
                    except EOFError:
                        process.join()
                        outcome = _died(process.exitcode)
                    reader.close()
                    process.join()
                    yield index, outcome
        finally:
            for reader, (_, process) in running.items():
                process.kill()
                process.join()
                reader.close()


class RayExecutor:
    """Each task a Ray task on a worker process of its own (``max_calls=1``), on the cluster at
    ``address`` or on a Ray instance started here for the call."""

    name = "ray"

    def __init__(self, address: str | None = None):
        self.address = address

    def run(self, function: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """(index into ``tasks``, outcome) of each task as it finishes."""
        ray = _ray()
        started = not ray.is_initialized()
        if started:
            self._connect(ray)
        try:
            remote = ray.remote(max_calls=1, max_retries=0, num_cpus=1)(run_task)
            environment = settings()
            pending = {remote.remote(environment, function, args): index for index, args in enumerate(tasks)}
            while pending:
                (done,), _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done)
                try:
                    outcome = ray.get(done)
                except ray.exceptions.RayError as exc:  # the worker died, or Ray lost it
                    outcome = TaskFailed("crash", f"Ray lost the task: {_first_line(exc)}", "the other tasks' results are kept; run again to retry it")
                yield index, outcome
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray) -> None:
        quiet = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
        if self.address is None:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
            return
        if self.address != "auto":  # Ray retries an address that does not answer for minutes
            host, port = parse_address(self.address.removeprefix("ray://"), "--address")
            check_reachable(host, port, "--address", "start a cluster with `ray start --head`, or leave --address out to start Ray here")
        try:
            ray.init(address=self.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserInputError(
                f"--address {self.address}: cannot connect to a Ray cluster ({_first_line(exc)})",
                hint="is it up (`ray status`)? With token authentication, this machine needs the cluster's token (docs/scale-out.md)",
            ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _ray():
    try:
        import ray
    except ImportError:
        raise UserInputError("--executor ray: Ray is not installed", hint=RAY_EXTRA) from None
    return ray


def executor(name: str = "local", *, address: str | None = None, workers: int | None = None) -> LocalExecutor | RayExecutor:
    """The executor called ``name``: "local" (a process per task, ``workers`` at once) or "ray"
    (on the cluster at ``address``, or one started here)."""
    if name == "local":
        if address is not None:
            raise UserInputError("--address goes with --executor ray", hint="add --executor ray, or leave --address out")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address)
    raise UserInputError(f"--executor {name}: unknown executor", hint=f"one of: {', '.join(EXECUTORS)}")
