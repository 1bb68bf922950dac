"""The kernels' scratch memory, planned with the tensors in one arena.

TVM's kernels allocate scratch while they run (a padded copy of their input, a convolution's output
before its fused epilogue) through ``TVMBackendAllocWorkspace``, with sizes that are constants in
the generated code (TVM's C, or the LLVM IR of its CPU backend). The memory plan
(edgesdk.compile.arena) sees only the tensors between kernels, so on a device without a heap that
scratch would be a second static buffer as large as the largest kernel's. Here each kernel call's
scratch is a block of the arena that no tensor alive during that call uses: the one static arena
of the standalone runner (edgesdk.compile.standalone) holds everything but the model's inputs and
outputs, and its size is what the device's RAM must hold for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgesdk.compile.arena import ALIGNMENT, Block, layout, place
from edgesdk.compile.program import Program

# A workspace request with a constant size, in TVM's C or in its LLVM IR (there the call goes
# through the loaded runtime pointer: the only callee of that signature), one with a size known
# only at run time, and where each function starts.
_REQUEST = re.compile(r"TVMBackendAllocWorkspace\(\d+, \w+, \(uint64_t\)(\d+)ULL|call ptr %[\w.]+\(i32 \d+, i32 %?[\w.]+, i64 (\d+), i32 \d+, i32 \d+\)")
_DYNAMIC_REQUEST = re.compile(r"TVMBackendAllocWorkspace\(\d+, \w+, \(uint64_t\)[^\d]|call ptr %[\w.]+\(i32 \d+, i32 %?[\w.]+, i64 %")
_FUNCTION = re.compile(r"^(?:TVM_DLL int32_t (\w+)\(void\* self_handle, void\* args, int32_t num_args, void\* result\) \{|define .*@([\w.]+)\()", re.MULTILINE)
# The kernel a generated function belongs to: its packed entry, or the LLVM backend's body of it.
_KERNEL = re.compile(r"^(?:__tvm_ffi_(\w+)|(\w+)_compute_)$")
UNOWNED = ""  # requests in functions of no one kernel (parallel loop bodies): any call may make them


def _aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def kernel_workspaces(kernels_source: str) -> dict[str, int]:
    """{kernel: the most scratch one call of it holds at once} from ``kernels_source`` (TVM's C
    or LLVM IR), each request rounded up to the alignment, nested requests summed; requests in
    functions of no one kernel are under ``UNOWNED``. Raises ValueError for a request whose size
    is known only at run time."""
    if _DYNAMIC_REQUEST.search(kernels_source):
        raise ValueError("a kernel asks for a workspace whose size is known only at run time")
    starts = [(match.start(), match.group(1) or match.group(2)) for match in _FUNCTION.finditer(kernels_source)]
    needs: dict[str, int] = {}
    for (begin, function), (end, _) in zip(starts, [*starts[1:], (len(kernels_source), "")], strict=True):
        held = sum(_aligned(int(c_size or ir_size)) for c_size, ir_size in _REQUEST.findall(kernels_source, begin, end))
        if held:
            owner = _KERNEL.match(function)
            kernel = (owner.group(1) or owner.group(2)) if owner else UNOWNED
            needs[kernel] = needs.get(kernel, 0) + held  # a packed entry and its body: nested
    return needs


@dataclass(frozen=True)
class DevicePlan:
    """Where the standalone runner puts everything in its one arena."""

    offsets: dict[int, int]  # arena tensor that a call uses (index into Program.tensors) -> byte offset
    scratch: list[tuple[int, int]]  # per kernel call: (offset, bytes) of its scratch block
    arena_bytes: int
    io_bytes: int  # the model's inputs and outputs: buffers the caller owns

    @property
    def ram_bytes(self) -> int:
        """What the device's RAM holds for the model's tensors: the arena and the I/O buffers."""
        return self.arena_bytes + self.io_bytes

    @property
    def scratch_bytes(self) -> int:
        """The most scratch one call uses."""
        return max((size for _, size in self.scratch), default=0)


def plan(program: Program, workspaces: dict[str, int]) -> DevicePlan:
    """The arena of ``program`` with each call's scratch (``workspaces``: kernel_workspaces) in it:
    the tensors where the memory plan put them and each scratch block in the lowest gap free
    during its call, or everything laid out afresh, whichever arena is smaller."""
    tensors = program.tensors
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for number, call in enumerate(program.calls):
        for argument in map(program.root, call.args):
            if tensors[argument].kind == "arena":
                first.setdefault(argument, number)
                last[argument] = number
    arena = sorted(first)
    blocks = [Block(tensors[t].nbytes, first[t], last[t]) for t in arena]
    sizes = [workspaces.get(call.kernel, 0) + workspaces.get(UNOWNED, 0) for call in program.calls]
    calls = [number for number, size in enumerate(sizes) if size]
    blocks += [Block(sizes[number], number, number) for number in calls]
    scratch = range(len(arena), len(blocks))
    kept = place(blocks, scratch, fixed={position: tensors[t].offset for position, t in enumerate(arena)})
    offsets, total = min([kept, layout(blocks)], key=lambda placed: placed[1])
    located = [(0, 0)] * len(program.calls)
    for number, block in zip(calls, scratch, strict=True):
        located[number] = (offsets[block], sizes[number])
    io_bytes = sum(tensor.nbytes for tensor in tensors if tensor.kind in ("input", "output"))
    return DevicePlan({t: offsets[position] for position, t in enumerate(arena)}, located, total, io_bytes)
