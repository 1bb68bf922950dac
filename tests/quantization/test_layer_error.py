import numpy as np
import pytest

from edgesdk.frontend.model import load_model
from edgesdk.quantization.layer_error import layer_errors
from edgesdk.quantization.recipe import recipe
from edgesdk.quantization.schemes import apply_scheme
from edgesdk.testing.models import tiny_cnn, transformer_block


def _precision(proto, shapes, scheme, samples=16):
    model = load_model(proto, shapes)
    calibration = {spec.name: np.random.default_rng(0).standard_normal((samples, *spec.shape[1:])).astype(np.float32) for spec in model.inputs}
    return apply_scheme(model, recipe(scheme, calibration, None), calibration)


@pytest.fixture(scope="module")
def tiny():
    return {scheme: _precision(tiny_cnn(), {"image": [1, 3, 32, 32]}, scheme) for scheme in ("int8", "w4a16", "w8a16")}


def test_sizes_follow_the_stored_bits_and_errors_the_precision(tiny):
    found = {scheme: layer_errors(p.compiled.proto, p.original.proto, p.samples) for scheme, p in tiny.items()}
    int8, w4, w8 = found["int8"], found["w4a16"], found["w8a16"]
    assert [layer.node for layer in int8] == [layer.node for layer in w4] and len(int8) == 4  # tiny_cnn: 3 convs and a Gemm
    assert [layer.op_type for layer in int8] == ["Conv", "Conv", "Conv", "Gemm"]
    assert [layer.weights for layer in int8] == [432, 144, 256, 160] == [layer.weights for layer in w4]
    for a, b, c in zip(int8, w4, w8, strict=True):
        # the weights as stored, plus scales and bias: above the nominal bits, below float
        assert 4 < b.bits_per_weight < c.bits_per_weight < 32 and 8 < a.bits_per_weight < 32
        assert a.stored_bytes == pytest.approx(a.bits_per_weight * a.weights / 8, abs=1)
        # 4-bit weights lose more than 8-bit ones, layer by layer
        assert b.sqnr_db < c.sqnr_db and 0.9 < b.cosine < c.cosine <= 1
    assert all(10 < layer.sqnr_db < 80 for layer in int8)


def test_without_samples_only_sizes_and_a_float_model_has_no_error(tiny):
    precision = tiny["int8"]
    sizes_only = layer_errors(precision.compiled.proto, precision.original.proto, [])
    assert all(layer.sqnr_db is None and layer.cosine is None and layer.stored_bytes > 0 for layer in sizes_only)
    same = layer_errors(precision.original.proto, precision.original.proto, precision.samples)
    assert all(layer.sqnr_db is None and layer.cosine == pytest.approx(1) and layer.bits_per_weight > 32 for layer in same)  # float32 + bias


def test_attention_products_have_no_weight_and_a_w4a8_transformer_is_measured():
    # w4a8 on a transformer: onnxruntime's full graph optimizations reject the model (QDQ propagation
    # inserts a QuantizeLinear whose types disagree); the reference runner's basic level runs it.
    precision = _precision(transformer_block(), {"tokens": [1, 16, 64]}, "w4a8")
    layers = layer_errors(precision.compiled.proto, precision.original.proto, precision.samples)
    assert layers and all(layer.weights > 0 for layer in layers)  # Q x K^T and attention x V are not listed
    assert all(layer.sqnr_db is not None and layer.sqnr_db > 5 for layer in layers)
