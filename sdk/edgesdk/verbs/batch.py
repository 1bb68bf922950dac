"""`edgesdk batch MATRIX.yaml`: deploy every model to every device at every precision, each deploy
a task in its own worker process (edgesdk.distributed.executors: a local pool or Ray). With
``tune:``, the kernels are tuned first, one task per device whose code runs here
(edgesdk.verbs.tune), and the deploys build with the winners.

The matrix file names the models (with their input shapes, calibration and verification inputs),
the devices, the precisions and the output directory. Each deploy writes its artifact to
``OUTPUT/<model>/<device>-<precision>``; the driver writes ``OUTPUT/results.json`` (one row per
task, rewritten as each task finishes) and, per model, ``OUTPUT/<model>.html`` (the compare report
of its deployed rows). A failed task is a row with its error. Running the matrix again resumes:
a row that succeeded for the same inputs, whose artifact is still there, is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgesdk.artifact.files import MANIFEST_NAME, REPORT_FILE, read_manifest
from edgesdk.artifact.manifest import Manifest
from edgesdk.compile.build_cache import sha256_file
from edgesdk.compile.targets import runs_here
from edgesdk.devices.registry import devices as all_devices
from edgesdk.devices.registry import get_device
from edgesdk.distributed.executors import TaskFailed, executor
from edgesdk.errors import CheckFailed, DoesNotFit, EdgeSDKError, UserInputError, describe_validation_error
from edgesdk.progress import Listener, reporting, stage
from edgesdk.quantization.accuracy import Accuracy
from edgesdk.quantization.recipe import options_for
from edgesdk.report.html import compare_html
from edgesdk.simulate.cost_report import CompareReport, CompareRow
from edgesdk.verbs.deploy import deploy
from edgesdk.verbs.pipeline import checked_options
from edgesdk.verbs.tune import DEFAULT_TRIALS, tune
from edgesdk.versions import edgesdk_version

RESULTS_FILE = "results.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MatrixModel(_Record):
    """A model of the matrix; relative paths are relative to the matrix file."""

    path: Path
    name: str | None = Field(None, pattern=r"^[\w.-]+$", description="What its rows and directory are called [default: the file's stem].")
    input_shapes: dict[str, list[int]] = Field({}, description="Shapes of its dynamic inputs, as --input-shape gives them.")
    calibration: Path | None = Field(None, description="Calibration samples (.npz) for the quantized precisions.")
    inputs: Path | None = Field(None, description="Inputs (.npz) to verify on, instead of random ones.")

    @property
    def label(self) -> str:
        return self.name or self.path.stem


class MatrixTuning(_Record):
    """Tune the kernels before deploying (`edgesdk tune`): for each device whose code runs on the workers."""

    trials: int = Field(DEFAULT_TRIALS, ge=1, description="MetaSchedule candidates measured per kernel.")
    budget_s: float | None = Field(None, gt=0, description="Per model and precision: start no kernel after this many seconds.")


class Matrix(_Record):
    """What `edgesdk batch` reads: models x devices x precisions, and where the results go."""

    models: list[MatrixModel] = Field(min_length=1)
    devices: list[str] | Literal["all"] = "all"
    precisions: list[str] = Field(["none"], min_length=1, description="Quantization schemes; none is the model's own precision; auto each device's.")
    options: dict[str, Any] = Field({}, description="Quantization options (range_method, group_size, ...), given to the precisions that use them.")
    tune: MatrixTuning | None = Field(None, description="Tune first (devices whose code runs here); the deploys then use the tuned schedules.")
    output: Path = Field(Path("build/matrix"), description="The output directory.")

    @field_validator("models")
    @classmethod
    def _distinct_names(cls, models: list[MatrixModel]) -> list[MatrixModel]:
        labels = [model.label for model in models]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"two models are called {twice[0]}: give one a `name`")
        return models


class MatrixRow(_Record):
    """One deploy of the matrix: its figures when it deployed, its error when not."""

    model: str
    device: str
    precision: str
    latency_ms: float | None = None
    energy_mj: float | None = None
    peak_memory_bytes: int | None = None
    fits: bool | None = Field(None, description="Whether it fits the device's memory (null: not known, the deploy failed before).")
    accuracy: Accuracy | None = Field(None, description="Agreement with the float model on the calibration samples (quantized precisions).")
    verified: bool | None = Field(None, description="Whether the artifact's numerics passed verification against onnxruntime.")
    artifact: str | None = None
    report: str | None = None
    error: str | None = None
    seconds: float | None = Field(None, description="The task's wall time in its worker.")
    tuned_kernels: int | None = Field(None, description="Kernels of the artifact built with a tuned schedule.")
    key: str = Field(description="Digest of the task's inputs and settings: a rerun keeps a row whose key is unchanged.")


class BatchReport(_Record):
    """What `edgesdk batch --json` prints (``results.json`` holds the same)."""

    matrix: str
    output: str
    executor: str
    rows: list[MatrixRow]
    resumed: int = Field(description="Rows kept from an earlier run of the matrix.")
    tuning: list[str] = Field([], description="What the tuning tasks did (`tune:` in the matrix), one line per model and precision.")
    html: list[str] = Field(description="The compare report of each model's deployed rows.")

    @property
    def failed(self) -> list[MatrixRow]:
        return [row for row in self.rows if row.error is not None]


class _Task(_Record):
    """One deploy, with everything absolute: a Ray worker may start in another directory."""

    model: MatrixModel
    device: str
    precision: str
    options: dict[str, Any]
    quantized: bool = Field(description="Whether the precision, resolved for the device, quantizes: it then takes the calibration samples.")
    out: Path
    key: str

    def calibration(self) -> Path | None:
        return self.model.calibration if self.quantized else None


def load_matrix(path: str | os.PathLike) -> Matrix:
    """The matrix in ``path`` (YAML), its paths made absolute against the file's directory."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read the matrix ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise UserInputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        matrix = Matrix.model_validate(data)
    except ValidationError as exc:
        raise UserInputError(f"{path}: {describe_validation_error(exc)}", hint="docs/scale-out.md shows a matrix file") from None
    base = path.absolute().parent
    for model in matrix.models:
        for field in ("path", "calibration", "inputs"):
            value = getattr(model, field)
            if value is not None:
                setattr(model, field, base / value)
                if not (base / value).is_file():
                    raise UserInputError(f"{path}: models: {model.label}: {field} {value}: no such file")
    matrix.output = base / matrix.output
    return matrix


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _tasks(matrix: Matrix, profiles_dir) -> list[_Task]:
    recipe_options, _ = checked_options(matrix.options, "batch: options")
    devices = [profile.id for profile in all_devices(profiles_dir)] if matrix.devices == "all" else list(dict.fromkeys(matrix.devices))
    for device in devices:
        get_device(device, profiles_dir)  # an unknown id: one error before any work
    tasks = []
    for model in matrix.models:
        files = {field: sha256_file(value) for field in ("path", "calibration", "inputs") if (value := getattr(model, field)) is not None}
        for device in devices:
            for precision in dict.fromkeys(matrix.precisions):
                resolved = get_device(device, profiles_dir).quantization.scheme if precision == "auto" else precision
                options = options_for(resolved, recipe_options)
                key = _digest(edgesdk_version(), files, model.input_shapes, device, precision, options, matrix.tune)
                out = matrix.output / model.label / f"{device}-{precision}"
                tasks.append(_Task(model=model, device=device, precision=precision, options=options, quantized=resolved != "none", out=out, key=key))
    return tasks


