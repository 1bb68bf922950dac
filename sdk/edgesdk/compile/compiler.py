"""Compile a model (its weights, kernel analysis and builds) through the worker, reusing cached
results: what every verb that needs TVM calls."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesdk.compile.build_cache import BuildCache, cache_key
from edgesdk.compile.lowering import PIPELINE_VERSION, BuildResult, BuildSpec
from edgesdk.compile.onnxruntime_segments import SEGMENTS_DIR
from edgesdk.compile.worker import WEIGHTS_FILE, Job, JobResult, RunTask, TuneTask, run_in_worker, run_isolated
from edgesdk.frontend.model import Model
from edgesdk.frontend.shape_folding import static_shapes
from edgesdk.frontend.tensors import load_npz, save_npz
from edgesdk.plugin.passes import PassChoice, fingerprint
from edgesdk.versions import edgesdk_version, tvm_version


def _read_build(path: Path) -> BuildResult:
    return BuildResult.model_validate_json((path / "build.json").read_text())


def _read_builds(paths: Sequence[Path | None]) -> list[tuple[Path, BuildResult]]:
    """Each build's directory and result, once every build is cached (none is None)."""
    complete = [path for path in paths if path is not None]
    assert len(complete) == len(paths), "a build is missing"
    return [(path, _read_build(path)) for path in complete]


def _digest(arrays: Mapping[str, np.ndarray] | None) -> str:
    """A hash of named arrays: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, array in sorted((arrays or {}).items()):
        array = np.ascontiguousarray(array)
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _cached_run(cache: BuildCache, key: str) -> dict[str, np.ndarray] | None:
    entry = cache.get("runs", key)
    return load_npz(entry / "outputs.npz") if entry is not None else None


def _store_run(cache: BuildCache, key: str, outputs: Mapping[str, np.ndarray]) -> None:
    """Keep a simulation's outputs: the build and its inputs decide them, so a redeploy reuses them."""
    staged = cache.staging()
    save_npz(staged / "outputs.npz", outputs)
    cache.put("runs", key, staged)


def _model_key(model: Model, passes: Sequence[PassChoice], fallback: Mapping[str, object]) -> dict:
    return {"model": model.sha256, "passes": fingerprint(passes), "tvm": tvm_version(), "pipeline": PIPELINE_VERSION, **fallback}


def build_key(model: Model, spec: BuildSpec, passes: Sequence[PassChoice] = (), fallback: Mapping[str, object] | None = None) -> str:
    # Not the role: a device build that targets this host is the host build.
    spec_key = {"spec": spec.model_dump(mode="json", exclude={"role"}), "edgesdk": edgesdk_version()}
    return cache_key({**_model_key(model, passes, fallback or _fallback(False, None)), **spec_key})


def _fallback(onnxruntime: bool, examples: Mapping[str, np.ndarray] | None, diverging: Mapping[str, str] | None = None) -> dict[str, object]:
    """What decides the nodes onnxruntime runs: whether it may, the inputs whose shapes it
    measures (edgesdk.compile.onnx_fallback) and the nodes it takes over, as part of cache keys."""
    return {
        "onnxruntime": onnxruntime,
        "examples": _digest(examples) if examples is not None else None,
        **({"diverging": dict(diverging)} if diverging else {}),
    }


def _unknown_shapes(model: Model) -> bool:
    """Whether shape inference left a value of the model's graph without a static shape."""
    static = static_shapes(model.proto)
    return any(name and name not in static for node in model.proto.graph.node for name in node.output)


@dataclass
class Compiled:
    model_dir: Path  # WEIGHTS_FILE and ANALYSIS_FILE
    builds: list[tuple[Path, BuildResult]]  # per spec: its directory and what it holds
    cached: bool
    seconds: float
    outputs: dict[str, np.ndarray] | None  # of the simulation on the verification inputs, if run
    keys: list[str]  # the cache key of each build
    stages: dict[str, float] = dataclasses.field(default_factory=dict)  # worker seconds per stage (empty when cached)


