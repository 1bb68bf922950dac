"""edgesdk.compile.arena: every planned tensor of main at an offset in one arena, no two tensors
alive at once sharing a byte, and the arena no larger than TVM's storages."""

from __future__ import annotations

import random

import pytest

from edgesdk.compile.arena import ALIGNMENT, Block, layout


def overlapping(a: Block, b: Block) -> bool:
    return a.start <= b.end and b.start <= a.end


@pytest.mark.parametrize("seed", range(20))
def test_tensors_alive_together_never_share_bytes(seed):
    rng = random.Random(seed)
    blocks = []
    for _ in range(rng.randint(1, 40)):
        start = rng.randint(0, 50)
        blocks.append(Block(size=rng.choice([64, 100, 4096, 12_288, 65_536]), start=start, end=start + rng.randint(0, 8)))
    offsets, total = layout(blocks)
    assert all(offset % ALIGNMENT == 0 for offset in offsets) and total % ALIGNMENT == 0
    for i, a in enumerate(blocks):
        assert offsets[i] + a.size <= total
        for j in range(i):
            b = blocks[j]
            if overlapping(a, b):
                assert offsets[i] + a.size <= offsets[j] or offsets[j] + b.size <= offsets[i]
    # Never less than the most bytes alive at one step, never more than no sharing at all.
    steps = range(max(block.end for block in blocks) + 1)
    alive = max(sum(block.size for block in blocks if block.start <= step <= block.end) for step in steps)
    assert alive <= total <= sum(-(-block.size // ALIGNMENT) * ALIGNMENT for block in blocks)


def test_a_chain_reuses_two_buffers():
    """A chain of equal tensors, each read by the next kernel: two buffers in turn."""
    blocks = [Block(size=4096, start=2 * i, end=2 * i + 3) for i in range(10)]
    offsets, total = layout(blocks)
    assert total == 2 * 4096 and len(set(offsets)) == 2


def test_the_arena_is_smaller_than_tvms_storages(tmp_path):
    """On a network with tensors of many sizes, TVM's storages (shared only within a size class)
    add up to more than one arena laid out by offset."""
    pytest.importorskip("tvm")
    import tvm
    from tvm.relax.backend import cpu_generic
    from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

    from edgesdk.compile.lowering import fusion_passes, import_onnx, storage_bytes, with_arena
    from edgesdk.frontend.model import load_model
    from edgesdk.testing import models

    model = load_model(models.branchy_net(), input_shapes={"image": [1, 3, 64, 64]})
    (tmp_path / "m.onnx").write_bytes(model.serialized)
    mod, _, _, _ = import_onnx(tmp_path / "m.onnx", {"image": [1, 3, 64, 64]})
    with tvm.target.Target({"kind": "llvm"}) as target:
        lowered = tvm.transform.Sequential([*fusion_passes(target), *cpu_pipeline.dataflow_lower_passes(target)])(mod)
        theirs = storage_bytes(tvm.transform.Sequential(cpu_generic.finalize_passes(target))(lowered))
        ours = storage_bytes(tvm.transform.Sequential(with_arena(cpu_generic.finalize_passes(target)))(lowered))
    assert ours < 0.8 * theirs
