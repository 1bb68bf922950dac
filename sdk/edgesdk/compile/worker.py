"""TVM work in a child process (import, compile, and running what was compiled), so that a crash
or a hang in TVM is contained.

The parent (``run_in_worker``) writes a job file, starts ``python -m edgesdk.compile.worker JOB FD``
and reads the stages the worker reports on a pipe (fd FD). A segfault, any other signal, a
timeout or an error inside TVM becomes one ``EdgeSDKError`` naming the stage and the model. The
worker's own stdout/stderr (TVM logs, the ONNX frontend's prints) go to log files beside the job.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgesdk.compile.host_runner import HostRunner
from edgesdk.compile.lowering import BuildResult, BuildSpec
from edgesdk.compile.onnxruntime_segments import Unsupported, segments_dir
from edgesdk.compile.tuning_db import TaskRecord
from edgesdk.errors import EdgeSDKError
from edgesdk.frontend.model import TensorSpec
from edgesdk.frontend.tensors import load_npz, save_npz
from edgesdk.plugin import passes
from edgesdk.plugin.passes import PassChoice

# What a compiled model directory holds (an artifact copies them): written here, in the worker.
WEIGHTS_FILE = "params.npz"
ANALYSIS_FILE = "analysis.json"
DEFAULT_TIMEOUT_S = 1800.0
TIMEOUT_ENV = "EDGESDK_COMPILE_TIMEOUT"


class RunTask(BaseModel):
    """Run a compiled host library on the inputs in ``inputs`` (npz); write ``outputs`` (npz)."""

    model_config = ConfigDict(extra="forbid")

    library: str
    weights: str
    inputs: str
    outputs: str
    output_names: list[str]


class TuneTask(BaseModel):
    """Tune the model's kernels for ``target`` into the database in ``database`` (edgesdk.compile.tuner)."""

    model_config = ConfigDict(extra="forbid")

    target: dict[str, Any]
    database: str
    trials: int
    budget_s: float | None = None
    seed: int = 0