def compile_model(
    model: Model,
    specs: Sequence[BuildSpec],
    cache: BuildCache,
    inputs: dict[str, np.ndarray] | None,
    *,
    timeout_s: float | None,
    on_stage: Callable[[str], None],
    passes: Sequence[PassChoice] = (),
    onnxruntime: bool = False,
    diverging: Mapping[str, str] | None = None,
) -> Compiled:
    """Weights, kernel analysis and builds for ``model``: from the cache, or made by the worker
    (then cached), after the ``relax``-stage plugin ``passes``. With no specs, only the model is
    imported and analysed. With ``onnxruntime``, a node TVM cannot lower runs on onnxruntime
    (edgesdk.compile.onnxruntime_segments: the segments are in the model directory); without,
    it is an ``UnsupportedNode`` error. The ``diverging`` nodes (by first output: why) run on
    onnxruntime too, though TVM lowers them (edgesdk.compile.divergence).

    With ``inputs``, the simulation build (the last spec) also runs on them: in the worker that
    compiles (saving a second start), else in a worker of its own, unless the outputs of that
    build on those inputs are cached (a warm deploy then starts no TVM process at all).
    """
    passes = [choice for choice in passes if choice.stage == "relax"]
    diverging = dict(diverging or {}) if onnxruntime else {}
    examples = inputs if onnxruntime and inputs is not None and _unknown_shapes(model) else None

    def keyed(fallback: Mapping[str, object]) -> tuple[str, list[str], Path | None, list[Path | None]]:
        model_key, keys = cache_key(_model_key(model, passes, fallback)), [build_key(model, spec, passes, fallback) for spec in specs]
        return model_key, keys, cache.get("models", model_key), [cache.get("builds", key) for key in keys]

    model_key, keys, model_dir, found = keyed(_fallback(False, None))
    if onnxruntime and (diverging or not (model_dir is not None and all(found))):
        # The fallback changes the import only where TVM fails: a build made without it is the same.
        model_key, keys, model_dir, found = keyed(_fallback(True, examples, diverging))
    run_key = cache_key({"build": keys[-1], "inputs": _digest(inputs)}) if specs and inputs is not None else None
    if model_dir is not None and all(found):
        builds = _read_builds(found)
        outputs = None
        if run_key is not None and inputs is not None:
            outputs = _cached_run(cache, run_key)
            if outputs is None:
                outputs = run_isolated(builds[-1][0] / specs[-1].library_name, model_dir / WEIGHTS_FILE, inputs, [spec.name for spec in model.outputs])
                _store_run(cache, run_key, outputs)
        return Compiled(model_dir, builds, True, 0.0, outputs, keys)

    scratch = cache.staging()
    try:
        (scratch / "model.onnx").write_bytes(model.serialized)  # the workers' input, not kept
        todo = [(index, spec) for index, spec in enumerate(specs) if not found[index]]
        run = None
        if inputs is not None:
            save_npz(scratch / "inputs.npz", inputs)
        if specs and inputs is not None:
            simulation = found[-1] or scratch / f"build{len(specs) - 1}"
            run = RunTask(
                library=str(simulation / specs[-1].library_name),
                weights=str(scratch / "model" / WEIGHTS_FILE),
                inputs=str(scratch / "inputs.npz"),
                outputs=str(scratch / "outputs.npz"),
                output_names=[spec.name for spec in model.outputs],
            )
        jobs = _jobs(model, scratch, todo, run, passes, onnxruntime)
        for job, _ in jobs:
            job.diverging = diverging
        if examples is not None:
            for job, _ in jobs:
                job.examples = str(scratch / "inputs.npz")
        results = _run_jobs(jobs, scratch, model_name=model.name, timeout_s=timeout_s, on_stage=on_stage)
        outputs = load_npz(scratch / "outputs.npz") if run else None
        if onnxruntime and not (scratch / "model" / SEGMENTS_DIR).is_dir():
            # Nothing fell back: stored as the plain build, which other devices' builds share.
            model_key, keys, _, _ = keyed(_fallback(False, None))
            run_key = cache_key({"build": keys[-1], "inputs": _digest(inputs)}) if specs and inputs is not None else None
        if run_key is not None and outputs is not None:
            _store_run(cache, run_key, outputs)
        for (_, part), result in zip(jobs, results, strict=True):
            for (index, _), build in zip(part, result.builds, strict=True):
                (scratch / f"build{index}" / "build.json").write_text(build.model_dump_json())
                found[index] = cache.put("builds", keys[index], scratch / f"build{index}")
        model_dir = cache.put("models", model_key, scratch / "model")
        stages = _merged_stages(results)
        return Compiled(model_dir, _read_builds(found), False, max(result.seconds for result in results), outputs, keys, stages)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _model_job(model: Model, scratch: Path, passes: Sequence[PassChoice], onnxruntime: bool = False) -> dict:
    """What every worker job of ``model`` starts from: the model file written in ``scratch``, its
    input shapes, the ``relax``-stage plugin passes, whether onnxruntime may run nodes."""
    return {
        "model": str(scratch / "model.onnx"),
        "shapes": {spec.name: list(spec.shape) for spec in model.inputs},
        "passes": passes,
        "onnxruntime": onnxruntime,
    }


