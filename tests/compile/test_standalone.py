"""edgesdk.compile.standalone: the mcu artifact's C runner (no TVM runtime, no VM, no malloc)
computes what onnxruntime computes. Compiled here for this host from the artifact's own files
(kernels, runner, the headers it carries), loaded with ctypes and run on the verification inputs."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import edgesdk
from edgesdk.compile.program import Program
from edgesdk.compile.standalone import identifier
from edgesdk.compile.workspace import kernel_workspaces
from edgesdk.frontend.model import random_inputs
from edgesdk.frontend.reference import reference_outputs
from edgesdk.plugin.toolchains import host_toolchain
from edgesdk.testing import models

pytestmark = pytest.mark.slow

CASES = {
    "cnn": (models.tiny_cnn, {"image": [1, 3, 32, 32]}),
    "mlp": (models.mlp, {"features": [1, 64]}),
    "attention": (models.transformer_block, {"tokens": [1, 16, 64]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_standalone_runner_matches_onnxruntime(tmp_path, case):
    build, shapes = CASES[case]
    artifact = edgesdk.deploy(build(), "mcu", tmp_path / "a", input_shapes=shapes)
    device = artifact.path / "device"
    stem, model = artifact.manifest.model.name, identifier(artifact.manifest.model.name)
    files = set(artifact.manifest.build.device_files)
    assert {f"device/{model}_runner.c", f"device/{model}.h", f"device/{model}.mk", f"device/{model}_runner.o", "device/include/tvm/ffi/c_api.h"} <= files
    # One arena for the tensors and the kernels' scratch: never more than the plan's arena with the
    # largest scratch on top; with the I/O buffers, what the manifest says the device code takes.
    program = Program.model_validate_json((device / "program.json").read_text())
    arena = int(next(line.split()[-1] for line in (device / f"{model}.h").read_text().splitlines() if "_ARENA_BYTES" in line))
    scratch = max(kernel_workspaces((device / f"{stem}.c").read_text()).values(), default=0)
    assert scratch <= arena <= program.arena_bytes + scratch
    io_bytes = sum(np.prod(spec.shape) * np.dtype(spec.dtype).itemsize for spec in [*artifact.inputs, *artifact.manifest.model.outputs])
    assert artifact.manifest.estimate.memory.device_ram_bytes == arena + io_bytes

    library = tmp_path / "runner.so"
    host_toolchain().link_shared(str(library), [str(device / f"{stem}.c"), str(device / f"{model}_runner.c"), f"-I{device}", f"-I{device / 'include'}", "-O1"])
    runner = ctypes.CDLL(str(library))
    inputs = random_inputs(artifact.inputs, seed=3)
    arrays = [np.ascontiguousarray(inputs[spec.name]) for spec in artifact.inputs]
    outputs = [np.zeros(spec.shape, spec.dtype) for spec in artifact.manifest.model.outputs]
    status = getattr(runner, f"{model}_run")(
        (ctypes.c_void_p * len(arrays))(*(array.ctypes.data for array in arrays)),
        (ctypes.c_void_p * len(outputs))(*(array.ctypes.data for array in outputs)),
    )
    assert status == 0
    expected = reference_outputs((artifact.path / "model.onnx").read_bytes(), inputs)
    for spec, got in zip(artifact.manifest.model.outputs, outputs, strict=True):
        reference = expected[spec.name]
        assert np.abs(got - reference).max() <= 1e-4 * max(1.0, float(np.abs(reference).max()))


def test_the_header_gives_the_scale_and_zero_point_of_integer_io(tmp_path):
    """A model that takes uint8 and returns int8: the header says how to quantize the input and
    read the output, and so does the manifest."""
    from tests.frontend.test_io_quantization import integer_io_model

    artifact = edgesdk.deploy(integer_io_model(), "mcu", tmp_path / "a")
    assert artifact.manifest.verification.passed
    header = (artifact.path / "device" / f"{identifier(artifact.manifest.model.name)}.h").read_text()
    model = identifier(artifact.manifest.model.name).upper()
    assert f"#define {model}_INPUT0_SCALE 0.05000000074505806f" in header and f"#define {model}_INPUT0_ZERO_POINT 128" in header
    assert f"#define {model}_OUTPUT0_ZERO_POINT -3" in header and "real = 0.10000000149011612 * (q - -3)" in header
    (described,) = artifact.manifest.model.inputs
    assert (described.dtype, described.zero_point) == ("uint8", 128) and described.scale == pytest.approx(0.05)
