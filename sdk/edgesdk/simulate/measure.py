"""Measured latency of a compiled model on this host, in total and per kernel, beside the estimate.

The total is the median wall time of whole runs of the compiled function on inputs already in
TVM's memory (no numpy conversion, as on a device). Per-kernel times come from the Relax VM's
instrument hook (``vm.set_instrument``), which is called before and after every call; a kernel's
time is the median gap between its two calls. That gap also holds the hook's own cost (a return
from and a call into Python, about 1.5 us on this host: more than a small kernel takes), so the
excess of the kernels' sum over the whole run without the hook is taken off, spread evenly over
the kernels: a kernel's time is then what it adds to a run, its dispatch by the VM included.
Only devices whose code runs on this host (``pc``) can be measured here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgesdk.compile.host_runner import HostRunner
from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.errors import UserInputError

# A kernel keeps at least this share of its hooked time (the hook's cost is an average: a kernel
# faster than it must not come out at zero or below).
HOOK_FLOOR = 0.1


class KernelTime(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    name: str
    measured_ms: float


class Measurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_ms: float
    repeat: int
    per_kernel: list[KernelTime] = Field(description="Per kernel, in call order; empty where kernels could not be timed one by one.")
    on: str = Field("this host", description="Where it ran: this host, or the board (its RPC server or tracker and key).")


def measure(runner: HostRunner, inputs: Mapping[str, np.ndarray], analysis: ModelAnalysis, repeat: int = 20) -> Measurement:
    call = runner.invoker(inputs)
    call()  # warm up
    totals = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        totals.append((time.perf_counter() - start) * 1e3)

    names = {kernel.name for kernel in analysis.kernels}
    samples: list[list[float]] = []
    current: list[float] = []
    started: dict[str, float] = {}

    def instrument(func, symbol, before_run, ret_value, *args):
        if symbol in names:
            if before_run:
                started[symbol] = time.perf_counter()
            else:
                current.append((time.perf_counter() - started.pop(symbol)) * 1e3)
        return 0

    runner.vm.set_instrument(instrument)
    try:
        for _ in range(repeat):
            current = []
            call()
            samples.append(current)
    finally:
        # Detached: a do-nothing Python hook left in place still costs every later call of the
        # model ~7 us per kernel (a 14 us model ran at 110 us).
        runner.vm.set_instrument(None)
    calls = min(len(run) for run in samples)
    if calls != len(analysis.kernels):
        raise UserInputError(
            f"the library made {calls} kernel calls but its analysis.json lists {len(analysis.kernels)}",
            hint="the artifact was made by another edgesdk version: deploy it again",
        )
    medians = [statistics.median(run[index] for run in samples) for index in range(calls)]
    latency_ms = statistics.median(totals)
    hook_ms = max(0.0, (sum(medians) - latency_ms) / calls) if calls else 0.0
    per_kernel = [
        KernelTime(index=index, name=kernel.name, measured_ms=max(median - hook_ms, HOOK_FLOOR * median))
        for index, (kernel, median) in enumerate(zip(analysis.kernels, medians, strict=True))
    ]
    return Measurement(latency_ms=latency_ms, repeat=repeat, per_kernel=per_kernel)
