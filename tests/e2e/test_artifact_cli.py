"""deploy / run / verify through the real CLI entry point: artifacts, errors, cache, crash isolation."""

import json

import numpy as np
import pytest

from edgesdk.frontend.reference import reference_outputs
from tests.e2e.conftest import save

pytestmark = pytest.mark.slow


@pytest.fixture
def cnn_file(tmp_path):
    from edgesdk.testing.models import tiny_cnn

    return save(tiny_cnn(), tmp_path / "cnn.onnx")


def deploy(run_cli, model, out, *extra):
    return run_cli("deploy", str(model), "--device", "xr-headset", "--input-shape", "image=1,3,32,32", "-o", str(out), *extra)


def test_deploy_json_prints_only_the_manifest(run_cli, cnn_file, tmp_path):
    code, out, err = deploy(run_cli, cnn_file, tmp_path / "a", "--json")
    assert code == 0, err
    manifest = json.loads(out)
    assert manifest["device"] == "xr-headset" and manifest["verification"]["passed"] is True
    assert set(manifest["files"]) == {
        "model.onnx", "params.npz", "analysis.json", "device/cnn.so", "device/cnn.kernels.so", "host/cnn.so", "verification/inputs.npz", "report.html",
    }  # fmt: skip
    assert manifest["build"]["device_files"] == ["device/cnn.so", "params.npz"] and manifest["build"]["kernels_library"] == "device/cnn.kernels.so"
    assert manifest["model"]["inputs"] == [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32", "scale": None, "zero_point": None}]
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == manifest


def test_run_matches_onnxruntime_and_verify_catches_a_changed_byte(run_cli, cnn_file, tmp_path):
    assert deploy(run_cli, cnn_file, tmp_path / "a")[0] == 0
    inputs = {"image": np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **inputs)
    code, out, err = run_cli("run", str(tmp_path / "a"), "--inputs", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"), "--json")
    assert code == 0, err
    assert json.loads(out)["outputs"][0]["shape"] == [1, 10]
    ours = np.load(tmp_path / "out.npz")["probs"]
    theirs = reference_outputs((tmp_path / "a" / "model.onnx").read_bytes(), inputs)["probs"]
    assert np.abs(ours - theirs).max() <= 1e-4

    code, out, err = run_cli("verify", str(tmp_path / "a"), "--json")
    assert code == 0 and json.loads(out)["verification"]["passed"] is True

    library = tmp_path / "a" / "device" / "cnn.so"
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0x01
    library.write_bytes(bytes(data))
    code, out, err = run_cli("verify", str(tmp_path / "a"))
    assert code == 1 and out == ""
    assert err.splitlines()[0] == f"error: {tmp_path / 'a'}: file device/cnn.so was modified (sha256 differs from the manifest)"


def test_verify_reports_a_missing_and_an_unexpected_file(run_cli, cnn_file, tmp_path):
    assert deploy(run_cli, cnn_file, tmp_path / "a")[0] == 0
    (tmp_path / "a" / "extra.bin").write_bytes(b"?")
    assert "file extra.bin is not part of the artifact" in run_cli("verify", str(tmp_path / "a"))[2]
    (tmp_path / "a" / "extra.bin").unlink()
    (tmp_path / "a" / "params.npz").unlink()
    code, _, err = run_cli("verify", str(tmp_path / "a"))
    assert code == 1 and "file params.npz is missing" in err


def test_user_inputs_are_used_for_verification(run_cli, cnn_file, tmp_path):
    np.savez(tmp_path / "in.npz", image=np.full((1, 3, 32, 32), 0.5, np.float32))
    code, out, err = deploy(run_cli, cnn_file, tmp_path / "a", "--inputs", str(tmp_path / "in.npz"), "--json")
    assert code == 0, err
    assert json.loads(out)["verification"]["inputs"] == "user"
    stored = np.load(tmp_path / "a" / "verification" / "inputs.npz")["image"]
    assert (stored == 0.5).all()


def test_redeploy_replaces_an_artifact_but_never_a_user_directory(run_cli, cnn_file, tmp_path):
    assert deploy(run_cli, cnn_file, tmp_path / "a")[0] == 0
    assert deploy(run_cli, cnn_file, tmp_path / "a")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "cnn.onnx"]  # no staging dirs left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    code, _, err = deploy(run_cli, cnn_file, mine)
    assert code == 2 and "is not an edgesdk artifact; refusing" in err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_an_identical_deploy_is_served_from_the_cache(run_cli, cnn_file, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))
    cold = json.loads(deploy(run_cli, cnn_file, tmp_path / "a", "--json")[1])
    warm = json.loads(deploy(run_cli, cnn_file, tmp_path / "b", "--json")[1])
    assert cold["build"]["cached"] is False and cold["build"]["compile_seconds"] > 0
    assert warm["build"]["cached"] is True and warm["build"]["compile_seconds"] == 0
    assert warm["files"] == cold["files"]  # byte-identical artifact contents
    # The phone profile has the same TVM target as xr-headset: the builds are the same, and shared.
    code, out, _ = run_cli("deploy", str(cnn_file), "--device", "phone", "--input-shape", "image=1,3,32,32", "-o", str(tmp_path / "c"), "--json")
    phone = json.loads(out)
    assert phone["target"] == cold["target"] and phone["build"]["cached"] is True
    assert phone["build"]["cache_key"] == cold["build"]["cache_key"]
    # xr-headset's host simulation build is exactly what pc runs natively: pc is served too.
    code, out, _ = run_cli("deploy", str(cnn_file), "--device", "pc", "--input-shape", "image=1,3,32,32", "-o", str(tmp_path / "d"), "--json")
    assert code == 0 and json.loads(out)["build"]["cached"] is True


