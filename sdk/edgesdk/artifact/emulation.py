"""Running a microcontroller artifact's own code under QEMU: the device's kernels and standalone
runner (edgesdk.compile.standalone), linked into firmware for a board QEMU emulates, on the
device's instruction set.

The firmware is the runner plus a small harness: a vector table and reset handler (FPU on, then
newlib's semihosting start-up), input and output buffers, and semihosting file I/O to read the
inputs and write the outputs and the status. SysTick counts the run: with ``-icount shift=0``
QEMU executes one instruction per virtual nanosecond, so ticks x (1e9 / the board's clock) is the
number of instructions the model executed (QEMU does not model cycles: an instruction count,
not a cycle count).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgesdk.artifact.manifest import EmulationInfo
from edgesdk.errors import CheckFailed, UserInputError


class TensorSpec(Protocol):
    """A model input or output: a frontend TensorSpec or a manifest TensorInfo."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> Sequence[int]: ...
    @property
    def dtype(self) -> str: ...


@dataclass(frozen=True)
class Board:
    """A QEMU machine that runs a target's code: the CPU, compile flags and memory map."""

    machine: str
    cpu: str
    flags: tuple[str, ...]
    flash: tuple[int, int]  # origin, bytes: code and const data (weights)
    ram: tuple[int, int]  # origin, bytes: data, bss (arena, workspace), stack
    clock_hz: int  # SysTick's processor clock in QEMU

    def describe(self) -> str:
        return f"qemu-system-arm -M {self.machine} -cpu {self.cpu}"


# By the target's mcpu. MPS2 AN500: Cortex-M7, 4 MB ZBT SSRAM1 at 0 (our flash), 4 MB SSRAM2/3 at
# 0x20000000, a 25 MHz system clock (QEMU's hw/arm/mps2.c).
BOARDS = {
    "cortex-m7": Board(
        machine="mps2-an500",
        cpu="cortex-m7",
        flags=("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16", "-mfp16-format=ieee"),
        flash=(0x0, 4 << 20),
        ram=(0x20000000, 4 << 20),
        clock_hz=25_000_000,
    ),
}
QEMU = "qemu-system-arm"
COMPILER = "arm-none-eabi-gcc"


@dataclass(frozen=True)
class EmulatedRun:
    outputs: dict[str, np.ndarray]
    info: EmulationInfo  # instructions are counted to one SysTick tick (40 at 25 MHz)


@dataclass(frozen=True)
class LinuxUser:
    """A target whose code runs as a Linux program under QEMU's user-mode emulation: the standalone
    library linked into a static executable (musl, by zig cc)."""

    qemu: str
    zig_target: str

    def describe(self) -> str:
        return f"{self.qemu} (user mode, {self.zig_target} static)"


LINUX_USER = {"aarch64": LinuxUser(qemu="qemu-aarch64", zig_target="aarch64-linux-musl")}
PACKAGES = {QEMU: "qemu-system-arm", COMPILER: "gcc-arm-none-eabi libnewlib-arm-none-eabi", "qemu-aarch64": "qemu-user"}


def platform_for(target: Mapping) -> Board | LinuxUser:
    """The emulated board or user-mode emulator that runs ``target``'s code."""
    mcpu, arch = str(target.get("mcpu", "")), str(target.get("mtriple", "")).split("-")[0]
    if target.get("kind") == "c" and mcpu in BOARDS:
        return BOARDS[mcpu]
    if target.get("kind") == "llvm" and arch in LINUX_USER:
        return LINUX_USER[arch]
    known = ", ".join([*BOARDS, *LINUX_USER])
    raise UserInputError(f"--emulate: no emulator for a {mcpu or arch or target.get('kind')} target", hint=f"emulated: {known}")


