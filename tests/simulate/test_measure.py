import numpy as np

import edgesdk
from edgesdk.compile.kernels import ModelAnalysis
from edgesdk.frontend.model import random_inputs
from edgesdk.simulate.measure import measure
from edgesdk.testing import models


class RecordingVM:
    """The runner's VM, with every instrument it is given recorded."""

    def __init__(self, vm):
        self.vm, self.instruments = vm, []

    def set_instrument(self, instrument):
        self.instruments.append(instrument)
        self.vm.set_instrument(instrument)

    def __getattr__(self, name):
        return getattr(self.vm, name)

    def __getitem__(self, name):
        return self.vm[name]


def test_measuring_leaves_no_hook_on_the_model_and_the_kernels_add_up(tmp_path):
    artifact = edgesdk.deploy(models.tiny_cnn(), "pc", tmp_path / "a", input_shapes={"image": [1, 3, 32, 32]})
    analysis = ModelAnalysis.model_validate_json((artifact.path / "analysis.json").read_text())
    inputs = random_inputs(artifact.inputs, seed=0)
    expected = artifact.run(inputs)
    recording = RecordingVM(artifact.runner.vm)
    artifact.runner._vm = recording  # loaded by the first run
    measured = measure(artifact.runner, inputs, analysis, repeat=3)
    # A do-nothing Python hook left attached would cost every later call microseconds per kernel.
    assert len(recording.instruments) == 2 and recording.instruments[-1] is None
    assert [k.name for k in measured.per_kernel] == [k.name for k in analysis.kernels]
    assert all(k.measured_ms > 0 for k in measured.per_kernel) and measured.latency_ms > 0
    for name, value in artifact.run(inputs).items():
        np.testing.assert_array_equal(value, expected[name])
