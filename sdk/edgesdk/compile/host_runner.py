"""The functional simulation: a host build of the lowered model, run by TVM's Relax VM in this
process."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.compile.onnxruntime_segments import register, segments_dir
from edgesdk.errors import UserInputError
from edgesdk.frontend.model import TensorSpec
from edgesdk.frontend.tensors import check_inputs, load_npz

ALIGNMENT = 64  # bytes: TVM takes a numpy array without a copy only when it starts at such an address


class HostRunner:
    """The functional simulation: a host build of the lowered model, run by TVM's Relax VM.

    One call at a time (as TVM's VM itself): an input that is not aligned for TVM is copied into a
    buffer kept for the next call, and outputs are handed over without a copy."""

    def __init__(self, library: Path, weights: Path, inputs: list[TensorSpec], outputs: list[str]):
        self.library, self.weights_file, self.inputs, self.outputs = library, weights, inputs, outputs
        self._vm: Any = None
        self._main: Any = None
        self._weights: list = []
        self._buffers: dict[int, tuple[Any, np.ndarray]] = {}  # input index -> (TVM tensor, numpy view of it)

    def _load(self) -> None:
        import tvm
        from tvm import relax

        register(segments_dir(self.weights_file))  # the nodes onnxruntime runs, which the library calls
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(self.library)), tvm.cpu())
        self._vm, self._main = vm, vm["main"]
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

    def _tensor(self, index: int, array: np.ndarray):
        """``array`` as a TVM tensor (and the numpy memory it lives in): shared when aligned, else
        copied into this input's buffer."""
        import tvm

        # (An empty array is copied too: DLPack may give it strides TVM does not take as compact.)
        if array.size and array.ctypes.data % ALIGNMENT == 0 and array.flags.c_contiguous:
            return tvm.runtime.from_dlpack(array), array
        kept = self._buffers.get(index)
        if kept is None or kept[1].shape != array.shape or kept[1].dtype != array.dtype:
            buffer = tvm.runtime.empty(array.shape, array.dtype.name)
            kept = self._buffers[index] = (buffer, np.from_dlpack(buffer))
        kept[1][...] = array
        return kept

    def _run_here(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.vm  # noqa: B018 - loads the library on first use (and with it self._main)
        passed = [self._tensor(index, array) for index, array in enumerate(arrays.values())]
        try:
            result = self._main(*(tensor for tensor, _ in passed), *self._weights)
        except Exception as error:
            if "match_cast" not in str(error):
                raise
            # A shape checked at run time (edgesdk.compile.onnx_fallback): one the values decide.
            raise UserInputError(
                "these inputs give a value a shape other than the one it was compiled for: its shape depends on the input values, "
                "and the deploy's inputs gave another",
                hint="deploy again with --inputs that give the shapes you need",
            ) from None
        values = [result] if hasattr(result, "numpy") else list(result)
        outputs = {}
        for name, value in zip(self.outputs, values, strict=False):
            array = np.from_dlpack(value)  # the VM allocated it for this call: no copy needed
            # ...unless it is an input passed through (an Identity model): that memory is not ours.
            outputs[name] = array.copy() if any(np.shares_memory(array, memory) for _, memory in passed) else array
        return outputs
