"""edgesdk.compile.reorder: the kernels run in the order of lowest peak memory, and the artifact
runs exactly that order."""

from __future__ import annotations

import numpy as np
import pytest

import edgesdk
from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.frontend.model import random_inputs
from edgesdk.testing import models

pytest.importorskip("tvm")


def kernel_calls(artifact) -> list[tuple[str, np.ndarray]]:
    """Run ``artifact`` on random inputs; each kernel call in order, with the tensor it writes
    (its last argument), seen through the VM's instrument hook."""
    names = {kernel.name for kernel in ModelAnalysis.model_validate_json((artifact.path / "analysis.json").read_text()).kernels}
    calls: list[tuple[str, np.ndarray]] = []

    def instrument(func, symbol, before_run, ret_value, *args):
        if before_run and symbol in names:
            calls.append((symbol, np.from_dlpack(args[-1])))
        return 0

    runner = artifact.runner
    call = runner.invoker(random_inputs(artifact.inputs, seed=0))
    runner.vm.set_instrument(instrument)
    try:
        call()
    finally:
        runner.vm.set_instrument(None)
    return calls


def test_level_by_level_branches_run_branch_by_branch(tmp_path):
    artifact = edgesdk.deploy(models.level_by_level_branches(), "pc", tmp_path / "a", input_shapes={"image": [1, 3, 64, 64]})
    assert artifact.manifest.verification.passed
    analysis = ModelAnalysis.model_validate_json((artifact.path / "analysis.json").read_text())
    order = analysis.order
    assert order is not None and order.exact
    wide = 96 * 32 * 32 * 4
    # In the file's order the four wide tensors are live together; in the chosen order one is.
    assert order.file_order_peak_bytes >= 4 * wide
    assert order.scheduled_peak_bytes <= 0.75 * order.file_order_peak_bytes
    memory = artifact.manifest.estimate.memory
    assert memory is not None
    assert (memory.default_order_peak_bytes, memory.scheduled_peak_bytes) == (order.file_order_peak_bytes, order.scheduled_peak_bytes)
    assert len(memory.timeline) == len(analysis.kernels)
    assert max(memory.timeline) <= memory.scheduled_peak_bytes
    # The artifact calls its kernels in the analysed order (the VM's instrument hook sees them).
    assert [symbol for symbol, _ in kernel_calls(artifact)] == [kernel.name for kernel in analysis.kernels]


def test_a_chain_keeps_the_files_order(tmp_path):
    artifact = edgesdk.deploy(models.tiny_cnn(), "pc", tmp_path / "a", input_shapes={"image": [1, 3, 32, 32]})
    order = ModelAnalysis.model_validate_json((artifact.path / "analysis.json").read_text()).order
    assert order is not None
    assert order.scheduled_peak_bytes == order.file_order_peak_bytes


def test_the_library_allocates_the_arena_the_manifest_reports(tmp_path):
    """estimate.memory.arena_bytes is what the device library's VM program allocates (read back
    from the .so): the one arena edgesdk.compile.arena lays out for the lowered main, and the model
    output; in run order the wide tensors of the branches share their bytes."""
    import re

    import tvm
    from tvm import relax

    artifact = edgesdk.deploy(models.level_by_level_branches(), "pc", tmp_path / "a", input_shapes={"image": [1, 3, 64, 64]})
    memory = artifact.manifest.estimate.memory
    assert memory is not None and memory.arena_bytes is not None
    library = artifact.path / artifact.manifest.build.simulation_library
    executable = relax.VMExecutable(tvm.runtime.load_module(str(library)))
    pool = re.search(r"Constant pool \(# \d+\): \[(.*)\]", executable.stats())
    assert pool is not None
    # One token per constant: the error-context strings (quotes and commas inside) go first.
    constants = re.findall(r"shapetuple\[[^\]]*\]|[^,\s]+", re.sub(r'"ErrorContext\(.*?\) "', "S", pool[1]))
    storages = [
        int(re.fullmatch(r"shapetuple\[(\d+)\]", constants[int(index)].strip())[1])
        for index in re.findall(r"alloc_storage in: %vm, c\[(\d+)\]", executable.as_text())
    ]
    # One arena for every intermediate tensor, then a storage per model output (TVM's own).
    output = 32 * 32 * 32 * 4
    assert storages[1:] == [output] and sum(storages) == memory.arena_bytes
    # Running, every kernel writes inside that arena (views at their offsets, no copies): the
    # outputs of all kernels but the last span no more than its bytes.
    written = [(out.ctypes.data, out.nbytes) for _, out in kernel_calls(artifact)]
    inside = written[:-1]
    assert len(inside) > 4 and max(start + size for start, size in inside) - min(start for start, _ in inside) <= storages[0]
    wide = 96 * 32 * 32 * 4
    assert wide <= memory.arena_bytes < 2 * wide + 4 * (8 * 32 * 32 * 4) + 16 * 32 * 32 * 4 + 32 * 32 * 32 * 4
