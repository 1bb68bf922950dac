"""Every built-in device x three models: a real artifact for the ISA, verified against onnxruntime."""

import json
import math
import shutil

import numpy as np
import pytest

import edgesdk
from edgesdk.frontend.model import random_inputs
from edgesdk.frontend.reference import reference_outputs
from tests.conftest import BUILTIN_DEVICES
from tests.e2e.conftest import EM_AARCH64, EM_ARM, EM_X86_64, MODELS, elf_header

pytestmark = pytest.mark.slow

SHARED_LIBRARY_ISA = {"phone": EM_AARCH64, "xr-headset": EM_AARCH64, "automotive": EM_AARCH64, "iot": EM_AARCH64, "pc": EM_X86_64}


@pytest.mark.parametrize("device", BUILTIN_DEVICES)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_model_deploys_to_device_and_matches_onnxruntime(model_name, device, tmp_path):
    build, shapes = MODELS[model_name]
    artifact = edgesdk.deploy(build(), device, tmp_path / "artifact", input_shapes=shapes)
    manifest = artifact.manifest

    check = manifest.verification
    assert check.passed and check.inputs == "random"
    for output in check.outputs:
        assert output.max_abs_err <= output.tolerance
        assert output.cosine > 0.999999
    assert manifest.device == device and manifest.model.name == model_name
    assert manifest.build.kernels > 0
    analysis = (artifact.path / "analysis.json").read_text()
    calls = len(json.loads(analysis)["kernels"])
    assert sum(manifest.partition.units.values()) == calls == len(manifest.estimate.per_layer)
    assert manifest.estimate.latency_ms > 0 and manifest.estimate.energy_mj > 0

    files = {name: artifact.path / name for name in manifest.build.device_files}
    assert "params.npz" in files  # the weights the runtime module's main takes
    del files["params.npz"]
    if device in SHARED_LIBRARY_ISA:
        (library,) = files.values()
        assert elf_header(library) == (2, 3, SHARED_LIBRARY_ISA[device])
    else:  # mcu: C kernels and their runner, the VM program, and Cortex-M objects when the toolchain is installed
        source = artifact.path / f"device/{model_name}.c"
        assert "#include <math.h>" in source.read_text() and "TVM_DLL int32_t" in source.read_text()
        objects = [path for path in files.values() if path.suffix == ".o"]
        if shutil.which("arm-none-eabi-gcc"):
            assert sorted(path.name for path in objects) == [f"{model_name}.o", f"{model_name}_runner.o"]
            assert all(elf_header(obj) == (1, 1, EM_ARM) for obj in objects)
            # arm-none-eabi-size of the two: the weights are in text (flash), the arena in bss.
            # The runner's arena (tensors and kernel scratch) is the bss, its tables a little data.
            sizes, arena = manifest.build.section_sizes, json.loads((artifact.path / "device/program.json").read_text())["arena_bytes"]
            assert sizes is not None and sizes.text_bytes >= manifest.estimate.weight_bytes and sizes.bss_bytes >= arena
            io_bytes = sum(math.prod(spec.shape) * np.dtype(spec.dtype).itemsize for spec in [*manifest.model.inputs, *manifest.model.outputs])
            assert manifest.estimate.memory.device_ram_bytes - io_bytes <= sizes.bss_bytes <= 1.1 * (manifest.estimate.memory.device_ram_bytes - io_bytes)
            assert manifest.build.undefined_symbols is not None and not any("tvm" in symbol.lower() for symbol in manifest.build.undefined_symbols)
        else:
            assert objects == [] and any("arm-none-eabi-gcc" in note for note in manifest.build.notes)

    # The simulation runs on fresh inputs too, not only the ones verified at deploy time.
    fresh = random_inputs(artifact.inputs, seed=123)
    ours = artifact.run(fresh)
    theirs = reference_outputs((artifact.path / "model.onnx").read_bytes(), fresh)
    for name, expected in theirs.items():
        np.testing.assert_allclose(ours[name], expected, rtol=0, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


def test_the_kernel_analysis_follows_the_fused_model(tmp_path):
    from edgesdk.compile.kernels import ModelAnalysis

    build, shapes = MODELS["tiny_cnn"]
    artifact = edgesdk.deploy(build(), "phone", tmp_path / "a", input_shapes=shapes)
    analysis = ModelAnalysis.model_validate_json((artifact.path / "analysis.json").read_text())
    classes = [kernel.op_class for kernel in analysis.kernels]
    assert classes.count("conv") == 2 and classes.count("depthwise_conv") == 1
    assert {"matmul", "softmax", "reduce"} <= set(classes)
    # Stride-2 3x3 conv, 3 -> 16 channels, 16x16 outputs: 2 * 16*16*16 * 27 multiply-adds, + bias/relu.
    first_conv = next(kernel for kernel in analysis.kernels if kernel.op_class == "conv")
    assert 2 * 16 * 16 * 16 * 27 <= first_conv.flops <= 2 * 16 * 16 * 16 * 27 * 1.1
    assert first_conv.inputs[0].source == "input" and first_conv.inputs[1].source == "weight"
    # Every kernel's data comes from the model's inputs, its weights, or an earlier kernel.
    for index, kernel in enumerate(analysis.kernels):
        assert all(t.producer is None or t.producer < index for t in kernel.inputs)
    assert analysis.kernels[-1].outputs[0].shape == [1, 10]


def test_simulated_latency_orders_the_devices(tmp_path):
    from edgesdk.compile.kernels import ModelAnalysis
    from edgesdk.simulate.cost_model import simulate
    from edgesdk.simulate.partition import partition

    build, shapes = MODELS["transformer_block"]
    artifact = edgesdk.deploy(build(), "pc", tmp_path / "a", input_shapes=shapes)
    analysis = ModelAnalysis.model_validate_json((artifact.path / "analysis.json").read_text())
    latency = {d.id: simulate(analysis, partition(analysis, d), d).latency_ms for d in edgesdk.devices()}
    assert max(latency, key=latency.get) == "mcu"
    # Per-layer units in the manifest are the partition's.
    placed = partition(analysis, edgesdk.get_device("pc"))
    assert [layer.unit for layer in artifact.manifest.estimate.per_layer] == placed.units
