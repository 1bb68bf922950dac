"""Scheme checks and calibration data handling (no TVM)."""

import numpy as np
import pytest

from edgesdk.errors import UserInputError
from edgesdk.frontend.model import TensorSpec
from edgesdk.quantization.ptq import _mse_range, calibration_samples
from edgesdk.quantization.recipe import Recipe, recipe


@pytest.mark.parametrize(
    ("scheme", "calibration", "options", "message"),
    [
        ("int8", None, {}, "--quantize int8 needs calibration data"),
        (None, "c.npz", {}, "--calibration: nothing is quantized"),
        ("w4a16", None, {"equalize": True}, "--equalize is only used by calibrated schemes (int8, w4a8)"),
        ("int8", "c.npz", {"group_size": 32}, "--group-size is only used by group-wise schemes (w8a16, w4a16, w4a8)"),
        ("w4a16", None, {"group_size": 0}, "--group-size 0: must be a positive number of weights"),
        ("vq", None, {"vq_bits": 3}, "--vq-bits 3: indices are 4 or 8 bits"),
        ("w4a16", None, {"vq_dim": 4}, "--vq-dim and --vq-bits are only used by --quantize vq"),
        ("int3", None, {}, "--quantize int3: unknown scheme"),
        ("w4a16", None, {"range_method": "mse"}, "--range-method is only used by calibrated schemes (int8, w4a8)"),
    ],
)
def test_scheme_errors(scheme, calibration, options, message):
    with pytest.raises(UserInputError) as error:
        recipe(scheme, calibration, None, **options)
    assert str(error.value).startswith(message)


def test_each_option_goes_to_the_schemes_that_use_it():
    from edgesdk.quantization.recipe import options_for

    options = {"range_method": "mse", "group_size": 64, "bias_correction": True, "vq_bits": 4, "adaround_seconds": 5.0}
    assert options_for("none", options) == {}
    assert options_for("int8", options) == {"range_method": "mse", "bias_correction": True, "adaround_seconds": 5.0}
    assert options_for("w4a16", options) == {"group_size": 64, "bias_correction": True, "adaround_seconds": 5.0}
    assert options_for("vq", options) == {"bias_correction": True, "vq_bits": 4}
    assert recipe("w4a8", "c.npz", None, **options_for("w4a8", options)).options() == {**options_for("w4a8", options)}


def test_recipes_fill_in_their_defaults():
    assert recipe(None, None, None) == Recipe("none")
    assert recipe("fp16", "c.npz", None) == Recipe("fp16")  # calibration data: only to report accuracy
    assert recipe("int8", "c.npz", None) == Recipe("int8", range_method="percentile")
    assert recipe("w4a16", None, None) == Recipe("w4a16", group_size=32)
    assert recipe("w4a16", None, None, group_size=128) == Recipe("w4a16", group_size=128)
    assert recipe("w8a16", None, None) == Recipe("w8a16", group_size=None)  # per output channel


SPECS = [TensorSpec("image", (1, 3, 8, 8), "float32"), TensorSpec("scale", (1,), "float32")]


def test_calibration_samples_split_stacked_arrays_and_accept_one_sample():
    rng = np.random.default_rng(0)
    stacked = {"image": rng.standard_normal((5, 3, 8, 8)), "scale": rng.standard_normal((5, 1))}
    samples = calibration_samples(stacked, SPECS, "cal.npz")
    assert len(samples) == 5 and samples[2]["image"].shape == (1, 3, 8, 8) and samples[2]["image"].dtype == np.float32
    np.testing.assert_array_equal(samples[4]["image"][0], stacked["image"][4].astype(np.float32))
    with_batch_axis = {"image": rng.standard_normal((4, 1, 3, 8, 8)), "scale": rng.standard_normal((4, 1))}
    assert len(calibration_samples(with_batch_axis, SPECS, "cal.npz")) == 4
    single = {"image": rng.standard_normal((1, 3, 8, 8)), "scale": np.ones(1)}
    assert len(calibration_samples(single, SPECS, "cal.npz")) == 1


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"image": np.zeros((5, 3, 9, 9)), "scale": np.zeros((5, 1))},
            "cal.npz: input 'image' has shape [5, 3, 9, 9]; calibration wants N samples of [1, 3, 8, 8]",
        ),
        ({"image": np.zeros((5, 3, 8, 8)), "scale": np.zeros((4, 1))}, "cal.npz: inputs hold different numbers of samples: [4, 5]"),
        ({"image": np.zeros((5, 3, 8, 8))}, "cal.npz: inputs do not match the model (missing scale)"),
    ],
)
def test_bad_calibration_data_is_a_clear_error(arrays, message):
    with pytest.raises(UserInputError) as error:
        calibration_samples(arrays, SPECS, "cal.npz")
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("distribution", ["normal", "laplace", "uniform", "relu"])
def test_mse_range_never_quantizes_worse_than_minmax(distribution):
    rng = np.random.default_rng(1)
    values = {
        "normal": rng.standard_normal(50_000),
        "laplace": rng.laplace(size=50_000),
        "uniform": rng.uniform(-1, 3, 50_000),
        "relu": np.maximum(rng.standard_normal(50_000), 0),
    }[distribution]

    def error(low, high):
        low, high = min(low, 0.0), max(high, 0.0)
        scale = (high - low) / 255
        zero = np.round(-128 - low / scale)
        return np.mean(((np.clip(np.round(values / scale) + zero, -128, 127) - zero) * scale - values) ** 2)

    low, high = _mse_range(values)
    assert min(values.min(), 0) <= low <= 0 <= high <= values.max()
    assert error(low, high) <= error(values.min(), values.max())


def test_auto_takes_the_device_recipe_and_an_explicit_range_method_wins():
    import edgesdk

    phone = edgesdk.get_device("phone")
    assert (phone.quantization.scheme, phone.quantization.range_method) == ("int8", "percentile")
    assert recipe("auto", "c.npz", phone) == Recipe("int8", range_method="percentile")
    assert recipe("auto", "c.npz", phone, range_method="mse") == Recipe("int8", range_method="mse")
    with pytest.raises(UserInputError) as error:
        recipe("auto", None, phone)
    assert str(error.value).startswith("--quantize auto (phone's recipe: int8) needs calibration data")


def test_a_misspelt_quantization_option_is_a_clear_error():
    import edgesdk

    with pytest.raises(UserInputError) as error:
        edgesdk.compare("model.onnx", "phone", quantize="w4a16", group_sise=32)
    assert str(error.value) == "compare: unknown option(s) group_sise"
