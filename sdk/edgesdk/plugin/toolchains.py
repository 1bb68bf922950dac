"""The compilers that turn TVM's output into files for a device, as data a backend picks from.

TVM generates the code (LLVM objects, or C source for the ``c`` target); a toolchain links those
objects into a shared library or compiles the C into an object for the device's ISA. Each kind is
a pydantic model so a backend's choice is plain data: it goes into the compile-cache key and the
manifest as JSON.

- ``zig``: the ``ziglang`` PyPI package's ``zig cc`` (clang + linkers + libc stubs for many
  targets). It is a pinned Python dependency, so cross-linking an AArch64 library needs no system
  package and no root. Its first link for a target builds libc stubs into zig's cache (~20 s).
- ``gcc``: a GCC driver found on PATH (e.g. Debian's ``arm-none-eabi-gcc`` for Cortex-M).
"""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Annotated, Literal, Protocol, cast

from pydantic import BaseModel, ConfigDict, Field


class ToolchainError(RuntimeError):
    """The toolchain is missing or failed; the message carries its output."""


def _run(cmd: Sequence[str], what: str) -> None:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise ToolchainError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{output}")


class _FCompile(Protocol):
    """What TVM's ``export_library`` takes as ``fcompile``: a link callable tagged with its output format."""

    output_format: str

    def __call__(self, output: str, objects: Sequence[str], options: Sequence[str] | None = None) -> None: ...


class _Toolchain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def missing(self) -> str | None:
        """Why the toolchain cannot run here, or None when it can."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def driver(self) -> list[str]:
        raise NotImplementedError

    def link_shared(self, output: str, objects: Sequence[str]) -> None:
        _run([*self.driver(), "-shared", "-fPIC", "-o", output, *objects, "-lm"], f"linking {Path(output).name}")

    def compile_object(self, output: str, source: str, include_dirs: Sequence[str], flags: Sequence[str] = ()) -> None:
        includes = [f"-I{directory}" for directory in include_dirs]
        _run([*self.driver(), "-c", "-o", output, source, *includes, *flags], f"compiling {Path(source).name}")

    def archiver(self) -> list[str]:
        raise NotImplementedError

    def section_sizes(self, objects: Sequence[str]) -> tuple[int, int, int] | None:
        """(text, data, bss) bytes of ``objects`` together, from the toolchain's ``size``; None where it has none."""
        return None

    def archive(self, output: str, objects: Sequence[str]) -> None:
        """A static library of ``objects``."""
        _run([*self.archiver(), "rcs", output, *objects], f"archiving {Path(output).name}")

    def fcompile(self) -> _FCompile:
        """The ``fcompile`` callable TVM's ``export_library`` expects."""

        def link(output: str, objects: Sequence[str], options: Sequence[str] | None = None) -> None:
            self.link_shared(output, [*objects, *(options or [])])

        tagged = cast(_FCompile, link)  # the function itself, seen as the protocol so its attribute can be set
        tagged.output_format = "so"
        return tagged


class ZigCC(_Toolchain):
    """``zig cc`` from the ``ziglang`` PyPI package, cross-compiling for ``target`` (a zig triple)."""

    kind: Literal["zig"] = "zig"
    target: str = Field(description="zig target triple, e.g. `aarch64-linux-gnu`.")
    flags: list[str] = Field(default_factory=list)

    def missing(self) -> str | None:
        try:
            metadata.version("ziglang")
        except metadata.PackageNotFoundError:
            return "the `ziglang` Python package is not installed (pip install ziglang)"
        return None

    def describe(self) -> str:
        return f"zig cc {metadata.version('ziglang')} -target {self.target}"

    def driver(self) -> list[str]:
        return [sys.executable, "-m", "ziglang", "cc", "-target", self.target, *self.flags]

    def archiver(self) -> list[str]:
        return [sys.executable, "-m", "ziglang", "ar"]


class GCC(_Toolchain):
    """A GCC driver on PATH, such as Debian's ``arm-none-eabi-gcc``."""

    kind: Literal["gcc"] = "gcc"
    command: str = Field(description="The driver's name or path, e.g. `arm-none-eabi-gcc`.")
    flags: list[str] = Field(default_factory=list)

    def missing(self) -> str | None:
        if shutil.which(self.command) is None:
            return f"`{self.command}` is not on PATH"
        return None

    def describe(self) -> str:
        return f"{self.command} {_gcc_version(self.command)} {' '.join(self.flags)}".strip()

    def driver(self) -> list[str]:
        return [self.command, *self.flags]

    def archiver(self) -> list[str]:
        return [self.command.removesuffix("gcc") + "ar"]  # arm-none-eabi-gcc -> arm-none-eabi-ar

    def section_sizes(self, objects: Sequence[str]) -> tuple[int, int, int] | None:
        size = self.command.removesuffix("gcc") + "size"  # Berkeley format: text (code + const), data, bss
        proc = subprocess.run([size, "--totals", *objects], capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return None
        text, data, bss = (int(field) for field in proc.stdout.strip().splitlines()[-1].split()[:3])
        return text, data, bss


@functools.cache
def _gcc_version(command: str) -> str:
    proc = subprocess.run([command, "-dumpfullversion"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


Toolchain = Annotated[ZigCC | GCC, Field(discriminator="kind")]


def host_toolchain() -> ZigCC:
    """The toolchain for builds that run on this machine (simulation, the pc device)."""
    if sys.platform != "linux":
        raise ToolchainError(f"host builds are supported on Linux only, not {sys.platform}")
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    return ZigCC(target=f"{arch}-linux-gnu")