class Job(BaseModel):
    """What the worker does: import ``model``, write its weights and kernel analysis (``model_dir``)
    and its builds; and/or run a compiled library (``run``)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    shapes: dict[str, list[int]] = {}
    model_dir: str | None = None  # receives WEIGHTS_FILE and ANALYSIS_FILE
    weights_file: str | None = None  # without a model_dir: where the imported weights go
    builds: list[tuple[BuildSpec, str]] = []
    passes: list[PassChoice] = []  # plugin passes of the relax stage, run after the import
    onnxruntime: bool = False  # a node TVM cannot lower runs on onnxruntime (edgesdk.compile.onnxruntime_segments)
    examples: str | None = None  # inputs (npz) giving the shapes onnxruntime's nodes take where shape inference cannot
    # Nodes (by their first output) onnxruntime runs though TVM lowers them, with why (edgesdk.compile.divergence).
    diverging: dict[str, str] = {}
    run: RunTask | None = None
    tune: TuneTask | None = None


class JobResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    builds: list[BuildResult] = []
    seconds: float = 0.0
    stages: dict[str, float] = {}  # seconds per stage (import, analyze, build device, ...), in order
    error: str | None = None
    stage: str | None = None
    unsupported: str | None = None  # "<op> (<reason>)" when the error is a node TVM cannot lower
    tuned: list[TaskRecord] = []  # a tune job's tasks
    untuned: int = 0  # tasks the tune job's budget left
    model_ms: list[float] | None = None  # the tune job's model check: (with the rules, with the new schedules)


class WorkerFailed(EdgeSDKError):
    """TVM could not import, compile or run the model (bad or unsupported input: exit 2)."""


class UnsupportedNode(WorkerFailed):
    """A node of the model TVM cannot lower: ``what`` is "<op> (<reason>)"."""

    def __init__(self, what: str):
        super().__init__(f"unsupported by TVM: {what}")
        self.what = what


# ---------------------------------------------------------------- parent side


def run_isolated(library: Path, weights: Path, arrays: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
    """Run a compiled library on ``arrays`` in a worker process, so that a crash is an error."""
    with tempfile.TemporaryDirectory(prefix="edgesdk-run-") as scratch:
        inputs, outputs = Path(scratch) / "inputs.npz", Path(scratch) / "outputs.npz"
        save_npz(inputs, arrays)
        task = RunTask(library=str(library), weights=str(weights), inputs=str(inputs), outputs=str(outputs), output_names=output_names)
        run_in_worker(Job(run=task), Path(scratch) / "job", model_name=library.stem)
        return load_npz(outputs)


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def run_in_worker(
    job: Job,
    job_dir: Path,
    *,
    model_name: str,
    timeout_s: float | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> JobResult:
    """Run ``job`` in a worker process; return its result or raise ``WorkerFailed``."""
    timeout_s = timeout_s or float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    job_dir.mkdir(parents=True, exist_ok=True)
    job_file, result_file = job_dir / "job.json", job_dir / "result.json"
    job_file.write_text(job.model_dump_json())
    read_fd, write_fd = os.pipe()
    stage = "start"
    started = time.monotonic()
    with open(job_dir / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgesdk.compile.worker", str(job_file), str(write_fd)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
        )
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as events, selectors.DefaultSelector() as selector:
            selector.register(events, selectors.EVENT_READ)
            buffered = b""
            while True:
                remaining = timeout_s - (time.monotonic() - started)
                if remaining <= 0:
                    proc.kill()
                    proc.wait()
                    raise WorkerFailed(
                        f"TVM timed out after {timeout_s:g} s at stage '{stage}' for model '{model_name}'",
                        hint=f"raise the limit with {TIMEOUT_ENV}=SECONDS; the worker log is not kept",
                    )
                if not selector.select(timeout=min(remaining, 1.0)):
                    continue
                chunk = os.read(events.fileno(), 4096)
                if not chunk:
                    break
                buffered += chunk
                *lines, buffered = buffered.split(b"\n")
                for line in lines:
                    stage = json.loads(line)["stage"]
                    if on_stage:
                        on_stage(stage)
        returncode = proc.wait()
    if returncode < 0:
        raise WorkerFailed(
            f"TVM crashed ({_signal_name(returncode)}) at stage '{stage}' for model '{model_name}'",
            hint="a TVM bug triggered by this model; try another opset or simplify the graph",
        )
    if not result_file.exists():
        tail = (job_dir / "worker.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise WorkerFailed(f"the TVM worker exited with code {returncode} at stage '{stage}' for model '{model_name}': {tail[0]}")
    result = JobResult.model_validate_json(result_file.read_text())
    if result.unsupported:
        raise UnsupportedNode(result.unsupported)
    if result.error:
        raise WorkerFailed(f"TVM failed at stage '{result.stage}' for model '{model_name}': {result.error}")
    return result


# ---------------------------------------------------------------- worker side


def _work(job: Job, report: Callable[[str], None]) -> JobResult:
    from edgesdk.compile import lowering

    started = time.monotonic()
    results = []
    if job.model:
        report("import")
        lowering.maybe_crash("import")
        weights_at = Path(job.model_dir) / WEIGHTS_FILE if job.model_dir else Path(job.weights_file) if job.weights_file else None
        segments = segments_dir(weights_at) if job.onnxruntime and weights_at is not None else None
        examples = Path(job.examples) if job.examples else None
        mod, weights, names, packed = lowering.import_onnx(Path(job.model), job.shapes, segments, examples, job.diverging)
        for choice in job.passes:
            report(f"pass {choice.name}")
            mod = lowering.checked_pass_result(choice, mod, passes.run(choice, mod))
        if job.weights_file:
            lowering.save_weights(Path(job.weights_file), weights, names)
        if job.model_dir:
            report("analyze")
            Path(job.model_dir).mkdir(parents=True, exist_ok=True)
            lowering.save_weights(Path(job.model_dir) / WEIGHTS_FILE, weights, names)
            analysis = lowering.analyze_kernels(mod, packed)
            (Path(job.model_dir) / ANALYSIS_FILE).write_text(analysis.model_dump_json(indent=1))
        if job.tune:
            from edgesdk.compile import tuner

            if "torch" in sys.modules and sys.modules["torch"] is None:
                del sys.modules["torch"]  # blocked by main(); xgboost (MetaSchedule's cost model) probes it

            task = job.tune
            tuned, untuned, model_ms = tuner.tune(
                mod, weights, task.target, Path(task.database), trials=task.trials, budget_s=task.budget_s, seed=task.seed, report=report
            )
            return JobResult(tuned=tuned, untuned=untuned, model_ms=list(model_ms) if model_ms else None, seconds=time.monotonic() - started)
        for spec, out_dir in job.builds:
            report(f"build {spec.role}")
            lowering.maybe_crash(f"build {spec.role}")
            outputs, quantization = lowering.model_io(Path(job.model))
            results.append(lowering.build(mod, spec, Path(out_dir), weights, (list(job.shapes), outputs), quantization))
    if job.run:
        report("run")
        lowering.maybe_crash("run")
        _run(job.run)
    return JobResult(builds=results, seconds=time.monotonic() - started)


def _run(task: RunTask) -> None:
    inputs = load_npz(task.inputs)
    specs = [TensorSpec(name, tuple(array.shape), array.dtype.name) for name, array in inputs.items()]
    runner = HostRunner(Path(task.library), Path(task.weights), specs, task.output_names)
    save_npz(task.outputs, runner.run(inputs))


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    # TVM errors end with the most specific line; toolchain errors start with it.
    text = lines[0] if isinstance(exc, RuntimeError) and "failed (exit" in str(exc) else (lines[-1] if lines else "")
    return f"{type(exc).__name__}: {text}"[:400]


def main(argv: list[str]) -> int:
    job_file, events_fd = Path(argv[0]), int(argv[1])
    stage, since = "start", time.monotonic()
    stages: dict[str, float] = {}
    with os.fdopen(events_fd, "w", buffering=1) as events:

        def close_stage() -> None:
            nonlocal since
            now = time.monotonic()
            stages[stage] = stages.get(stage, 0.0) + now - since
            since = now

        def report(name: str) -> None:
            nonlocal stage
            close_stage()
            stage = name
            events.write(json.dumps({"stage": name}) + "\n")

        job = Job.model_validate_json(job_file.read_text())
        try:
            result = _work(job, report)
        except Unsupported as exc:
            result = JobResult(error=str(exc), stage=stage, unsupported=str(exc))
        except Exception as exc:  # any failure inside TVM or a toolchain is reported, not raised
            traceback.print_exc()
            result = JobResult(error=_one_line(exc), stage=stage)
        close_stage()
    stages.pop("start", None)  # the job file read, before any TVM work
    result.stages = {name: round(seconds, 3) for name, seconds in stages.items()}
    (job_file.parent / "result.json").write_text(result.model_dump_json())
    return 0 if result.error is None else 3


if __name__ == "__main__":
    # tvm_ffi imports torch whenever it is installed (~2 s); the worker never hands tensors to torch.
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]  # None in sys.modules makes `import torch` fail fast
    sys.exit(main(sys.argv[1:]))