def _row(task: _Task, manifest: Manifest | None, **fields: Any) -> MatrixRow:
    row = MatrixRow(model=task.model.label, device=task.device, precision=task.precision, key=task.key, **fields)
    if manifest is not None:
        row.artifact = str(task.out)
        row.report = str(task.out / REPORT_FILE) if (task.out / REPORT_FILE).is_file() else None
        row.verified = manifest.verification.passed
        row.accuracy = manifest.quantization.accuracy
        row.fits = True  # a deploy that does not fit writes nothing
        row.tuned_kernels = len(manifest.build.tuned_kernels)
        if manifest.estimate is not None:
            row.latency_ms, row.energy_mj = manifest.estimate.latency_ms, manifest.estimate.energy_mj
            row.peak_memory_bytes = manifest.estimate.peak_memory_bytes
    return row


def deploy_task(task: _Task, profiles_dir: str | None) -> MatrixRow:
    """In the worker: deploy one cell of the matrix, and its row (an error, too, is a row)."""
    model, started = task.model, time.perf_counter()
    error, fits = None, None
    try:
        deploy(
            model.path, task.device, task.out, input_shapes=model.input_shapes or None, quantize=task.precision,
            calibration=task.calibration(), inputs=model.inputs, profiles_dir=profiles_dir, **task.options,
        )  # fmt: skip
    except DoesNotFit as exc:
        error, fits = str(exc), False
    except (CheckFailed, UserInputError) as exc:  # verification failed (the artifact is written), or bad input
        error = str(exc)
    manifest = read_manifest(task.out) if error is None or (task.out / MANIFEST_NAME).is_file() else None
    row = _row(task, manifest, error=error, seconds=round(time.perf_counter() - started, 3))
    if fits is not None:
        row.fits = fits
    return row


def tune_task(tasks: list[_Task], tuning: MatrixTuning, profiles_dir: str | None) -> list[str]:
    """In the worker: tune every model and precision of one device, one after another (so that
    one task writes the device's tuning database, and no two tunes time each other's work)."""
    lines = []
    for task in tasks:
        model, label = task.model, f"{task.device}: {task.model.label} at {task.precision}"
        try:
            report = tune(
                model.path, task.device, input_shapes=model.input_shapes or None, trials=tuning.trials, budget_s=tuning.budget_s,
                quantize=task.precision, calibration=task.calibration(), profiles_dir=profiles_dir, **task.options,
            )  # fmt: skip
        except EdgeSDKError as exc:
            lines.append(f"{label}: not tuned: {exc}")
            continue
        chosen = sum(kernel.chosen == "tuned" for kernel in report.kernels)
        lines.append(f"{label}: {len(report.kernels)} kernels tuned in {report.seconds:.0f} s, {chosen} faster than the rules")
    return lines


