"""Quantization of models written at any opset: converted up (or relabelled down) and checked."""

import numpy as np
import onnx
import pytest

from edgesdk.frontend.model import load_model
from edgesdk.quantization.accuracy import measure_agreement
from edgesdk.quantization.opset import SCHEME_OPSET, carried_over, newest_quantized_opset, opset_of
from edgesdk.quantization.recipe import AVAILABLE, recipe
from edgesdk.quantization.schemes import apply_scheme
from edgesdk.testing.models import opset_net

NEWEST = onnx.defs.onnx_opset_version()
SCHEMES = [scheme for scheme in AVAILABLE if scheme != "none"]


def _calibration(n: int = 16) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(0).standard_normal((n, 3, 16, 16)).astype(np.float32)}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("opset", [11, 12, 13, NEWEST])
def test_a_model_of_any_opset_quantizes_with_every_scheme(opset, scheme):
    model = load_model(opset_net(opset), {"image": [1, 3, 16, 16]})
    precision = apply_scheme(model, recipe(scheme, _calibration(), None), _calibration())
    quantized = precision.compiled.proto
    onnx.checker.check_model(quantized, full_check=True)
    if scheme in SCHEME_OPSET:
        assert SCHEME_OPSET[scheme] <= opset_of(quantized) <= newest_quantized_opset()
        assert any(node.op_type == "DequantizeLinear" for node in quantized.graph.node) or scheme == "vq"
    accuracy = measure_agreement(precision.compiled.serialized, model.serialized, precision.samples)
    assert accuracy.top1_agreement == 1.0
    assert accuracy.cosine > 0.99
    converted = [note for note in precision.compiled.notes if note.startswith("converted from ONNX opset")]
    assert bool(converted) == (scheme in SCHEME_OPSET and opset != opset_of(quantized))


def test_carrying_over_refuses_an_operator_whose_signature_changed():
    # Split's sizes (and Squeeze's axes) moved from attributes to inputs at opset 13.
    with pytest.raises(ValueError, match="Split changed between opset 11 and 13"):
        carried_over(opset_net(11), 13)
    relabelled = carried_over(opset_net(13), 14)  # Relu 14 only admits more types
    assert opset_of(relabelled) == 14
    onnx.checker.check_model(relabelled, full_check=True)


def test_carrying_down_needs_every_operator_at_the_same_version():
    newest = opset_net(NEWEST)
    lowered = carried_over(newest, newest_quantized_opset())
    assert opset_of(lowered) == newest_quantized_opset()
    with pytest.raises(ValueError, match="Clip changed between opset 11 and 13"):  # only new types, but down is exact or nothing
        carried_over(opset_net(13), 11)
