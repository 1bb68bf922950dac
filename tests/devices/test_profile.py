"""The device-profile schema: what it accepts, what it rejects and how it says why."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from edgesdk import DeviceProfile
from edgesdk.errors import describe_validation_error

MINIMAL = {
    "id": "tiny",
    "name": "Tiny board",
    "device_class": "iot",
    "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"},
    "compute_units": {
        "cpu": {
            "kind": "cpu",
            "peak_ops_per_s": {"float32": 1.0e9, "int8": 4.0e9},
            "launch_overhead_s": 1e-6,
            "op_classes": "all",
            "dtypes": ["float32", "int8"],
            "on_chip_memory_bytes": 262144,
            "energy_pj_per_op": {"float32": 20.0, "int8": 5.0},
            "quantization_schemes": ["int8"],
        }
    },
    "memory": {"dram_bytes": 2**30, "dram_bandwidth_bytes_per_s": 8e9, "dram_energy_pj_per_byte": 40.0},
    "interconnect": {"bandwidth_bytes_per_s": 8e9, "latency_s": 0.0},
    "quantization": {"scheme": "int8"},
}


def with_change(path: str, value):
    data = copy.deepcopy(MINIMAL)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


def error_text(data) -> str:
    with pytest.raises(ValidationError) as caught:
        DeviceProfile.model_validate(data)
    return describe_validation_error(caught.value)


def test_minimal_profile_validates_with_defaults():
    profile = DeviceProfile.model_validate(MINIMAL)
    unit = profile.compute_units["cpu"]
    assert unit.efficiency == {"default": 0.5}
    assert unit.supports_op_class("sort")
    assert profile.memory.flash_bytes is None
    assert profile.quantization.range_method == "minmax"


def test_unknown_field_is_rejected_and_named():
    assert error_text(with_change("compute_units.cpu.peak_tops", 5)) == ("compute_units.cpu.peak_tops: Extra inputs are not permitted")


def test_wrong_type_names_the_field():
    assert error_text(with_change("compute_units", 7)).startswith("compute_units: Input should be a valid dictionary")


def test_every_dtype_needs_a_peak_and_an_energy():
    text = error_text(with_change("compute_units.cpu.dtypes", ["float32", "int8", "float16"]))
    assert "peak_ops_per_s has no entry for dtypes ['float16']" in text


def test_efficiency_needs_a_default_and_stays_a_fraction():
    assert "needs a `default` entry" in error_text(with_change("compute_units.cpu.efficiency", {"conv": 0.5}))
    assert "less than or equal to 1" in error_text(with_change("compute_units.cpu.efficiency", {"default": 1.5}))


def test_recipe_must_be_native_to_some_unit():
    text = error_text(with_change("quantization.scheme", "w4a16"))
    assert "'w4a16' is not native to any compute unit" in text


def test_target_needs_a_kind():
    assert "needs a string `kind`" in error_text(with_change("target", {"mtriple": "aarch64-linux-gnu"}))


def test_ids_are_command_line_friendly():
    assert "id: String should match pattern" in error_text(with_change("id", "My Phone"))


def test_json_schema_documents_every_field():
    schema = DeviceProfile.model_json_schema()
    unit = schema["$defs"]["ComputeUnit"]
    assert unit["additionalProperties"] is False
    assert all("description" in field for field in unit["properties"].values())
    assert set(schema["required"]) >= {"id", "compute_units", "memory", "target"}