def _tuned(chosen, tasks: list[_Task], tuning: MatrixTuning, profiles_dir: str | None) -> list[str]:
    """The tuning tasks, one per device whose code runs here, on ``chosen`` executor."""
    by_device: dict[str, list[_Task]] = {}
    for task in tasks:
        by_device.setdefault(task.device, []).append(task)
    tunable = {device: runs_here(get_device(device, profiles_dir).target) for device in by_device}
    lines = [f"{device}: not tuned: its code does not run here" for device, here in tunable.items() if not here]
    devices = [device for device, here in tunable.items() if here]
    groups = [(by_device[device], tuning, profiles_dir) for device in devices]
    for done, (index, outcome) in enumerate(chosen.run(tune_task, groups), 1):
        lines += [f"{devices[index]}: not tuned: {outcome.message}"] if isinstance(outcome, TaskFailed) else outcome
        stage(f"tune {done}/{len(groups)} done: {devices[index]}")
    return lines


def _earlier(output: Path) -> dict[str, MatrixRow]:
    """The rows of an earlier run that succeeded and whose artifact is still in place, by key."""
    try:
        earlier = BatchReport.model_validate_json((output / RESULTS_FILE).read_bytes())
    except (OSError, ValidationError):
        return {}
    return {row.key: row for row in earlier.rows if row.error is None and row.artifact and (Path(row.artifact) / MANIFEST_NAME).is_file()}


def _write(path: Path, text: str) -> None:
    """``path`` replaced whole (a reader never sees half of it)."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.partial")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, path)


def _compare_reports(report: BatchReport) -> list[str]:
    """Per model, the compare report (edgesdk.report.html) of its deployed rows."""
    written = []
    for model in dict.fromkeys(row.model for row in report.rows):
        rows = []
        first: dict[str, float] = {}
        for row in report.rows:
            manifest = read_manifest(Path(row.artifact)) if row.model == model and row.artifact else None
            if manifest is None or manifest.estimate is None:
                continue
            estimate, partition = manifest.estimate, manifest.partition
            latency = first.setdefault(row.device, estimate.latency_ms)
            rows.append(
                CompareRow(
                    device=row.device, scheme=manifest.quantization.scheme, latency_ms=estimate.latency_ms, energy_mj=estimate.energy_mj,
                    peak_memory_bytes=estimate.peak_memory_bytes, weight_bytes=estimate.weight_bytes, units=partition.units,
                    fallbacks=len(partition.fallbacks), speedup=latency / estimate.latency_ms if estimate.latency_ms else 1.0, accuracy=row.accuracy,
                )
            )  # fmt: skip
        if rows:
            path = Path(report.output) / f"{model}.html"
            _write(path, compare_html(CompareReport(model=model, rows=rows)))
            written.append(str(path))
    return written


def batch(
    matrix: str | os.PathLike,
    *,
    executor_name: str = "local",
    address: str | None = None,
    workers: int | None = None,
    profiles_dir: str | os.PathLike | None = None,
    on_stage: Listener | None = None,
) -> BatchReport:
    """Deploy the matrix in the YAML file ``matrix`` (edgesdk.verbs.batch) on ``executor_name``
    ("local": ``workers`` processes, default one per core; "ray": the cluster at ``address``, or
    one started here) and return its rows; ``OUTPUT/results.json`` holds them too."""
    chosen = executor(executor_name, address=address, workers=workers)
    loaded = load_matrix(matrix)
    profiles = str(Path(profiles_dir).absolute()) if profiles_dir is not None else None
    tasks = _tasks(loaded, profiles)
    loaded.output.mkdir(parents=True, exist_ok=True)
    kept = _earlier(loaded.output)
    rows: list[MatrixRow | None] = [kept.get(task.key) for task in tasks]
    report = BatchReport(matrix=str(Path(matrix)), output=str(loaded.output), executor=chosen.name, rows=[], resumed=sum(map(bool, rows)), html=[])
    todo = [index for index, row in enumerate(rows) if row is None]

    def save() -> None:
        report.rows = [row for row in rows if row is not None]
        _write(loaded.output / RESULTS_FILE, report.model_dump_json(indent=1) + "\n")

    with reporting(on_stage):
        if loaded.tune is not None and todo:
            report.tuning = _tuned(chosen, [tasks[index] for index in todo], loaded.tune, profiles)
        stage(f"batch: {len(todo)} of {len(tasks)} deploys to run on {chosen.name}")
        for done, (number, outcome) in enumerate(chosen.run(deploy_task, [(tasks[index], profiles) for index in todo]), 1):
            task = tasks[todo[number]]
            if isinstance(outcome, TaskFailed):
                outcome = _row(task, None, error=outcome.message)
            rows[todo[number]] = outcome
            save()
            verdict = "failed" if outcome.error else "done"
            stage(f"batch {done}/{len(todo)} {verdict}: {task.model.label} on {task.device} at {task.precision}")
    save()
    report.html = _compare_reports(report)
    save()
    return report
