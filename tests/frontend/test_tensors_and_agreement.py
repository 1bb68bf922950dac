import math

import numpy as np
import pytest

from edgesdk.artifact.verification import verification
from edgesdk.errors import UserInputError
from edgesdk.frontend.agreement import compare, tolerance
from edgesdk.frontend.model import TensorSpec
from edgesdk.frontend.tensors import check_inputs, load_npz, save_npz

SPECS = [TensorSpec("x", (2, 3), "float32"), TensorSpec("ids", (2,), "int64")]


def test_npz_round_trip(tmp_path):
    arrays = {"x": np.ones((2, 3), np.float32), "ids": np.arange(2)}
    save_npz(tmp_path / "a.npz", arrays)
    loaded = load_npz(tmp_path / "a.npz")
    assert list(loaded) == ["x", "ids"] and (loaded["x"] == 1).all()
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temporary file left


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "evil.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserInputError, match="holds Python objects"):
        load_npz(tmp_path / "evil.npz")


def test_npz_that_is_not_a_zip(tmp_path):
    (tmp_path / "bad.npz").write_text("hello")
    with pytest.raises(UserInputError, match="not a valid .npz file"):
        load_npz(tmp_path / "bad.npz")


def test_inputs_are_checked_by_name_shape_and_dtype():
    good = {"ids": np.array([1, 2]), "x": np.zeros((2, 3), np.float64)}
    checked = check_inputs(good, SPECS, "t")
    assert list(checked) == ["x", "ids"] and checked["x"].dtype == np.float32
    with pytest.raises(UserInputError, match=r"missing ids; unknown y"):
        check_inputs({"x": good["x"], "y": 1}, SPECS, "t")
    with pytest.raises(UserInputError, match=r"input 'x' has shape \[3, 2\], the model expects \[2, 3\]"):
        check_inputs({**good, "x": np.zeros((3, 2))}, SPECS, "t")
    with pytest.raises(UserInputError, match="input 'ids' is float64, the model expects int64"):
        check_inputs({**good, "ids": np.array([1.5, 2.0])}, SPECS, "t")


def test_float_tolerance_scales_with_the_output():
    assert tolerance(np.array([0.5], np.float32)) == pytest.approx(1e-4)
    assert tolerance(np.array([-300.0, 2.0], np.float32)) == pytest.approx(3e-2)
    assert tolerance(np.array([3], np.int64)) == 0.0


def test_compare_metrics():
    reference = np.linspace(-1, 1, 100, dtype=np.float32)
    same = compare(reference.copy(), reference)
    assert same.passed and same.max_abs_err == 0 and same.psnr_db is None and same.cosine == pytest.approx(1)
    noisy = compare(reference + np.float32(5e-5), reference)
    assert noisy.passed and noisy.max_abs_err == pytest.approx(5e-5, rel=1e-2)
    assert noisy.psnr_db == pytest.approx(20 * math.log10(1 / 5e-5), rel=1e-2)
    off = compare(reference + np.float32(2e-4), reference)
    assert not off.passed and off.tolerance == pytest.approx(1e-4)
    assert not compare(reference[:50], reference).passed


def test_verification_summarises_the_worst_output():
    a = np.ones(4, np.float32)
    result = verification({"a": a, "b": a + 1e-3}, {"a": a, "b": a}, inputs="user")
    assert result.inputs == "user" and not result.passed
    assert [check.passed for check in result.outputs] == [True, False]
    assert result.max_abs_err == pytest.approx(1e-3, rel=1e-3)
    assert result.reference.startswith("onnxruntime ")


def test_an_empty_npz_is_valid(tmp_path):
    save_npz(tmp_path / "none.npz", {})
    assert load_npz(tmp_path / "none.npz") == {}


def test_the_references_own_noise_widens_what_a_quantized_output_may_miss_by():
    reference = np.random.default_rng(0).random(10_000).astype(np.float32)
    flipped = reference.copy()
    flipped[:40] += 0.3  # 0.4% of the values: beyond the 0.1% a quantized output may miss by
    assert not compare(flipped, reference, float_rtol=5e-2, stray_share=1e-3).passed
    noisy = reference.copy()
    noisy[100:125] -= 0.3  # the reference, re-run under rounding noise, moves 25 values as far
    check = compare(flipped, reference, float_rtol=5e-2, stray_share=1e-3, noise=[reference, noisy])
    assert check.passed and (check.noise_beyond_tolerance, check.beyond_tolerance) == (25, 40)
    assert check.noise_cosine == pytest.approx(compare(noisy, reference).cosine)
    worse = reference.copy()
    worse[:60] += 0.3  # more than twice the noise
    assert not compare(worse, reference, float_rtol=5e-2, stray_share=1e-3, noise=[noisy]).passed
    # Float deploys (no stray share) take no noise into account.
    assert not compare(flipped, reference, noise=[noisy]).passed


def test_noise_perturbs_every_float32_conv_and_matmul_by_summation_sized_errors():
    from onnx import TensorProto, helper, numpy_helper

    from edgesdk.frontend.noise import NOISE_SCALE, noise_outputs, perturbable

    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [weight],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    perturbed, factors = perturbable(proto)
    assert factors == {"edgesdk_noise_0": (2, 4)} and [n.op_type for n in perturbed.graph.node] == ["MatMul", "Mul", "Relu"]
    x = np.full((2, 4), 1000.0, np.float32)
    draws = noise_outputs(proto, {"x": x})
    assert len(draws) == 3 and all(draw["y"].shape == (2, 4) for draw in draws)
    relative = np.abs(np.stack([draw["y"] for draw in draws]) / 1000.0 - 1)
    assert 0 < relative.max() < 8 * NOISE_SCALE  # moved, by a few summation errors at most
    nothing_to_perturb = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", graph.input, graph.output))
    assert noise_outputs(nothing_to_perturb, {"x": x}) == []


def test_nan_and_infinities_must_be_where_the_reference_has_them():
    reference = np.array([1.0, np.nan, np.inf, -np.inf, 2.0], np.float32)
    same = compare(reference.copy(), reference)
    assert same.passed and same.max_abs_err == 0.0 and same.tolerance == pytest.approx(2e-4)
    for wrong in ([1.0, 0.0, np.inf, -np.inf, 2.0], [1.0, np.nan, -np.inf, -np.inf, 2.0], [np.nan, np.nan, np.inf, -np.inf, 2.0]):
        found = compare(np.array(wrong, np.float32), reference)
        assert not found.passed and found.max_abs_err == np.inf and found.beyond_tolerance == 1