def missing_tools(platform: Board | LinuxUser | None = None) -> str | None:
    """A one-line reason when the emulator or compiler ``platform`` needs (default: the mcu's) is
    not installed, else None."""
    commands = [platform.qemu] if isinstance(platform, LinuxUser) else [QEMU, COMPILER]
    for command in commands:
        if shutil.which(command) is None:
            return f"{command} not found: install the Debian package {PACKAGES[command]} (apt-get install {PACKAGES[command]})"
    return None


def _linker_script(board: Board) -> str:
    return f"""MEMORY
{{
  FLASH (rx) : ORIGIN = {board.flash[0]:#x}, LENGTH = {board.flash[1]}
  RAM (rwx) : ORIGIN = {board.ram[0]:#x}, LENGTH = {board.ram[1]}
}}
ENTRY(Reset_Handler)
SECTIONS
{{
  .isr_vector : {{ KEEP(*(.isr_vector)) }} > FLASH
  .text : {{ *(.text*) KEEP(*(.init)) KEEP(*(.fini)) *(.rodata*) }} > FLASH
  .ARM.extab : {{ *(.ARM.extab* .gnu.linkonce.armextab.*) }} > FLASH
  .ARM.exidx : {{ __exidx_start = .; *(.ARM.exidx*) __exidx_end = .; }} > FLASH
  .preinit_array : {{ PROVIDE_HIDDEN(__preinit_array_start = .); KEEP(*(.preinit_array*)) PROVIDE_HIDDEN(__preinit_array_end = .); }} > FLASH
  .init_array : {{ PROVIDE_HIDDEN(__init_array_start = .); KEEP(*(SORT(.init_array.*))) KEEP(*(.init_array*)) PROVIDE_HIDDEN(__init_array_end = .); }} > FLASH
  .fini_array : {{ PROVIDE_HIDDEN(__fini_array_start = .); KEEP(*(SORT(.fini_array.*))) KEEP(*(.fini_array*)) PROVIDE_HIDDEN(__fini_array_end = .); }} > FLASH
  /* QEMU loads .data where it runs (no copy from flash needed in emulation). */
  .data : {{ *(.data*) }} > RAM
  .bss (NOLOAD) : {{ __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(8); __bss_end__ = .; }} > RAM
  end = .;
  __end__ = .;
  __stack = ORIGIN(RAM) + LENGTH(RAM);
}}
"""


_BARE_METAL = """
extern void _start(void);
extern uint32_t __stack;
static volatile uint32_t wraps;
#define SYST_CSR (*(volatile uint32_t*)0xE000E010)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018)
#define CPACR (*(volatile uint32_t*)0xE000ED88)

void Reset_Handler(void) {
  CPACR |= (0xFu << 20); /* the FPU, before any floating-point instruction */
  __asm volatile("dsb\\n isb");
  _start(); /* newlib: bss, semihosting handles, main, exit */
  for (;;) {}
}
void SysTick_Handler(void) { wraps++; }
void Default_Handler(void) { for (;;) {} }
__attribute__((section(".isr_vector"), used)) void (*const vectors[16])(void) = {
  (void (*)(void))(&__stack), Reset_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
  Default_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler, SysTick_Handler};
#define START_COUNTING() do { SYST_RVR = 0xFFFFFFu; SYST_CVR = 0; SYST_CSR = 7; } while (0)
#define TICKS() ((uint64_t)wraps * 0x1000000u + (0xFFFFFFu - SYST_CVR))
#define STOP_COUNTING() (SYST_CSR = 0)
"""
_HOSTED = """
#define START_COUNTING() ((void)0)
#define TICKS() ((uint64_t)0)
#define STOP_COUNTING() ((void)0)
"""


def _nbytes(spec: TensorSpec) -> int:
    return int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize


