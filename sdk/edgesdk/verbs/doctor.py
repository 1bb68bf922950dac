"""`edgesdk doctor`: what this machine offers edgesdk. The optional tools (found, their version, or
what to install), the build cache (where, how big), and where each device's cost figures come
from (calibrated here or shipped, fitted to a real device, or first-order)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys

from pydantic import BaseModel, ConfigDict, Field

from edgesdk.compile.build_cache import cache_root
from edgesdk.devices.registry import devices
from edgesdk.simulate.cost_model import figures_basis
from edgesdk.simulate.fit import device_fit
from edgesdk.versions import edgesdk_version, tvm_version


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tool(_Record):
    name: str
    purpose: str
    found: bool
    path: str | None = None
    version: str | None = Field(None, description="Its version number, as it prints it.")
    install: str | None = Field(None, description="What to install when it is missing.")


class CacheInfo(_Record):
    path: str
    files: int
    bytes: int


class DeviceFigures(_Record):
    device: str
    figures: str = Field(description="`calibrated`, `fitted` or `first-order` (docs/simulator.md).")
    source: str = Field(description="What they were calibrated or fitted on, in words.")


class DoctorReport(_Record):
    """What `edgesdk doctor --json` prints."""

    edgesdk: str
    tvm: str | None
    python: str
    platform: str
    tools: list[Tool]
    cache: CacheInfo
    devices: list[DeviceFigures]


# (command, what edgesdk uses it for, the Debian package that provides it)
OPTIONAL_TOOLS = (
    ("arm-none-eabi-gcc", "compiles the mcu's kernels into Cortex-M objects and firmware", "gcc-arm-none-eabi libnewlib-arm-none-eabi"),
    ("qemu-system-arm", "runs mcu firmware: run/verify --emulate", "qemu-system-arm"),
    ("qemu-aarch64", "runs AArch64 standalone code: run/verify --emulate", "qemu-user"),
    ("chromium", "opens the HTML reports in the browser test", "chromium"),
)


def _version(command: list[str]) -> str | None:
    """The version number ``command`` prints (the first word like 12.2.1 on its first line), or
    that line; None when it does not run."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = next((line.strip() for line in done.stdout.splitlines() if line.strip()), None)
    if done.returncode != 0 or line is None:
        return None
    return next((word for word in line.split() if re.fullmatch(r"\d+(\.\d+)+", word)), line)


def _tools() -> list[Tool]:
    zig = _version([sys.executable, "-m", "ziglang", "version"])
    tools = [
        Tool(
            name="zig cc (ziglang)", purpose="cross-links the AArch64 and x86-64 device libraries", found=zig is not None,
            path=f"{sys.executable} -m ziglang" if zig else None, version=zig, install=None if zig else "pip install ziglang",
        )
    ]  # fmt: skip
    for command, purpose, package in OPTIONAL_TOOLS:
        path = shutil.which(command)
        tools.append(
            Tool(name=command, purpose=purpose, found=path is not None, path=path, version=_version([path, "--version"]) if path else None,
                 install=None if path else f"apt-get install {package}")
        )  # fmt: skip
    return tools


def _cache() -> CacheInfo:
    root = cache_root()
    files, size = 0, 0
    for directory, _, names in os.walk(root):
        for name in names:
            try:
                size += os.stat(os.path.join(directory, name)).st_size
            except OSError:
                continue  # removed while we walked
            files += 1
    return CacheInfo(path=str(root), files=files, bytes=size)


def doctor(profiles_dir: str | os.PathLike | None = None) -> DoctorReport:
    """What this machine has for edgesdk; nothing is changed."""
    figures = []
    for profile in devices(profiles_dir):
        basis = figures_basis(profile, device_fit(profile))
        figures.append(DeviceFigures(device=profile.id, figures=basis["figures"], source=basis["figures_source"]))
    return DoctorReport(
        edgesdk=edgesdk_version(),
        tvm=tvm_version(),
        python=platform.python_version(),
        platform=platform.platform(),
        tools=_tools(),
        cache=_cache(),
        devices=figures,
    )
