"""Artifacts run and timed on a board over TVM RPC: a server started on the board
(``python -m tvm.exec.rpc_server``, or TVM's Android RPC app), reached directly or through a
tracker that hands out the boards registered under a key.

The artifact's device library is uploaded and loaded by the server, its weights and the inputs
copied into the board's memory, and the Relax VM runs ``main`` there. Timing is TVM's own
``time_evaluator``, run on the board: the whole model (``invoke_stateful``: no copy in the timed
loop), and each kernel alone from the artifact's kernels library (``manifest.build.kernels_library``)
on buffers of its shapes. A kernel's time is what it takes alone plus an even share of what the
whole run takes beyond the kernels' sum (the VM's dispatch), so that, as on this host
(edgesdk.simulate.measure), the kernels add up to the run.

edgesdk.compile.remote_runner does the TVM side. The server's files (the libraries) are removed
when the session ends. A server that stops answering, or reports an error, is one ``BoardLost``
line naming it; nothing measured before is lost.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from edgesdk.artifact.directory import Artifact
from edgesdk.artifact.files import WEIGHTS_FILE
from edgesdk.compile.onnxruntime_segments import SEGMENTS_DIR, read_segments
from edgesdk.compile.remote_runner import RemoteRunner, connect_server, connect_tracker, tracker_keys
from edgesdk.distributed.network import check_reachable, parse_address
from edgesdk.errors import EdgeSDKError, UserInputError
from edgesdk.simulate.measure import KernelTime, Measurement

SESSION_TIMEOUT_S = 600.0
SERVER_HINT = "start one on the board: python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090 (docs/scale-out.md)"


class BoardLost(EdgeSDKError):
    """The board's RPC server stopped answering, or reported an error (exit 1)."""

    exit_code = 1


@dataclass(frozen=True)
class Board:
    """Where to reach a board: an RPC server at ``remote``, or a ``tracker`` and the ``key`` its
    boards are registered under."""

    remote: str | None = None
    tracker: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.remote is None) == (self.tracker is None):
            raise UserInputError("give --remote HOST:PORT or --tracker HOST:PORT --key KEY, not both", hint=SERVER_HINT)
        if self.tracker is not None and not self.key:
            raise UserInputError("--tracker needs --key: the key the board's server registered with", hint="`python -m tvm.exec.query_rpc_tracker` lists them")
        if self.remote is not None and self.key:
            raise UserInputError("--key goes with --tracker", hint="drop --key, or reach the board through its tracker")

    def __str__(self) -> str:
        return f"RPC server {self.remote}" if self.remote else f"tracker {self.tracker} key {self.key}"

    def connect(self):
        """A TVM RPC session with the board."""
        if self.remote is not None:
            host, port = parse_address(self.remote, "--remote")
            check_reachable(host, port, "--remote", SERVER_HINT)
            with lost(self, "connecting"):
                return connect_server(host, port, SESSION_TIMEOUT_S)
        assert self.tracker is not None and self.key is not None
        host, port = parse_address(self.tracker, "--tracker")
        check_reachable(host, port, "--tracker", "start one: python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190")
        with lost(self, "asking the tracker"):
            keys = tracker_keys(host, port)
        if self.key not in keys:  # the tracker would queue the request until such a board turns up
            raise UserInputError(
                f"--key {self.key}: no board registered under it at tracker {self.tracker}", hint=f"registered keys: {', '.join(keys) or 'none'}"
            )
        with lost(self, "connecting"):
            return connect_tracker(host, port, self.key, SESSION_TIMEOUT_S)

    def run(self, artifact: Artifact, inputs: Mapping[str, np.ndarray], *, cast: bool = False) -> dict[str, np.ndarray]:
        """The artifact's outputs on ``inputs``, computed on the board."""
        checked = artifact.checked_inputs(inputs, cast=cast)
        with loaded(self, artifact) as runner, lost(self, "running the model"):
            runner.set_inputs(checked)
            return runner.run()

    def measure(self, artifact: Artifact, inputs: Mapping[str, np.ndarray], repeat: int = 20) -> Measurement:
        """The artifact's latency on the board: the whole model's median, and each kernel's."""
        checked, kernels = artifact.checked_inputs(inputs), artifact.analysis.kernels
        with loaded(self, artifact) as runner, lost(self, "timing the model"):
            runner.set_inputs(checked)
            runner.run()  # warm up
            latency_ms = statistics.median(runner.time_model(repeat))
            alone = runner.time_kernels(kernels, repeat)
        per_kernel: list[KernelTime] = []
        if alone:
            dispatch_ms = max(0.0, latency_ms - sum(alone[kernel.name] for kernel in kernels)) / max(len(kernels), 1)
            per_kernel = [KernelTime(index=index, name=kernel.name, measured_ms=alone[kernel.name] + dispatch_ms) for index, kernel in enumerate(kernels)]
        return Measurement(latency_ms=latency_ms, repeat=repeat, per_kernel=per_kernel, on=str(self))


@contextlib.contextmanager
def lost(board: Board, doing: str, hint: str | None = None) -> Iterator[None]:
    """A failure while ``doing`` something on the board as one ``BoardLost`` line: what the board
    reported (with ``hint``), or that it stopped answering."""
    try:
        yield
    except (RuntimeError, OSError, ValueError) as exc:  # TVM's RPC errors are RuntimeErrors
        text = str(exc)
        lines = [line.strip() for line in text.splitlines() if line.strip() and "Traceback" not in line]
        detail = (lines[-1] if lines else type(exc).__name__)[:240]
        if "Error caught from RPC call" in text:  # the board answered, with an error
            raise BoardLost(f"{board}: {doing}: the board reported: {detail}", hint=hint) from None
        raise BoardLost(f"{board}: {doing}: the board stopped answering ({detail})", hint="check its RPC server, then run again") from None


def _runnable(artifact: Artifact) -> None:
    build = artifact.manifest.build
    if build.kernels_library is None and not any(name.endswith(".so") for name in build.device_files):
        raise UserInputError(
            f"{artifact.path}: a {artifact.manifest.device} artifact is firmware, not a library a TVM RPC server loads",
            hint="run it under QEMU with --emulate",
        )
    segments = read_segments(artifact.path / SEGMENTS_DIR)
    if segments:
        raise UserInputError(
            f"{artifact.path}: {len(segments)} of its nodes run on onnxruntime here ({segments[0].op} ...), which a board's RPC server does not have",
            hint="run it on this host, or deploy a model whose nodes TVM lowers",
        )


@contextlib.contextmanager
def loaded(board: Board, artifact: Artifact) -> Iterator[RemoteRunner]:
    """``artifact`` loaded on ``board`` for the block; the board's copies removed after it."""
    _runnable(artifact)
    build, target = artifact.manifest.build, artifact.manifest.target
    library = next(name for name in build.device_files if name.endswith(".so"))
    kernels = artifact.path / build.kernels_library if build.kernels_library else None
    outputs = [spec.name for spec in artifact.manifest.model.outputs]
    with lost(board, "loading the artifact", hint=f"the artifact is built for {target.get('mtriple', target.get('kind'))}: is that the board's?"):
        runner = RemoteRunner(board.connect(), artifact.path / library, artifact.path / WEIGHTS_FILE, outputs, kernels)
    try:
        yield runner
    finally:
        runner.close()


def board_from(remote: str | None, tracker: str | None, key: str | None) -> Board | None:
    """The board the ``--remote``/``--tracker``/``--key`` options name; None when none is given."""
    if remote is None and tracker is None and key is None:
        return None
    return Board(remote=remote, tracker=tracker, key=key)