def _harness(model: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], bare_metal: bool) -> str:
    """main(): inputs from input.bin, the model, outputs to output.bin, the status and the
    SysTick count (bare metal: a vector table and reset handler too) to result.txt."""

    buffers = [f"static uint8_t input_{i}[{_nbytes(spec)}] __attribute__((aligned(64)));" for i, spec in enumerate(inputs)]
    buffers += [f"static uint8_t output_{i}[{_nbytes(spec)}] __attribute__((aligned(64)));" for i, spec in enumerate(outputs)]
    reads = "\n".join(f"  if (fread(input_{i}, 1, sizeof input_{i}, file) != sizeof input_{i}) return 91;" for i in range(len(inputs)))
    writes = "\n".join(f"  fwrite(output_{i}, 1, sizeof output_{i}, file);" for i in range(len(outputs)))
    return f"""/* edgesdk emulation harness: file I/O around {model}_run. */
#include <stdint.h>
#include <stdio.h>
#include "{model}.h"
{_BARE_METAL if bare_metal else _HOSTED}
{chr(10).join(buffers)}

int main(void) {{
  FILE* file = fopen("input.bin", "rb");
  if (!file) return 90;
{reads}
  fclose(file);
  const void* inputs[] = {{{", ".join(f"input_{i}" for i in range(len(inputs))) or "0"}}};
  void* outputs[] = {{{", ".join(f"output_{i}" for i in range(len(outputs)))}}};
  START_COUNTING();
  int status = {model}_run(inputs, outputs);
  uint64_t ticks = TICKS();
  STOP_COUNTING();
  file = fopen("output.bin", "wb");
{writes}
  fclose(file);
  file = fopen("result.txt", "w");
  fprintf(file, "%d %llu %s\\n", status, (unsigned long long)ticks, status ? {model}_last_error() : "");
  fclose(file);
  return status;
}}
"""


def _size(elf: Path) -> tuple[int, int, int]:
    proc = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True, check=True)
    text, data, bss = (int(field) for field in proc.stdout.splitlines()[1].split()[:3])
    return text, data, bss


def _run(command: list[str], work: Path, what: str, timeout_s: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"--emulate: {what} did not finish within {timeout_s:.0f} s") from exc