def _jobs(
    model: Model, scratch: Path, todo: list[tuple[int, BuildSpec]], run: RunTask | None, passes: Sequence[PassChoice], onnxruntime: bool
) -> list[tuple[Job, list]]:
    """The worker jobs, each with the builds it makes: one, or, when two builds are due and this
    machine has a core for each, two processes in parallel: the first imports, analyses and makes
    the device build; the second imports again (a few seconds) and makes the rest and the run."""
    base = _model_job(model, scratch, passes, onnxruntime)

    def builds(part: list[tuple[int, BuildSpec]]) -> list[tuple[BuildSpec, str]]:
        return [(spec, str(scratch / f"build{index}")) for index, spec in part]

    if len(todo) < 2 or (os.cpu_count() or 1) < 2:
        return [(Job(**base, model_dir=str(scratch / "model"), builds=builds(todo), run=run), todo)]
    first = Job(**base, model_dir=str(scratch / "model"), builds=builds(todo[:1]))
    # Its run reads the weights of its own import: the first job may not have written them yet.
    if run is not None:
        run = run.model_copy(update={"weights": str(scratch / "weights-second.npz")})
    second = Job(**base, weights_file=run.weights if run else None, builds=builds(todo[1:]), run=run)
    return [(first, todo[:1]), (second, todo[1:])]


def _run_jobs(jobs: list[tuple[Job, list]], scratch: Path, *, model_name: str, timeout_s: float | None, on_stage: Callable[[str], None]) -> list[JobResult]:
    """Each job in its own worker, concurrently; the first failure is raised once all have ended."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [
            pool.submit(run_in_worker, job, scratch / f"job{number}", model_name=model_name, timeout_s=timeout_s, on_stage=on_stage)
            for number, (job, _) in enumerate(jobs)
        ]
        wait(futures)
    return [future.result() for future in futures]


def _merged_stages(results: Sequence[JobResult]) -> dict[str, float]:
    """Seconds per stage over all workers (a stage two of them ran, such as import, adds up)."""
    stages: dict[str, float] = {}
    for result in results:
        for name, seconds in result.stages.items():
            stages[name] = round(stages.get(name, 0.0) + seconds, 3)
    return stages


def tune_model(
    model: Model,
    target: dict,
    database: Path,
    *,
    trials: int,
    budget_s: float | None,
    seed: int,
    timeout_s: float | None,
    on_stage: Callable[[str], None],
    passes: Sequence[PassChoice] = (),
) -> JobResult:
    """Tune ``model``'s kernels for ``target`` into ``database`` in a worker (edgesdk.compile.tuner)."""
    scratch = Path(tempfile.mkdtemp(prefix="edgesdk-tune-"))
    try:
        (scratch / "model.onnx").write_bytes(model.serialized)
        tune = TuneTask(target=target, database=str(database), trials=trials, budget_s=budget_s, seed=seed)
        job = Job(**_model_job(model, scratch, [choice for choice in passes if choice.stage == "relax"]), tune=tune)
        return run_in_worker(job, scratch / "job", model_name=model.name, timeout_s=timeout_s, on_stage=on_stage)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
