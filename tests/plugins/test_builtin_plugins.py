"""The six built-in device plugins: registered like third-party ones, with sound, cited profiles.
(The seventh built-in plugin, `templates`, has its own tests in test_templates.py.)"""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from importlib.resources import files

import pytest

import edgesdk
from tests.conftest import BUILTIN_DEVICES

EXPECTED_ISA = {
    "phone": "aarch64",
    "xr-headset": "aarch64",
    "automotive": "aarch64",
    "iot": "aarch64",
    "pc": "x86_64",
    "mcu": "thumbv7em",
}
CITED_FIGURES = ("on_chip_memory_bytes:", "dram_bytes:", "dram_bandwidth_bytes_per_s:", "flash_bytes:")


def test_builtins_are_entry_points_of_the_public_group():
    declared = {ep.name: ep.value for ep in entry_points(group="edgesdk") if ep.dist.name == "edgesdk"}
    assert sorted(declared) == sorted([*BUILTIN_DEVICES, "templates"])  # the device plugins, and `edgesdk new`'s templates
    assert all(value.startswith("edgesdk_plugins.") for value in declared.values())


@pytest.mark.parametrize("device_id", BUILTIN_DEVICES)
def test_profile_targets_parse_in_tvm_for_the_right_isa(device_id):
    from tvm.target import Target

    profile = edgesdk.get_device(device_id)
    target = Target(profile.target)
    assert target.kind.name == profile.target["kind"]
    isa = profile.target.get("mtriple", profile.target.get("march", "")).split("-")[0]
    assert isa == EXPECTED_ISA[device_id]


@pytest.mark.parametrize("device_id", BUILTIN_DEVICES)
def test_every_hardware_figure_carries_a_confidence_tag(device_id):
    text = (files("edgesdk_device_profiles") / f"{device_id}.yaml").read_text()
    figure_lines = [line for line in text.splitlines() if line.strip().startswith(CITED_FIGURES)]
    assert figure_lines
    for line in figure_lines:
        assert re.search(r"\((V|S|U)\b", line), f"{device_id}.yaml: no source/confidence on: {line.strip()}"


def test_accelerated_devices_are_ordered_npu_gpu_cpu_and_npu_is_fastest():
    for device_id in ("phone", "xr-headset", "automotive", "iot"):
        units = edgesdk.get_device(device_id).compute_units
        assert [unit.kind for unit in units.values()] == ["npu", "gpu", "cpu"]
        npu, gpu, cpu = units.values()
        assert npu.peak_ops_per_s["int8"] > gpu.peak_ops_per_s["int8"] > cpu.peak_ops_per_s["int8"]
        assert npu.energy_pj_per_op["int8"] < gpu.energy_pj_per_op["int8"] < cpu.energy_pj_per_op["int8"]
        assert cpu.op_classes == "all" and not npu.supports_op_class("sort")


def test_mcu_is_small_and_int8_native():
    mcu = edgesdk.get_device("mcu")
    (cpu,) = mcu.compute_units.values()
    assert cpu.quantization_schemes == ["int8"] and mcu.quantization.scheme == "int8"
    assert mcu.memory.dram_bytes == 2**20 and mcu.memory.flash_bytes == 2 * 2**20
    assert cpu.peak_ops_per_s["int8"] < min(
        unit.peak_ops_per_s["int8"] for device in edgesdk.devices() if device.id != "mcu" for unit in device.compute_units.values()
    )
