"""The ONNX backend node suite through edgesdk: each case deployed to a device and run from its
artifact, compared with the case's own expected outputs and tolerances.

A case is *runnable* when onnxruntime, edgesdk's reference numerics, runs it and matches its
expected outputs; the others say nothing about edgesdk. Runnable cases run in child processes, a
batch each (``python -m edgesdk.testing.conformance DEVICE CASE_DIR...``), so that a crash in a
loaded kernel library costs one case, not the run; TVM itself already runs in the deploy's worker.

Outcomes: ``pass``; ``mismatch`` (ran, wrong numbers); ``error`` (a clean edgesdk error: what a user
sees, one line); ``crash`` (anything else: a traceback, a signal, a timeout; these are bugs);
``not-runnable`` (onnxruntime cannot run it or disagrees with it) and ``other-types`` (strings,
sequences, optionals: an artifact's inputs and outputs are tensors) are not counted.
``benchmarks/conformance.py`` runs the whole suite; the tests run a sample.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx

from edgesdk.compile.worker import TIMEOUT_ENV

RESULT_FILE = "result.json"
CASE_TIMEOUT_S = 300.0
COMPILE_TIMEOUT_S = 240.0


@dataclasses.dataclass
class CaseResult:
    name: str
    op: str
    outcome: str  # pass | mismatch | error | crash | not-runnable
    reason: str = ""
    seconds: float = 0.0
    onnxruntime_partition: bool = False  # some nodes ran in onnxruntime, not TVM
    onnxruntime_nodes: list[str] = dataclasses.field(default_factory=list)  # "<op>: <why TVM could not>" for each

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def node_cases(names: Iterable[str] | None = None):
    """The node suite's cases (``onnx.backend.test.case.node``), all or those named."""
    from onnx.backend.test.case import node

    with warnings.catch_warnings():  # the generators' own overflow warnings
        warnings.simplefilter("ignore")
        cases = node.collect_testcases()
    if names is None:
        return cases
    wanted = set(names)
    return [case for case in cases if case.name in wanted]


def op_of(model: onnx.ModelProto) -> str:
    """The operator a case's model tests: its one node (or its first non-Constant node)."""
    nodes = [node for node in model.graph.node if node.op_type != "Constant"] or list(model.graph.node)
    if not nodes:
        return "(no node)"
    domain = nodes[0].domain
    return (f"{domain}." if domain and domain != "ai.onnx" else "") + nodes[0].op_type


TYPES = "not tensors:"  # how reference_problem() starts for a case edgesdk's tensor-only I/O cannot take


def _array(value):
    """A case's value as numpy where it is a tensor: a scalar is 0-d, a TensorProto (the suite's
    form for bfloat16, float8, int4) is read by onnx."""
    if isinstance(value, np.generic):
        return np.asarray(value)
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return value


def _tensor_inputs(model: onnx.ModelProto, values: Sequence) -> dict[str, np.ndarray] | str:
    """The case's inputs by graph input name, or why they are not plain tensors."""
    names = [value.name for value in model.graph.input]
    if len(values) != len(names):
        return f"{len(values)} input values for {len(names)} graph inputs"
    inputs = {}
    for name, value in zip(names, values, strict=True):
        value = _array(value)
        if not isinstance(value, np.ndarray):
            return f"{TYPES} input '{name}' is a {type(value).__name__}"
        if value.dtype.kind in "OSU":
            return f"{TYPES} input '{name}' holds strings"
        inputs[name] = value
    return inputs


def _matches(actual: dict[str, np.ndarray], expected: Sequence, names: Sequence[str], rtol: float, atol: float) -> str | None:
    """None when every output matches, else the first difference."""
    for name, want in zip(names, expected, strict=False):
        want = _array(want)
        if not isinstance(want, np.ndarray):
            return f"{TYPES} output '{name}' is a {type(want).__name__}"
        got = actual.get(name)
        if got is None:
            return f"output '{name}' missing"
        got = np.asarray(got)
        if got.shape != want.shape:
            return f"output '{name}': shape {got.shape}, expected {want.shape}"
        if want.dtype.kind in "OSU":
            if not np.array_equal(got, want):
                return f"output '{name}': strings differ"
            continue
        if want.dtype == bool or got.dtype == bool:
            if not np.array_equal(got.astype(bool), want.astype(bool)):
                return f"output '{name}': {int(np.sum(got.astype(bool) != want.astype(bool)))} booleans differ"
            continue
        try:
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
        except AssertionError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if "Max absolute" in line or "Mismatched" in line]
            return f"output '{name}': " + "; ".join(lines or ["values differ"])
    return None


def reference_problem(case) -> str | None:
    """Why onnxruntime cannot stand for this case (None: it runs it and matches)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # its warnings about the suite's models are not results
    try:
        onnx.checker.check_model(case.model)
        session = ort.InferenceSession(case.model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any refusal makes the case not runnable
        return f"onnxruntime cannot load it: {str(exc).strip().splitlines()[0][:200]}"
    names = [output.name for output in case.model.graph.output]
    for inputs, expected in case.data_sets:
        feeds = _tensor_inputs(case.model, inputs)
        if isinstance(feeds, str):
            return feeds
        wanted = {name: _array(want) for name, want in zip(names, expected, strict=False)}
        strings = [name for name, want in wanted.items() if isinstance(want, np.ndarray) and want.dtype.kind in "OSU"]
        if strings:
            return f"{TYPES} output '{strings[0]}' holds strings"
        try:
            got = dict(zip(names, session.run(names, feeds), strict=True))
        except Exception as exc:  # noqa: BLE001
            return f"onnxruntime cannot run it: {str(exc).strip().splitlines()[0][:200]}"
        problem = _matches(got, expected, names, case.rtol, case.atol)
        if problem:
            return f"onnxruntime disagrees with the expected outputs ({problem})"
    return None


def write_case(case, directory: Path) -> None:
    """The case as files a child process reads: the model, each data set's inputs and expected outputs."""
    from edgesdk.frontend.tensors import save_npz

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(case.model.SerializeToString())
    names = [output.name for output in case.model.graph.output]
    for number, (inputs, expected) in enumerate(case.data_sets):
        feeds = _tensor_inputs(case.model, inputs)
        assert not isinstance(feeds, str)  # reference_problem() let only tensor cases through
        save_npz(directory / f"inputs{number}.npz", feeds)
        save_npz(directory / f"expected{number}.npz", {name: _array(value) for name, value in zip(names, expected, strict=False)})
    (directory / "case.json").write_text(json.dumps({"name": case.name, "rtol": case.rtol, "atol": case.atol, "data_sets": len(case.data_sets)}))


