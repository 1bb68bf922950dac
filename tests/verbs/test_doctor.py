import json

import edgesdk


def test_doctor_says_what_is_missing_and_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no system tool on PATH: only what pip installed
    tools = {tool.name: tool for tool in edgesdk.doctor().tools}
    assert list(tools) == ["zig cc (ziglang)", "arm-none-eabi-gcc", "qemu-system-arm", "qemu-aarch64", "chromium"]
    assert tools["zig cc (ziglang)"].found and tools["zig cc (ziglang)"].version == "0.17.1"  # the pinned ziglang
    assert not tools["chromium"].found and tools["chromium"].install == "apt-get install chromium"
    assert tools["qemu-aarch64"].install == "apt-get install qemu-user"


def test_doctor_measures_the_cache_and_names_each_devices_figures(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path))
    (tmp_path / "builds").mkdir()
    (tmp_path / "builds" / "a.so").write_bytes(b"x" * 1000)
    (tmp_path / "b.json").write_bytes(b"{}")
    report = edgesdk.doctor()
    assert (report.cache.path, report.cache.files, report.cache.bytes) == (str(tmp_path), 2, 1002)
    figures = {device.device: device.figures for device in report.devices}
    assert figures == {"phone": "fitted", "xr-headset": "fitted", "automotive": "fitted", "iot": "fitted", "pc": "calibrated", "mcu": "first-order"}
    monkeypatch.setenv("EDGESDK_NO_CALIBRATION", "1")
    assert {device.device: device.figures for device in edgesdk.doctor().devices}["pc"] == "first-order"


def test_doctor_from_the_cli(run_cli):
    code, out, err = run_cli("doctor", "--json")
    assert code == 0, err
    assert {tool["name"] for tool in json.loads(out)["tools"]} >= {"chromium", "qemu-system-arm"}
    code, out, _ = run_cli("doctor")
    assert code == 0 and "optional tools" in out and "cost figures" in out and "cache:" in out
