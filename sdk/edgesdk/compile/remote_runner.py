"""A compiled model run and timed on another machine over TVM RPC (the TVM side of
edgesdk.distributed.boards, which says where and why; this module is how).

The library is uploaded and loaded by the RPC server, the weights and inputs copied into the
board's memory, and the Relax VM runs ``main`` there through its stateful interface (inputs set
once, so a timed call copies nothing). Kernels are timed alone from the kernels library (a plain
library module: the server's ``time_evaluator`` finds a function by name only in such a module).
Every error is TVM's (a ``RuntimeError``): the caller says what it means.
"""

from __future__ import annotations

import gc
import hashlib
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.compile.kernels import Kernel
from edgesdk.frontend.tensors import load_npz

MIN_REPEAT_MS = 20  # per timed repeat: short kernels are run in loops at least this long


def connect_server(host: str, port: int, timeout_s: float):
    """A session with the RPC server at ``host:port``."""
    from tvm import rpc

    return rpc.connect(host, port, session_timeout=timeout_s)


def tracker_keys(host: str, port: int) -> list[str]:
    """The keys boards are registered under at the tracker ``host:port``."""
    from tvm import rpc

    return sorted(rpc.connect_tracker(host, port).summary().get("queue_info", {}))


def connect_tracker(host: str, port: int, key: str, timeout_s: float):
    """A session with a board the tracker at ``host:port`` has under ``key``."""
    from tvm import rpc

    return rpc.connect_tracker(host, port).request(key, session_timeout=timeout_s, max_retry=1)


class RemoteRunner:
    """A library and its weights loaded on the session's CPU, with the kernels library if given."""

    def __init__(self, session, library: Path, weights: Path, output_names: Sequence[str], kernels_library: Path | None = None):
        from tvm import relax, runtime

        self.session, self.device, self.output_names = session, session.cpu(), list(output_names)
        self.uploaded: list[str] = []
        self.vm: Any = None
        self.weights: list = []
        self.kernels: Any = None
        try:
            self.vm = relax.VirtualMachine(session.load_module(self._upload(library)), self.device)
            arrays = load_npz(weights)
            self.weights = [runtime.tensor(arrays[key], self.device) for key in sorted(arrays)]
            self.kernels = session.load_module(self._upload(kernels_library)) if kernels_library else None
        except BaseException:
            self.close()
            raise

    def _upload(self, path: Path) -> str:
        """``path`` on the server, under a name its content decides."""
        remote = f"edgesdk-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}-{path.name}"
        self.session.upload(str(path), remote)
        self.uploaded.append(remote)
        return remote

    def close(self) -> None:
        """Remove what was uploaded (the server may be gone, and its files with it), then end the
        session: TVM closes it when the last object of it is freed, and a server serves one
        session at a time, so one left to the garbage collector blocks the next connection."""
        for name in self.uploaded:
            try:
                self.session.remove(name)
            except Exception:  # noqa: BLE001 - nothing is left to clean on a server that went away
                break
        self.vm = self.kernels = self.session = self.device = None
        self.weights = []
        gc.collect()  # TVM's wrappers hold some of these in reference cycles

    def set_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        from tvm import runtime

        arrays = [runtime.tensor(np.ascontiguousarray(array), self.device) for array in inputs.values()]
        self.vm.set_input("main", *arrays, *self.weights)

    def run(self) -> dict[str, np.ndarray]:
        """Outputs by name, of ``main`` on the inputs set last."""
        self.vm.invoke_stateful("main")
        result = self.vm.get_outputs("main")
        values = list(result) if isinstance(result, tuple) else [result]
        return {name: value.numpy() for name, value in zip(self.output_names, values, strict=True)}

    def time_model(self, repeat: int) -> list[float]:
        """Milliseconds per run of ``main`` on the inputs set last, ``repeat`` times."""
        timer = self.vm.time_evaluator("invoke_stateful", self.device, number=1, repeat=repeat, min_repeat_ms=MIN_REPEAT_MS)
        return [seconds * 1e3 for seconds in timer("main").results]

    def time_kernels(self, kernels: Sequence[Kernel], repeat: int) -> dict[str, float]:
        """Median milliseconds of each kernel alone, by name, on buffers of its shapes (empty
        without a kernels library)."""
        from tvm import runtime

        times: dict[str, float] = {}
        if self.kernels is None:
            return times
        rng = np.random.default_rng(0)
        for kernel in kernels:
            if kernel.name in times:
                continue
            # Floats random, integers zero: an index tensor of zeros stays in bounds.
            buffers = [
                runtime.tensor(
                    rng.standard_normal(tensor.shape).astype(tensor.dtype) if np.dtype(tensor.dtype).kind == "f" else np.zeros(tensor.shape, tensor.dtype),
                    self.device,
                )
                for tensor in [*kernel.inputs, *kernel.outputs]
            ]
            timer = self.kernels.time_evaluator(kernel.name, self.device, number=1, repeat=repeat, min_repeat_ms=MIN_REPEAT_MS)
            times[kernel.name] = statistics.median(timer(*buffers).results) * 1e3
        return times