def run_case_dir(directory: Path, device: str = "pc") -> CaseResult:
    """Deploy the case in ``directory`` to ``device`` and run every data set from the artifact."""
    import edgesdk
    from edgesdk.errors import EdgeSDKError
    from edgesdk.frontend.tensors import load_npz

    meta = json.loads((directory / "case.json").read_text())
    model = onnx.load(directory / "model.onnx")
    result = CaseResult(meta["name"], op_of(model), "pass")
    started = time.monotonic()
    try:
        first = load_npz(directory / "inputs0.npz")
        artifact = edgesdk.deploy(model, device, directory / "artifact", inputs=first)
        result.onnxruntime_nodes = [f"{f.op}: {f.reason}" for f in artifact.manifest.partition.fallbacks if f.to_unit == "onnxruntime"]
        result.onnxruntime_partition = bool(result.onnxruntime_nodes)
        names = [output.name for output in model.graph.output]
        for number in range(meta["data_sets"]):
            expected = load_npz(directory / f"expected{number}.npz")
            got = artifact.run(load_npz(directory / f"inputs{number}.npz"))
            problem = _matches(got, [expected[name] for name in names], names, meta["rtol"], meta["atol"])
            if problem:
                result.outcome, result.reason = "mismatch", problem
                break
    except EdgeSDKError as exc:
        result.outcome, result.reason = "error", f"{type(exc).__name__}: {exc.message}"[:500]
    except Exception as exc:  # noqa: BLE001 - a bug: recorded, so the run goes on
        result.outcome, result.reason = "crash", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"[:500]
    result.seconds = round(time.monotonic() - started, 2)
    return result


def run_cases(cases, device: str = "pc", *, workers: int = 2, batch: int = 16, on_result=None) -> list[CaseResult]:
    """Every case: checked against onnxruntime here, then deployed and run in child processes
    (``workers`` at a time, ``batch`` cases each so TVM's import is paid once per batch; a child
    that dies costs the case it was on, and the rest of its batch runs in a new one)."""
    from concurrent.futures import ThreadPoolExecutor

    results: dict[str, CaseResult] = {}
    runnable = []
    for case in cases:
        problem = reference_problem(case)
        if problem:
            results[case.name] = CaseResult(case.name, op_of(case.model), "not-runnable" if not problem.startswith(TYPES) else "other-types", problem)
            if on_result:
                on_result(results[case.name])
        else:
            runnable.append(case)
    with tempfile.TemporaryDirectory(prefix="edgesdk-conformance-") as scratch:
        directories = []
        for number, case in enumerate(runnable):
            directory = Path(scratch) / f"{number:05d}"
            write_case(case, directory)
            directories.append(directory)
        chunks = [directories[start : start + batch] for start in range(0, len(directories), batch)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for chunk_results in pool.map(lambda chunk: _run_batch(chunk, device, on_result), chunks):
                for result in chunk_results:
                    results[result.name] = result
    return [results[case.name] for case in cases]


def _run_batch(directories: list[Path], device: str, on_result) -> list[CaseResult]:
    found: list[CaseResult] = []
    left = list(directories)
    while left:
        started = time.monotonic()
        child = subprocess.run(
            [sys.executable, "-m", "edgesdk.testing.conformance", device, *map(str, left)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
            # TVM's own limit below the case's: a compile that hangs is killed, not waited for.
            env={**os.environ, "PYTHONWARNINGS": "ignore", TIMEOUT_ENV: str(COMPILE_TIMEOUT_S)},
        )  # fmt: skip
        done = [directory for directory in left if (directory / RESULT_FILE).exists()]
        for directory in done:
            found.append(CaseResult(**json.loads((directory / RESULT_FILE).read_text())))
            if on_result:
                on_result(found[-1])
        left = left[len(done) :]
        if left and child.returncode == 0:
            raise RuntimeError(f"the conformance child exited without results for {left[0]}")
        if left:  # it died on this case
            meta = json.loads((left[0] / "case.json").read_text())
            tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
            model = onnx.load(left[0] / "model.onnx")
            found.append(CaseResult(meta["name"], op_of(model), "crash", f"exit {child.returncode}: {tail}"[:500], round(time.monotonic() - started, 2)))
            if on_result:
                on_result(found[-1])
            left = left[1:]
    return found


def _timed_out(signum, frame):
    raise TimeoutError(f"timed out after {CASE_TIMEOUT_S:g} s")


def _main(argv: list[str]) -> int:
    import signal

    device, directories = argv[0], [Path(arg) for arg in argv[1:]]
    signal.signal(signal.SIGALRM, _timed_out)
    for directory in directories:
        signal.alarm(int(CASE_TIMEOUT_S))
        result = run_case_dir(directory, device)
        signal.alarm(0)
        (directory / RESULT_FILE).write_text(json.dumps(result.as_json()))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
