"""Bad input to deploy/run/verify: one `error:` line, exit 2, nothing written. (No compile runs.)"""

import numpy as np
import onnx
import pytest

from edgesdk.testing.models import mlp


@pytest.fixture
def mlp_file(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp(), path)
    return path


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "error: {model}: input 'features' has dynamic dimensions ['N', 64]"),
        (["--input-shape", "features"], "error: --input-shape 'features': expected NAME=D1,D2,... with positive integers"),
        (["--input-shape", "feature=1,64"], "error: {model}: --input-shape names no input of the model: feature"),
        (["--input-shape", "features=1,64", "--quantize", "int8"], "error: --quantize int8 needs calibration data"),
        (["--input-shape", "features=1,64", "--quantize", "vq", "--vq-dim", "0"], "error: --vq-dim 0: weights per vector must be 1 to 16"),
        (["--input-shape", "features=1,64", "--quantize", "w4a16", "--group-size", "-4"], "error: --group-size -4: must be a positive number of weights"),
        (["--input-shape", "features=1,64", "--quantize", "int3"], "error: --quantize int3: unknown scheme"),
        (["--input-shape", "features=1,64", "--calibration", "c.npz"], "error: --calibration: nothing is quantized"),
        (["--input-shape", "features=1,64", "--quantize", "int8", "--calibration", "missing.npz"], "error: missing.npz: no such file"),
        (["--input-shape", "features=1,64", "--quantize", "fp16", "--equalize"], "error: --equalize is only used by calibrated schemes (int8, w4a8)"),
        (["--input-shape", "features=1,64", "--quantize", "auto"], "error: --quantize auto (pc's recipe: int8) needs calibration data"),
    ],
)
def test_deploy_input_errors(run_cli, mlp_file, tmp_path, extra, message):
    code, out, err = run_cli("deploy", str(mlp_file), "--device", "pc", "-o", str(tmp_path / "out"), *extra)
    assert (code, out) == (2, "")
    assert error_lines(err) == [message.format(model=mlp_file)]
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_unknown_device(run_cli, mlp_file):
    code, _, err = run_cli("deploy", str(mlp_file), "--device", "toaster")
    assert code == 2 and error_lines(err)[0].startswith("error: unknown device 'toaster'")


def test_wrong_inputs_file_is_refused_before_compiling(run_cli, mlp_file, tmp_path):
    np.savez(tmp_path / "in.npz", features=np.zeros((2, 64), np.float32))
    code, _, err = run_cli("deploy", str(mlp_file), "--device", "pc", "--input-shape", "features=1,64", "--inputs", str(tmp_path / "in.npz"))
    assert code == 2
    assert error_lines(err) == [f"error: {tmp_path / 'in.npz'}: input 'features' has shape [2, 64], the model expects [1, 64]"]


def test_run_and_verify_need_an_artifact(run_cli, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.zeros(1))
    code, _, err = run_cli("run", str(tmp_path), "--inputs", str(tmp_path / "in.npz"))
    assert code == 2 and error_lines(err) == [f"error: {tmp_path}: not an edgesdk artifact (no manifest.json)"]
    code, _, err = run_cli("verify", str(tmp_path / "absent"))
    assert code == 2 and error_lines(err) == [f"error: {tmp_path / 'absent'}: no such artifact directory"]


def test_deploy_needs_a_device(run_cli, mlp_file):
    code, _, err = run_cli("deploy", str(mlp_file))
    assert code == 2 and "Missing option '--device'" in err