def _firmware(work: Path, board: Board, device_dir: Path, name: str, model: str) -> list[str]:
    """Build the Cortex-M firmware (and, to measure what the C library and the harness take, the
    same firmware around a model that does nothing); the QEMU command that runs it."""
    (work / "board.ld").write_text(_linker_script(board))
    (work / "nothing.c").write_text(
        f'#include "{model}.h"\nint {model}_run(const void* const* i, void* const* o) {{ (void)i; (void)o; return 0; }}\n'
        f'const char* {model}_last_error(void) {{ return ""; }}\n'
    )
    flags = [*board.flags, "-O2", "--specs=rdimon.specs", "-T", str(work / "board.ld"), f"-I{device_dir}", f"-I{device_dir / 'include'}"]
    for elf, sources in (
        ("firmware.elf", [str(work / "harness.c"), str(device_dir / f"{name}.c"), str(device_dir / f"{model}_runner.c")]),
        ("baseline.elf", [str(work / "harness.c"), str(work / "nothing.c")]),
    ):
        built = subprocess.run([COMPILER, *flags, *sources, "-lm", "-o", str(work / elf)], capture_output=True, text=True, check=False)
        if built.returncode != 0:
            raise CheckFailed(f"--emulate: building the firmware failed: {(built.stderr.strip().splitlines() or ['?'])[-1]}")
    command = [QEMU, "-M", board.machine, "-cpu", board.cpu, "-display", "none", "-serial", "null", "-monitor", "null"]
    return [*command, "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(work / "firmware.elf")]


def _executable(work: Path, platform: LinuxUser, device_dir: Path, model: str) -> list[str]:
    """Link the standalone library into a static test program; the QEMU command that runs it."""
    library = device_dir / f"lib{model}.a"
    if not library.is_file():
        raise UserInputError(f"--emulate: {device_dir.parent} has no standalone library ({library.name})", hint="deploy it with --standalone")
    zig = [sys.executable, "-m", "ziglang", "cc", "-target", platform.zig_target, "-static", "-O2"]
    command = [*zig, f"-I{device_dir}", f"-I{device_dir / 'include'}", str(work / "harness.c"), str(library), "-lm", "-o", str(work / "model")]
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise CheckFailed(f"--emulate: linking the test program failed: {(built.stderr.strip().splitlines() or ['?'])[-1]}")
    return [platform.qemu, str(work / "model")]


def run_device_code(
    device_dir: Path,
    name: str,
    model: str,
    target: Mapping,
    inputs: Mapping[str, np.ndarray],
    input_specs: Sequence[TensorSpec],
    output_specs: Sequence[TensorSpec],
    timeout_s: float = 600.0,
) -> EmulatedRun:
    """Run the device code of the artifact directory ``device_dir`` (kernels ``<name>``, runner of
    ``model``) for ``target`` under QEMU on ``inputs``: mcu firmware on its board, or a static
    program around the standalone library under user-mode emulation. Returns its outputs."""
    platform = platform_for(target)
    why_not = missing_tools(platform)
    if why_not is not None:
        raise UserInputError(f"--emulate: {why_not}")
    if isinstance(platform, Board) and not (device_dir / f"{model}_runner.c").is_file():
        raise UserInputError(f"--emulate: {device_dir.parent} has no standalone runner ({model}_runner.c): deploy it again with this edgesdk")
    with tempfile.TemporaryDirectory(prefix="edgesdk-emulate-") as scratch:
        work = Path(scratch)
        (work / "harness.c").write_text(_harness(model, input_specs, output_specs, bare_metal=isinstance(platform, Board)))
        command = _firmware(work, platform, device_dir, name, model) if isinstance(platform, Board) else _executable(work, platform, device_dir, model)
        with (work / "input.bin").open("wb") as stream:
            for spec in input_specs:
                stream.write(np.ascontiguousarray(inputs[spec.name], dtype=spec.dtype).tobytes())
        started = time.perf_counter()
        ran = _run(command, work, f"the device code under {platform.describe()}", timeout_s)
        seconds = time.perf_counter() - started
        result = (work / "result.txt").read_text().split(maxsplit=2) if (work / "result.txt").is_file() else []
        if len(result) < 2 or result[0] != "0":
            detail = " ".join(result) or (ran.stderr.strip().splitlines() or [f"exit status {ran.returncode}"])[-1]
            raise CheckFailed(f"--emulate: the device code failed under {platform.describe()}: {detail}")
        raw = (work / "output.bin").read_bytes()
        outputs, offset = {}, 0
        for spec in output_specs:
            count = int(np.prod(spec.shape, dtype=np.int64))
            array = np.frombuffer(raw, dtype=spec.dtype, count=count, offset=offset).reshape(spec.shape)
            outputs[spec.name] = array.copy()
            offset += array.nbytes
        firmware = isinstance(platform, Board)
        sizes: tuple[int | None, ...] = _size(work / "firmware.elf") if firmware else (None, None, None)
        # What the C library and the harness take: the empty model's firmware less its I/O buffers.
        io_bytes = sum(map(_nbytes, [*input_specs, *output_specs]))
        runtime = sum(_size(work / "baseline.elf")[1:]) - io_bytes if firmware else None
    version = subprocess.run([command[0], "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0].strip()
    if isinstance(platform, Board):
        emulator, instructions = f"{version} ({platform.machine}, {platform.cpu})", int(result[1]) * (1_000_000_000 // platform.clock_hz)
    else:
        emulator, instructions = f"{version} ({platform.zig_target} static)", None
    text, data, bss = sizes
    info = EmulationInfo(
        emulator=emulator, instructions=instructions, text_bytes=text, data_bytes=data, bss_bytes=bss, runtime_ram_bytes=runtime, seconds=round(seconds, 3)
    )
    return EmulatedRun(outputs, info)
