"""The irregular test models (edgesdk.testing.models) that the memory benchmark orders: valid,
runnable by onnxruntime, and ``shuffled`` a different but valid topological order. (The U-Net has
one order only: every stage reads the one before.)"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgesdk.testing import models


@pytest.mark.parametrize("build", [models.nas_cells, models.level_by_level_branches, models.branchy_net], ids=lambda f: f.__name__)
def test_shuffling_keeps_what_the_model_computes(build):
    models.unet_like()  # builds and passes the checker
    model = build()
    shuffled = models.shuffled(model, seed=4)
    onnx.checker.check_model(shuffled, full_check=True)  # full_check: nodes in topological order
    assert [n.name or n.output[0] for n in shuffled.graph.node] != [n.name or n.output[0] for n in model.graph.node]
    value = model.graph.input[0]
    shape = [1] + [dim.dim_value for dim in value.type.tensor_type.shape.dim[1:]]
    feed = {value.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    expected = ort.InferenceSession(model.SerializeToString()).run(None, feed)
    got = ort.InferenceSession(shuffled.SerializeToString()).run(None, feed)
    np.testing.assert_array_equal(got[0], expected[0])
