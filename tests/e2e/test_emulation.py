"""The mcu artifact's own code on its own instruction set: kernels + standalone runner linked as
Cortex-M7 firmware and run under qemu-system-arm (mps2-an500), compared with onnxruntime."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

import edgesdk
from edgesdk.testing import models
from tests.compile.test_standalone import CASES  # a CNN, an MLP and an attention block
from tests.e2e.conftest import save

pytestmark = [pytest.mark.slow, pytest.mark.emulator]


@pytest.mark.parametrize("case", list(CASES))
def test_mcu_firmware_under_qemu_matches_onnxruntime(tmp_path, case):
    build, shapes = CASES[case]
    artifact = edgesdk.deploy(build(), "mcu", tmp_path / "a", input_shapes=shapes)
    result = artifact.verify(emulate=True)
    assert result.passed and result.emulation is not None
    emulation = result.emulation
    assert "mps2-an500" in emulation.emulator and emulation.instructions > 1000
    # Beside the simulator's cycles at the profile's 480 MHz (the code executes more instructions
    # than the simulated CMSIS-NN-class kernels take cycles: docs/firmware.md).
    assert emulation.simulated_cycles == artifact.manifest.estimate.cycles == round(artifact.manifest.estimate.latency_ms * 480e3)
    # The firmware holds the weights in flash. Its RAM is what the plan says (one arena for the
    # tensors and the kernels' scratch, and the I/O buffers) plus the C library and the harness.
    assert emulation.text_bytes >= artifact.manifest.estimate.weight_bytes
    assert_ram_as_planned(artifact, emulation)
    # Kernels + runner need nothing of TVM: only functions of the board's C library and libm.
    assert set(artifact.manifest.build.undefined_symbols) <= newlib_symbols()


def assert_ram_as_planned(artifact, emulation) -> None:
    planned = artifact.manifest.estimate.memory.device_ram_bytes + emulation.runtime_ram_bytes
    assert 0 < emulation.runtime_ram_bytes < 16 * 1024  # newlib's state and the harness: a few KiB whatever the model
    assert abs(emulation.data_bytes + emulation.bss_bytes - planned) <= 0.1 * planned


def newlib_symbols() -> set[str]:
    """What the Cortex-M7 hard-float newlib's libc.a and libm.a define."""
    flags = ["-mcpu=cortex-m7", "-mfloat-abi=hard", "-mfpu=fpv5-d16"]
    defined: set[str] = set()
    for library in ("libc.a", "libm.a"):
        path = subprocess.run(["arm-none-eabi-gcc", *flags, f"-print-file-name={library}"], capture_output=True, text=True, check=True).stdout.strip()
        listing = subprocess.run(["arm-none-eabi-nm", "--defined-only", "-g", path], capture_output=True, text=True, check=False).stdout
        defined |= {line.split()[-1] for line in listing.splitlines() if len(line.split()) == 3}
    return defined


@pytest.mark.parametrize("case", list(CASES))
def test_int8_firmware_matches_the_quantized_model(tmp_path, case):
    """int8 (QDQ) on the mcu: the integer kernels and lookup tables run as firmware; the outputs
    match onnxruntime on the quantized model."""
    build, shapes = CASES[case]
    rng = np.random.default_rng(0)
    calibration = {name: rng.standard_normal((16, *dims[1:])).astype(np.float32) for name, dims in shapes.items()}
    artifact = edgesdk.deploy(build(), "mcu", tmp_path / "a", input_shapes=shapes, quantize="int8", calibration=calibration)
    result = artifact.verify(emulate=True)
    assert result.passed and result.emulation is not None
    assert_ram_as_planned(artifact, result.emulation)


def test_run_and_verify_emulate_on_the_command_line(run_cli, tmp_path):
    model = save(models.tiny_cnn(), tmp_path / "cnn.onnx")
    assert run_cli("deploy", str(model), "--device", "mcu", "--input-shape", "image=1,3,32,32", "-o", str(tmp_path / "a"))[0] == 0
    values = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "in.npz", image=values)
    code, out, err = run_cli("run", str(tmp_path / "a"), "--inputs", str(tmp_path / "in.npz"), "--emulate", "-o", str(tmp_path / "out.npz"), "--json")
    assert code == 0, err
    emulated = np.load(tmp_path / "out.npz", allow_pickle=False)["probs"]
    assert json.loads(out)["emulation"]["instructions"] > 0
    host = edgesdk.load_artifact(tmp_path / "a").run({"image": values})["probs"]
    np.testing.assert_allclose(emulated, host, rtol=1e-5, atol=1e-6)
    code, out, err = run_cli("verify", str(tmp_path / "a"), "--emulate")
    assert code == 0 and "passed" in out and "instructions" in out


def test_emulate_errors_are_one_line(run_cli, tmp_path, monkeypatch):
    """A device with no emulated board, and a machine without QEMU: exit 2, one line."""
    cnn_file = save(models.tiny_cnn(), tmp_path / "cnn.onnx")
    assert run_cli("deploy", str(cnn_file), "--device", "pc", "--input-shape", "image=1,3,32,32", "-o", str(tmp_path / "pc"))[0] == 0
    np.savez(tmp_path / "in.npz", image=np.zeros((1, 3, 32, 32), np.float32))
    code, _, err = run_cli("verify", str(tmp_path / "pc"), "--emulate")
    assert code == 2 and err.startswith("error: --emulate: no emulator for a x86_64 target") and len(err.strip().splitlines()) <= 2
    assert run_cli("deploy", str(cnn_file), "--device", "mcu", "--input-shape", "image=1,3,32,32", "-o", str(tmp_path / "mcu"))[0] == 0
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-system-arm on it
    code, _, err = run_cli("run", str(tmp_path / "mcu"), "--inputs", str(tmp_path / "in.npz"), "--emulate")
    assert code == 2 and "qemu-system-arm not found: install the Debian package qemu-system-arm" in err


@pytest.mark.parametrize("case", list(CASES))
def test_phone_standalone_library_under_qemu_aarch64_matches_onnxruntime(run_cli, tmp_path, case):
    """`deploy --standalone` to the phone: lib<model>.a (TVM's AArch64 kernels + the runner) and
    its header, linked into a static program that runs under qemu-aarch64 and matches
    onnxruntime; the runtime library build is still there."""
    build, shapes = CASES[case]
    model = save(build(), tmp_path / "m.onnx")
    shape_options = [option for name, dims in shapes.items() for option in ("--input-shape", f"{name}={','.join(map(str, dims))}")]
    code, _, err = run_cli("deploy", str(model), "--device", "phone", *shape_options, "--standalone", "-o", str(tmp_path / "a"))
    assert code == 0, err
    artifact = edgesdk.load_artifact(tmp_path / "a")
    stem = artifact.manifest.model.name
    files = set(artifact.manifest.build.device_files)
    assert {f"device/{stem}.so", "params.npz", f"device/lib{stem}.a", f"device/{stem}.h", "device/include/tvm/ffi/c_api.h"} <= files
    # Plain C library and libm functions, no symbol versions, nothing of TVM (the link below finds
    # them all in musl's static libc).
    undefined = artifact.manifest.build.undefined_symbols
    assert undefined is not None and not [symbol for symbol in undefined if "@" in symbol or symbol.lower().startswith(("tvm", "__tvm", "dl"))]
    result = artifact.verify(emulate=True)
    assert result.passed and result.emulation is not None and "qemu-aarch64" in result.emulation.emulator
