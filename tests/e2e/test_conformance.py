"""A representative sample of the ONNX backend node suite, deployed to pc and run from the
artifact (edgesdk.testing.conformance; benchmarks/conformance.py runs all of it): one or two
cases per family of causes fixed (recurrent layers unrolled, integer operators, function bodies,
shape inputs bound, multi-output layer norm, zero-sized dims, old opsets), cases TVM cannot lower
or gets wrong running on onnxruntime from the compiled code, and cases that cannot be deployed
failing cleanly."""

from __future__ import annotations

import pytest

from edgesdk.testing.conformance import node_cases, run_cases

pytestmark = pytest.mark.slow

PASSING = [
    "test_abs",
    "test_conv_with_strides_padding",
    "test_matmul_2d",
    "test_softmax_axis_1",
    "test_reshape_extended_dims",  # the shape is a model input: fixed from the given inputs
    "test_slice",
    "test_top_k",
    "test_lstm_with_peepholes",  # sequence_lens as an input: masked steps
    "test_gru_with_initial_bias",
    "test_rnn_seq_length",
    "test_qlinearmatmul_3D_int8_float32",
    "test_matmulinteger",
    "test_celu",  # a function body, expanded
    "test_rotary_embedding_interleaved",
    "test_layer_normalization_2d_axis0",  # Mean and InvStdDev outputs too
    "test_attention_3d_transpose_verification",  # opset-23 Attention expanded, its Expand shapes folded
    "test_cumprod_2d_axis_1",
    "test_elu",
    "test_l2normalization_axis_1",
    "test_reversesequence_time",
    "test_reduce_sum_empty_set",  # a zero-sized dim
    "test_scan9_sum",  # Scan unrolled
    "test_isinf_negative",  # IsInf's detect_positive honoured
    "test_onehot_with_axis",  # OneHot's values a tensor
    "test_resize_upsample_sizes_nearest_axes_2_3",  # Resize's axes made full-rank
    "test_split_zero_size_splits_opset18",  # pieces of size zero
    "test_reshape_allowzero_reordered",  # an empty constant, allocated at run time
    "test_not_2d",  # opset 1, converted to opset 7
    "test_unique_sorted_with_axis",  # output shapes that depend on the values, measured on the given inputs
    "test_attention_causal_boolmask_nan_robustness",  # a fully masked row: ReduceMax keeps its -inf
    "test_attention_local_window_ext_cache_float16_mask_expanded",  # a CastLike's type input is not a shape input
]

# TVM cannot lower these nodes: on pc they run on onnxruntime, called from the compiled code.
ON_ONNXRUNTIME = [
    "test_det_2d",  # no converter
    "test_resize_downsample_scales_linear_antialias",  # TVM's converter ignores antialias
    "test_nonmaxsuppression_single_box",  # its output's size depends on the values
    "test_range_int32_type_negative_delta_expanded",  # a Loop: shape inference does not give its output shape
    "test_ai_onnx_ml_binarizer",  # ONNX-ML: TVM lowers none of it
    "test_mod_float_edge_cases_fmod_0_float32",  # TVM's numbers differ (infinite divisors): located, moved
    "test_bitshift_left_int32_shift_ge_width",  # the same (a shift by the type's width)
]

CLEAN_FAILURES = ["test_affine_grid_2d_expanded"]  # an Unsqueeze of a rank TVM knows only at run time


@pytest.fixture(scope="module")
def results():
    cases = node_cases([*PASSING, *ON_ONNXRUNTIME, *CLEAN_FAILURES])
    assert len(cases) == len(PASSING) + len(ON_ONNXRUNTIME) + len(CLEAN_FAILURES)
    return {result.name: result for result in run_cases(cases, "pc", workers=2, batch=8)}


@pytest.mark.parametrize("name", PASSING)
def test_node_case_passes_through_tvm(results, name):
    result = results[name]
    assert (result.outcome, result.reason) == ("pass", "") and not result.onnxruntime_partition


@pytest.mark.parametrize("name", ON_ONNXRUNTIME)
def test_node_case_passes_with_onnxruntime_running_what_tvm_cannot(results, name):
    result = results[name]
    assert (result.outcome, result.reason) == ("pass", "") and result.onnxruntime_partition


@pytest.mark.parametrize("name", CLEAN_FAILURES)
def test_a_case_that_cannot_be_lowered_is_a_clean_error(results, name):
    result = results[name]
    assert result.outcome == "error" and result.reason.startswith("UserInputError:"), result
