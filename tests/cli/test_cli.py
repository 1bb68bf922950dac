"""The command line as users and scripts see it: output, JSON, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgesdk.versions import tvm_version
from tests.conftest import BUILTIN_DEVICES
from tests.plugin.test_manager import PROFILE_PLUGIN


def test_version_names_edgesdk_and_tvm(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0
    assert out.strip() == f"edgesdk 0.1.0 (apache-tvm {tvm_version()})"
    assert tvm_version() == "0.27.0.post1"


def test_no_arguments_shows_help(run_cli):
    code, out, _ = run_cli()
    assert code == 0 and "devices" in out and "plugins" in out


def test_devices_json_lists_the_six_builtins(run_cli):
    code, out, err = run_cli("devices", "--json")
    assert code == 0 and err == ""
    records = json.loads(out)
    assert sorted(record["id"] for record in records) == sorted(BUILTIN_DEVICES)
    for record in records:
        assert set(record) == {"id", "name", "device_class", "compute_units", "memory_bytes", "target", "plugin"}
        assert record["compute_units"] and all(unit["name"] and unit["kind"] for unit in record["compute_units"])
        assert record["target"]["kind"] in {"llvm", "c"}
        assert record["plugin"] == record["id"]
    phone = next(record for record in records if record["id"] == "phone")
    assert [unit["kind"] for unit in phone["compute_units"]] == ["npu", "gpu", "cpu"]


def test_devices_table_for_people(run_cli):
    code, out, _ = run_cli("devices")
    assert code == 0
    for device_id in BUILTIN_DEVICES:
        assert device_id in out
    assert "npu 45T int8" in out


def test_quiet_prints_nothing_but_json_and_errors(run_cli):
    assert run_cli("--quiet", "devices") == (0, "", "")
    code, out, _ = run_cli("-q", "devices", "--json")
    assert code == 0 and len(json.loads(out)) == 6
    code, out, err = run_cli("--quiet", "profile", "missing.onnx", "--device", "pc")
    assert code == 2 and out == "" and err.startswith("error: ")
    assert "xr-headset" in run_cli("devices")[1]  # the next invocation is not quiet


def test_devices_schema_is_the_profile_json_schema(run_cli):
    code, out, _ = run_cli("devices", "--schema")
    schema = json.loads(out)
    assert code == 0 and schema["title"] == "DeviceProfile"
    assert "on_chip_memory_bytes" in schema["$defs"]["ComputeUnit"]["properties"]


def test_plugins_json_marks_builtins(run_cli):
    code, out, _ = run_cli("plugins", "--json")
    records = {record["name"]: record for record in json.loads(out)}
    assert code == 0
    for device_id in BUILTIN_DEVICES:
        assert records[device_id]["builtin"] is True
        assert records[device_id]["hooks"] == ["edgesdk_backends", "edgesdk_device_profiles"]


def test_external_plugins_one_adds_a_device_one_is_broken(run_cli, make_plugin):
    good = make_plugin(PROFILE_PLUGIN)
    broken = make_plugin("import not_a_module_anywhere\n", stem="broken")
    code, out, err = run_cli("devices", "--json")
    assert code == 0
    devices = {record["id"]: record for record in json.loads(out)}  # stdout is still valid JSON
    assert devices["toaster"]["plugin"] == good
    assert err.splitlines() == [f"warning: plugin '{broken}' skipped, failed to import: ModuleNotFoundError: No module named 'not_a_module_anywhere'"]
    code, out, _ = run_cli("plugins", "--json")
    records = {record["name"]: record for record in json.loads(out)}
    assert records[good]["builtin"] is False and records[good]["error"] is None
    assert records[broken]["error"].startswith("failed to import: ModuleNotFoundError")


def test_bad_profile_file_is_one_line_exit_2(run_cli, profile_dir):
    path = profile_dir("broken.yaml", "id: broken\nname: Broken\ncompute_units: 7\n")
    code, out, err = run_cli("devices", "--json")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"error: profile {path}: device_class: Field required; target: Field required; "
        "compute_units: Input should be a valid dictionary; memory: Field required; interconnect: Field required"
    ]
    assert "Traceback" not in err


def test_profiles_dir_option(run_cli, tmp_path):
    (tmp_path / "board.yaml").write_text("extends: iot\nname: My board\n")
    code, out, _ = run_cli("devices", "--json", "--profiles-dir", str(tmp_path))
    assert code == 0 and "board" in [record["id"] for record in json.loads(out)]


def test_debug_shows_the_traceback(run_cli, profile_dir):
    profile_dir("broken.yaml", "extends: phone\ncompute_units: 7\n")
    code, _, err = run_cli("--debug", "devices")
    assert code == 2 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: profile")


def test_usage_errors_exit_2_with_a_hint(run_cli):
    code, out, err = run_cli("deploy-everything")
    assert (code, out) == (2, "")
    assert err.splitlines() == ["error: No such command 'deploy-everything'.", "hint: see `edgesdk --help`"]
    code, _, err = run_cli("devices", "--bogus")
    assert code == 2 and err.splitlines()[0] == "error: No such option: --bogus"


def test_unknown_device_lookup_error_is_one_line(run_cli, make_plugin):
    make_plugin(
        '''
        import typer
        import edgesdk
        from edgesdk.plugin import hookimpl

        @hookimpl
        def edgesdk_register_commands(app):
            @app.command("describe")
            def describe(device: str):
                """Print a device's name."""
                typer.echo(edgesdk.get_device(device).name)
        '''
    )
    code, out, _ = run_cli("describe", "xr-headset")
    assert (code, out) == (0, "Snapdragon XR2 Gen 2-class XR headset\n")
    code, out, err = run_cli("describe", "toaster")
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == "error: unknown device 'toaster'"
    assert err.splitlines()[1].startswith("hint: known devices: ")


def test_internal_errors_are_one_line_and_exit_1(run_cli, make_plugin):
    make_plugin(
        """
        from edgesdk.plugin import hookimpl

        @hookimpl
        def edgesdk_register_commands(app):
            @app.command("crash")
            def crash():
                return 1 / 0
        """
    )
    code, _, err = run_cli("crash")
    assert code == 1
    assert err.splitlines() == [
        "error: internal error: ZeroDivisionError: division by zero",
        "hint: this is a bug in edgesdk or a plugin; rerun with --debug for the traceback",
    ]


def test_console_script_and_module_entry_points():
    result = subprocess.run([sys.executable, "-m", "edgesdk", "devices", "--json"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == len(BUILTIN_DEVICES)
    script = Path(sys.executable).parent / "edgesdk"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("edgesdk 0.1.0")
