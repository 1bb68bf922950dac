"""edgesdk.compile.workspace: the kernels' scratch read off their code and placed in the arena
where no tensor alive during the call lies."""

from __future__ import annotations

import math
import random

import pytest

from edgesdk.compile.arena import ALIGNMENT, Block, layout
from edgesdk.compile.program import Call, Program, ProgramTensor
from edgesdk.compile.workspace import UNOWNED, kernel_workspaces, plan

C_KERNELS = """
TVM_DLL int32_t __tvm_ffi_conv(void* self_handle, void* args, int32_t num_args, void* result) {
  float* pad_temp = ((float*)((float*)TVMBackendAllocWorkspace(1, dev_id, (uint64_t)20736ULL, 2, 32)));
  float* inter = ((float*)((float*)TVMBackendAllocWorkspace(1, dev_id, (uint64_t)100ULL, 2, 32)));
}
TVM_DLL int32_t __tvm_ffi_relu(void* self_handle, void* args, int32_t num_args, void* result) {
}
"""

LLVM_KERNELS = """
define dllexport i32 @__tvm_ffi_conv(ptr noalias %self, ptr %args, i32 %num_args, ptr %result) {
  %r = call fastcc i32 @conv_compute_(ptr %a)
}
define internal fastcc i32 @conv_compute_(ptr %a) {
  %0 = load ptr, ptr @__TVMBackendAllocWorkspace, align 8
  %1 = call ptr %0(i32 1, i32 %dev_id, i64 4096, i32 2, i32 32)
}
define private i32 @__tvm_parallel_lambda(i32 %task_id, ptr %penv, ptr %cdata) {
  %0 = load ptr, ptr @__TVMBackendAllocWorkspace, align 8
  %1 = call ptr %0(i32 1, i32 %dev_id, i64 65, i32 2, i32 32)
}
"""


def test_requests_are_summed_per_kernel_and_rounded_to_the_alignment():
    assert kernel_workspaces(C_KERNELS) == {"conv": 20736 + 128}
    # The LLVM backend's body of a kernel is its own; a parallel loop body belongs to no one kernel.
    assert kernel_workspaces(LLVM_KERNELS) == {"conv": 4096, UNOWNED: 128}


def test_a_request_sized_at_run_time_is_refused():
    with pytest.raises(ValueError, match="only at run time"):
        kernel_workspaces(C_KERNELS.replace("(uint64_t)100ULL", "(uint64_t)n"))


def _program(rng: random.Random) -> tuple[Program, dict[str, int]]:
    """A random chain-and-branch program: each call reads one or two live tensors and writes a
    new one; arena offsets from the arena planner, as the compiler lays them out."""
    tensors = [ProgramTensor(kind="input", shape=[1, 16], dtype="float32")]
    calls: list[Call] = []
    for number in range(rng.randint(2, 25)):
        reads = rng.sample(range(len(tensors)), k=min(len(tensors), rng.randint(1, 2)))
        tensors.append(ProgramTensor(kind="arena", shape=[rng.choice([16, 100, 1024, 4096])], dtype=rng.choice(["float32", "int8"])))
        calls.append(Call(kernel=f"k{number % 5}", args=[*reads, len(tensors) - 1]))
    tensors.append(ProgramTensor(kind="output", shape=[1], dtype="float32"))
    calls.append(Call(kernel="head", args=[len(tensors) - 2, len(tensors) - 1]))
    arena = [index for index, tensor in enumerate(tensors) if tensor.kind == "arena"]
    uses = {t: [n for n, call in enumerate(calls) if t in call.args] for t in arena}
    sizes = {t: _bytes(tensors[t]) for t in arena}
    offsets, total = layout([Block(sizes[t], min(uses[t]), max(uses[t])) for t in arena])
    for t, offset in zip(arena, offsets, strict=True):
        tensors[t].offset = offset
    workspaces = {f"k{k}": rng.choice([0, 64, 5000, 20_000]) for k in range(5)}
    return Program(arena_bytes=total, tensors=tensors, calls=calls, outputs=[len(tensors) - 1]), workspaces


def _bytes(tensor: ProgramTensor) -> int:
    return {"float32": 4, "int8": 1}[tensor.dtype] * math.prod(tensor.shape)


@pytest.mark.parametrize("seed", range(20))
def test_scratch_never_touches_a_tensor_alive_during_its_call(seed):
    program, workspaces = _program(random.Random(seed))
    placed = plan(program, workspaces)
    live = {t: [n for n, call in enumerate(program.calls) if t in call.args] for t in placed.offsets}
    for number, ((offset, size), call) in enumerate(zip(placed.scratch, program.calls, strict=True)):
        assert size == workspaces.get(call.kernel, 0) and offset % ALIGNMENT == 0 and offset + size <= placed.arena_bytes
        for tensor, uses in live.items():
            start, end = placed.offsets[tensor], placed.offsets[tensor] + _bytes(program.tensors[tensor])
            assert end <= placed.arena_bytes
            if size and min(uses) <= number <= max(uses):
                assert offset + size <= start or end <= offset, f"call {number}'s scratch overlaps tensor {tensor}"
    # Tensors alive together still never share a byte (the layout may be redone with the scratch).
    for a, uses_a in live.items():
        for b, uses_b in live.items():
            if a < b and min(uses_a) <= max(uses_b) and min(uses_b) <= max(uses_a):
                a_end, b_end = placed.offsets[a] + _bytes(program.tensors[a]), placed.offsets[b] + _bytes(program.tensors[b])
                assert a_end <= placed.offsets[b] or b_end <= placed.offsets[a]
    # Never more than the tensors' arena with the largest scratch on top of it.
    assert placed.arena_bytes <= program.arena_bytes + -(-placed.scratch_bytes // ALIGNMENT) * ALIGNMENT
    assert placed.io_bytes == 16 * 4 + 4 and placed.ram_bytes == placed.arena_bytes + placed.io_bytes


def test_scratch_goes_in_a_gap_when_there_is_one():
    """A large tensor dies before a small kernel with a large scratch runs: the scratch takes its
    bytes and the arena does not grow."""
    tensors = [
        ProgramTensor(kind="input", shape=[4], dtype="float32"),
        ProgramTensor(kind="arena", shape=[4096], dtype="float32", offset=0),
        ProgramTensor(kind="arena", shape=[16], dtype="float32", offset=16384),
        ProgramTensor(kind="arena", shape=[16], dtype="float32", offset=0),
        ProgramTensor(kind="output", shape=[4], dtype="float32"),
    ]
    calls = [Call(kernel="big", args=[0, 1]), Call(kernel="shrink", args=[1, 2]), Call(kernel="scratchy", args=[2, 3]), Call(kernel="head", args=[3, 4])]
    program = Program(arena_bytes=16448, tensors=tensors, calls=calls, outputs=[4])
    placed = plan(program, {"scratchy": 8000})
    assert placed.arena_bytes == 16448 and placed.scratch[2][1] == 8000