@pytest.mark.parametrize("stage", ["import", "build device", "build host", "run"])
def test_a_segfault_in_tvm_is_one_error_line(run_cli, cnn_file, tmp_path, monkeypatch, stage):
    monkeypatch.setenv("EDGESDK_TEST_CRASH", stage)
    code, out, err = deploy(run_cli, cnn_file, tmp_path / "a", "--no-cache")
    assert code == 2 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    # The verification run is isolated too; its worker knows the model by its library's name.
    assert errors == [f"error: TVM crashed (SIGSEGV) at stage '{stage}' for model 'cnn'"]
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx"]  # nothing half-written


def test_a_compile_that_hangs_is_stopped(run_cli, cnn_file, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_COMPILE_TIMEOUT", "0.2")
    code, _, err = deploy(run_cli, cnn_file, tmp_path / "a", "--no-cache")
    assert code == 2
    assert err.startswith("error: TVM timed out after 0.2 s at stage ") and "for model 'cnn'" in err


def test_a_failed_verification_exits_1_naming_the_output(run_cli, cnn_file, tmp_path, monkeypatch):
    from edgesdk.frontend import agreement

    monkeypatch.setitem(agreement.RELATIVE_TOLERANCE, "float32", 1e-12)
    code, out, err = deploy(run_cli, cnn_file, tmp_path / "a")
    assert code == 1
    assert "numerics differ from onnxruntime" in err and "on output 'probs'" in err
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["verification"]["passed"] is False  # kept for inspection, marked failed


def test_a_crash_while_running_an_artifact_is_one_error_line(run_cli, cnn_file, tmp_path, monkeypatch):
    assert deploy(run_cli, cnn_file, tmp_path / "a")[0] == 0
    monkeypatch.setenv("EDGESDK_TEST_CRASH", "run")
    code, out, err = run_cli("verify", str(tmp_path / "a"))
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == "error: TVM crashed (SIGSEGV) at stage 'run' for model 'cnn'"


def test_profile_a_model_and_an_artifact_on_other_devices(run_cli, cnn_file, tmp_path):
    code, out, err = run_cli("profile", str(cnn_file), "--device", "mcu", "--input-shape", "image=1,3,32,32", "--json")
    assert code == 0, err
    mcu = json.loads(out)
    assert mcu["device"] == "mcu" and mcu["partition"]["units"] == {"cpu": len(mcu["estimate"]["per_layer"])}
    assert deploy(run_cli, cnn_file, tmp_path / "a")[0] == 0
    code, out, _ = run_cli("profile", str(tmp_path / "a"), "--json")  # the artifact's own device
    xr = json.loads(out)
    assert xr["device"] == "xr-headset" and xr["estimate"]["latency_ms"] < mcu["estimate"]["latency_ms"]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert xr["estimate"] == manifest["estimate"] and xr["partition"] == manifest["partition"]
    code, out, _ = run_cli("profile", str(tmp_path / "a"), "--device", "phone", "--unit", "cpu", "--json")
    assert set(json.loads(out)["partition"]["units"]) == {"cpu"}
    memory = mcu["estimate"]["memory"]  # the kernels' order by memory, and its live bytes
    assert len(memory["timeline"]) == len(mcu["estimate"]["per_layer"])
    assert memory["scheduled_peak_bytes"] <= memory["default_order_peak_bytes"] <= memory["naive_bytes"]
    code, out, _ = run_cli("profile", str(tmp_path / "a"))
    assert code == 0 and "activations: peak" in out and "in the file's order" in out


def test_profile_needs_a_device_for_a_model(run_cli, cnn_file):
    code, _, err = run_cli("profile", str(cnn_file), "--input-shape", "image=1,3,32,32")
    assert code == 2 and err.startswith("error: profile: which device? give --device")


def test_profile_measure_runs_the_pc_build_beside_the_prediction(run_cli, cnn_file):
    code, out, err = run_cli("profile", str(cnn_file), "--device", "pc", "--input-shape", "image=1,3,32,32", "--measure", "--json")
    assert code == 0, err
    report = json.loads(out)
    measured, layers = report["measured"], report["estimate"]["per_layer"]
    assert [k["name"] for k in measured["per_kernel"]] == [layer["name"] for layer in layers]
    assert measured["latency_ms"] > 0 and all(k["measured_ms"] > 0 for k in measured["per_kernel"])
    # The hook's own cost is taken off: the kernels add up to the run (floors aside), not several times it.
    assert sum(k["measured_ms"] for k in measured["per_kernel"]) <= 1.2 * measured["latency_ms"]
    code, _, err = run_cli("profile", str(cnn_file), "--device", "phone", "--input-shape", "image=1,3,32,32", "--measure")
    assert code == 2 and err.startswith("error: --measure: code for 'phone' does not run on this host")


def test_the_default_directory_names_the_precision_so_nothing_is_replaced(run_cli, cnn_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli("deploy", str(cnn_file), "--device", "pc", "--input-shape", "image=1,3,32,32")[0] == 0
    float_manifest = (tmp_path / "build" / "cnn-pc" / "manifest.json").read_text()
    code, _, err = run_cli("deploy", str(cnn_file), "--device", "pc", "--input-shape", "image=1,3,32,32", "--quantize", "w8a16")
    assert code == 0, err
    assert json.loads((tmp_path / "build" / "cnn-pc-w8a16" / "manifest.json").read_text())["quantization"]["scheme"] == "w8a16"
    assert (tmp_path / "build" / "cnn-pc" / "manifest.json").read_text() == float_manifest


def test_run_refuses_a_cast_that_could_change_values_unless_asked(run_cli, cnn_file, tmp_path):
    assert deploy(run_cli, cnn_file, tmp_path / "a")[0] == 0
    values = np.random.default_rng(5).integers(-3, 3, (1, 3, 32, 32))
    np.savez(tmp_path / "ints.npz", image=values)  # int64
    code, out, err = run_cli("run", str(tmp_path / "a"), "--inputs", str(tmp_path / "ints.npz"))
    assert (code, out) == (2, "")
    assert "input 'image' is int64, the model expects float32; converting could change its values" in err and "--cast" in err
    code, out, err = run_cli("run", str(tmp_path / "a"), "--inputs", str(tmp_path / "ints.npz"), "--cast", "--json")
    assert code == 0 and "warning: inputs: input 'image' is int64, converted to the model's float32" in err
    np.savez(tmp_path / "doubles.npz", image=values.astype(np.float64))
    code, out, err = run_cli("run", str(tmp_path / "a"), "--inputs", str(tmp_path / "doubles.npz"), "--json")
    assert code == 0 and "warning: inputs: input 'image' is float64, converted to the model's float32" in err


def test_a_model_too_big_for_the_mcu_is_refused_and_nothing_is_written(run_cli, cnn_file, tmp_path):
    """mcu budgets: a float model with 8 channels at 448x448 needs 14 MiB of activations at
    once, and its 2.3 MiB input alone exceeds the mcu's 1 MiB of SRAM, patches or not: exit 1,
    one error naming the need, the limit, the largest tensors and what patches would still need,
    a hint, and no artifact. The small CNN fits."""
    from edgesdk.testing.models import large_spatial_net

    big, out = save(large_spatial_net(side=448), tmp_path / "big.onnx"), tmp_path / "a"
    code, _, err = run_cli("deploy", str(big), "--device", "mcu", "--input-shape", "image=1,3,448,448", "-o", str(out))
    lines = err.strip().splitlines()
    assert code == 1 and lines[0].startswith("error: does not fit mcu: activations need") and "of 1.00 MiB RAM" in lines[0]
    assert "largest: fused_conv2d" in lines[0] and "[1, 8, 448, 448] 6.12 MiB" in lines[0] and "int8" in lines[1]
    assert "patches it would still need about" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".a.partial-*"))
    code, _, err = run_cli("deploy", str(cnn_file), "--device", "mcu", "--input-shape", "image=1,3,32,32", "-o", str(out))
    assert code == 0, err


