"""Finding profiles: built-ins, user directories, `extends`, overrides and the errors users see."""

from __future__ import annotations

from importlib.resources import files

import pytest

import edgesdk
from edgesdk import ProfileError, UnknownDeviceError
from tests.conftest import BUILTIN_DEVICES


def test_builtin_devices_come_from_their_plugins():
    profiles = {profile.id: profile for profile in edgesdk.devices()}
    assert sorted(profiles) == sorted(BUILTIN_DEVICES)
    for device_id, profile in profiles.items():
        assert profile.source.plugin == device_id
        assert profile.source.path.name == f"{device_id}.yaml"


def test_user_profile_extends_a_builtin_and_overrides_fields(profile_dir):
    profile_dir(
        "slow-phone.yaml",
        """
        extends: phone
        name: Throttled phone
        compute_units:
          npu:
            peak_ops_per_s: {int8: 10_000_000_000_000}
        """,
    )
    phone = edgesdk.get_device("phone")
    slow = edgesdk.get_device("slow-phone")
    assert slow.id == "slow-phone"  # from the file name
    assert slow.name == "Throttled phone"
    assert slow.compute_units["npu"].peak_ops_per_s["int8"] == 10e12
    # Mappings merge key by key: the rest of the NPU and the other units are the parent's.
    assert slow.compute_units["npu"].peak_ops_per_s["int16"] == phone.compute_units["npu"].peak_ops_per_s["int16"]
    assert slow.compute_units["gpu"] == phone.compute_units["gpu"]
    assert slow.source.plugin == "user"


def test_top_level_on_chip_memory_overrides_every_unit(profile_dir):
    profile_dir("phone-1mb.yaml", "extends: phone\non_chip_memory_bytes: 1048576\n")
    units = edgesdk.get_device("phone-1mb").compute_units
    assert {unit.on_chip_memory_bytes for unit in units.values()} == {1048576}
    assert edgesdk.get_device("phone").compute_units["npu"].on_chip_memory_bytes == 8 * 2**20


def test_null_removes_a_compute_unit(profile_dir):
    profile_dir("phone-no-npu.yaml", "extends: phone\ncompute_units: {npu: null}\nquantization: {scheme: fp16}\n")
    assert list(edgesdk.get_device("phone-no-npu").compute_units) == ["gpu", "cpu"]


def test_extends_chains_across_user_files(profile_dir):
    profile_dir("a.yaml", "extends: b\nname: A\n")
    profile_dir("b.yml", "extends: iot\nname: B\nmemory: {dram_bytes: 1073741824}\n")
    a = edgesdk.get_device("a")
    assert (a.name, a.memory.dram_bytes, a.device_class) == ("A", 2**30, "iot")


def test_wrong_type_names_file_and_field(profile_dir):
    path = profile_dir("broken.yaml", "extends: phone\ncompute_units: 7\n")
    with pytest.raises(ProfileError) as caught:
        edgesdk.devices()
    assert str(caught.value) == f"profile {path}: compute_units: Input should be a valid dictionary"


def test_invalid_yaml_says_where(profile_dir):
    path = profile_dir("bad.yaml", "id: x\ncompute_units: [unclosed\n")
    with pytest.raises(ProfileError, match=rf"profile {path}: invalid YAML at line 3"):
        edgesdk.devices()


def test_a_yaml_list_is_not_a_profile(profile_dir):
    profile_dir("list.yaml", "- phone\n")
    with pytest.raises(ProfileError, match="expected a mapping of fields, got list"):
        edgesdk.devices()


def test_duplicate_id_names_both_sources(profile_dir):
    path = profile_dir("mine.yaml", "id: phone\nextends: iot\n")
    builtin = files("edgesdk_device_profiles") / "phone.yaml"
    with pytest.raises(ProfileError) as caught:
        edgesdk.devices()
    assert str(caught.value) == f"device id 'phone' is defined twice, by {builtin} and {path}"


def test_unknown_parent_lists_known_devices(profile_dir):
    profile_dir("orphan.yaml", "extends: toaster\n")
    with pytest.raises(ProfileError) as caught:
        edgesdk.devices()
    assert "extends: unknown device 'toaster'" in str(caught.value)
    assert "phone" in caught.value.hint


def test_extends_cycle_is_reported(profile_dir):
    profile_dir("a.yaml", "extends: b\n")
    profile_dir("b.yaml", "extends: a\n")
    with pytest.raises(ProfileError, match="makes a cycle: a -> b -> a"):
        edgesdk.devices()


def test_on_chip_override_must_be_a_count(profile_dir):
    profile_dir("odd.yaml", "extends: mcu\non_chip_memory_bytes: lots\n")
    with pytest.raises(ProfileError, match="on_chip_memory_bytes: must be a whole number >= 0"):
        edgesdk.devices()


def test_profiles_dir_argument_and_missing_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_PROFILE_PATH", str(tmp_path / "absent"))  # skipped, like PATH
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "board.yaml").write_text("extends: mcu\nname: Board\n")
    assert edgesdk.get_device("board", profiles_dir=tmp_path / "extra").name == "Board"
    with pytest.raises(ProfileError, match="no such directory"):
        edgesdk.devices(profiles_dir=tmp_path / "nowhere")


def test_unknown_device_hints_at_the_known_ones():
    with pytest.raises(UnknownDeviceError) as caught:
        edgesdk.get_device("toaster")
    assert caught.value.exit_code == 2
    assert "xr-headset" in caught.value.hint


def test_backend_defaults_to_the_id_and_is_inherited_through_extends(profile_dir):
    from edgesdk.verbs.deploy import find_backend

    profile_dir("board.yaml", "extends: iot\nname: My board\n")
    profile_dir("orphan.yaml", "extends: iot\nname: Orphan\nbackend: vendor-npu\n")
    assert edgesdk.get_device("iot").backend_name == "iot"
    board = edgesdk.get_device("board")
    assert board.backend_name == "iot" and find_backend(board).name == "iot"
    with pytest.raises(edgesdk.UserInputError, match="device 'orphan': no installed plugin provides its backend 'vendor-npu'"):
        find_backend(edgesdk.get_device("orphan"))
