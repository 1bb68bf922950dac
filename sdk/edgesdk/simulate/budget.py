"""Whether a compiled model fits a device that has no room to spare: on a device with flash (a
microcontroller), the weights must fit the flash and the activations its RAM (``memory.dram_bytes``:
on an MCU, the on-chip SRAM). Devices with an operating system and gigabytes are not checked."""

from __future__ import annotations

from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.devices.profile import DeviceProfile
from edgesdk.simulate.cost_report import Estimate, byte_size

LARGEST_SHOWN = 3


def activation_bytes(estimate: Estimate) -> int:
    """What the activations need at once: the peak in run order (model inputs included), or what
    the device code allocates where that is more (the arena does not reuse every byte, and the
    kernels' scratch comes on top of the tensors)."""
    memory = estimate.memory
    if memory is None:
        return estimate.peak_memory_bytes - estimate.weight_bytes
    return max(memory.scheduled_peak_bytes, memory.arena_bytes or 0, memory.device_ram_bytes or 0)


def over_budget(estimate: Estimate, analysis: ModelAnalysis, profile: DeviceProfile) -> tuple[str, str] | None:
    """(message, hint) when the model does not fit ``profile``'s flash and RAM; None when it does
    or the device is not one that is checked."""
    flash = profile.memory.flash_bytes
    if flash is None:
        return None
    ram, needed = profile.memory.dram_bytes, activation_bytes(estimate)
    problems = []
    if needed > ram:
        tensors = sorted(((out.bytes, kernel.name, out.shape) for kernel in analysis.kernels for out in kernel.outputs), reverse=True)[:LARGEST_SHOWN]
        largest = ", ".join(f"{name} {shape} {byte_size(size)}" for size, name, shape in tensors)
        problems.append(f"activations need {byte_size(needed)} of {byte_size(ram)} RAM at their peak in run order (largest: {largest})")
    if estimate.weight_bytes > flash:
        problems.append(f"weights need {byte_size(estimate.weight_bytes)} of {byte_size(flash)} flash")
    if not problems:
        return None
    return (
        f"does not fit {profile.id}: " + "; ".join(problems),
        "quantize to int8 (--quantize int8: 4x smaller weights and activations), or give a smaller input (--input-shape)",
    )