def test_a_model_that_fits_the_mcu_only_in_patches_deploys_with_them_and_verifies(run_cli, tmp_path):
    """MCUNetV2's case: mcu_stem_net needs ~1.2 MiB of activations at once at its 64x64x48
    layer, over the mcu's 1 MiB; its first stage runs in patches, fits, and the artifact still
    matches onnxruntime on the original model."""
    from edgesdk.testing.models import mcu_stem_net

    model, out = save(mcu_stem_net(), tmp_path / "stem.onnx"), tmp_path / "a"
    code, text, err = run_cli("deploy", str(model), "--device", "mcu", "--input-shape", "image=1,3,128,128", "-o", str(out))
    assert code == 0, err
    assert "patches" in text and "more multiply-adds" in text
    manifest = json.loads((out / "manifest.json").read_text())
    memory = manifest["estimate"]["memory"]
    patched = memory["patches"]
    assert manifest["verification"]["passed"]
    needed = max(memory["scheduled_peak_bytes"], memory["arena_bytes"], memory["device_ram_bytes"])
    assert patched["unpatched_bytes"] > 2**20 >= patched["patched_bytes"] == needed
    assert patched["grid"][0] >= 2 and 0 < patched["recompute_macs"] < 0.2 * patched["stage_macs"]
    # The patches are in the code: the stage's first convolution runs once per patch.
    analysis = json.loads((out / "analysis.json").read_text())
    stems = [kernel for kernel in analysis["kernels"] if kernel["inputs"] and kernel["inputs"][0]["source"] == "input"]
    assert len(stems) >= patched["grid"][0] * patched["grid"][1]
