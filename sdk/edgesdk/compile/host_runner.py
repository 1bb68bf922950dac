"""The functional simulation: a host build of the lowered model, run by TVM's Relax VM in this
process."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgesdk.frontend.model import TensorSpec
from edgesdk.frontend.tensors import check_inputs, load_npz


class HostRunner:
    """The functional simulation: a host build of the lowered model, run by TVM's Relax VM."""

    def __init__(self, library: Path, weights: Path, inputs: list[TensorSpec], outputs: list[str]):
        self.library, self.weights_file, self.inputs, self.outputs = library, weights, inputs, outputs
        self._vm = None
        self._weights: list = []

    def _load(self) -> None:
        import tvm
        from tvm import relax

        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(self.library)), tvm.cpu())
        weights = load_npz(self.weights_file)
        self._weights = [tvm.runtime.tensor(weights[key]) for key in sorted(weights)]

    @property
    def vm(self):
        """TVM's Relax VM running the library, loaded on first use."""
        if self._vm is None:
            self._load()
        return self._vm

    def run(self, inputs: Mapping[str, np.ndarray], *, cast: bool = False) -> dict[str, np.ndarray]:
        """Outputs by name, computed in this process (edgesdk.compile.worker.run_isolated runs a
        library in a child process); ``cast`` converts inputs whose dtype conversion could change
        values (edgesdk.frontend.tensors.as_dtype)."""
        return self._run_here(check_inputs(inputs, self.inputs, "inputs", cast=cast))

    def invoker(self, inputs: Mapping[str, np.ndarray]):
        """A call of the compiled function on inputs already in TVM's memory: what a device does
        per inference, without converting numpy arrays (used to time it)."""
        import tvm

        arrays = [tvm.runtime.tensor(array) for array in check_inputs(inputs, self.inputs, "inputs").values()]
        main = self.vm["main"]
        return lambda: main(*arrays, *self._weights)

    def _run_here(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tvm

        result = self.vm["main"](*(tvm.runtime.tensor(array) for array in arrays.values()), *self._weights)
        values = [result] if hasattr(result, "numpy") else list(result)
        return {name: value.numpy() for name, value in zip(self.outputs, values, strict=False)}
