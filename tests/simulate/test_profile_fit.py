import numpy as np
import pytest

import edgesdk
from edgesdk.compile.kernels import ModelAnalysis, Tensor
from edgesdk.devices.registry import load_profiles
from edgesdk.errors import ProfileError
from edgesdk.simulate.cost_model import simulate
from edgesdk.simulate.partition import partition
from edgesdk.simulate.profile_fit import Figures, Fitter, errors, prepare, with_figures
from tests.simulate.test_partition_and_cost_model import kernel, quantized_chain, small_model

OVERHEAD = "compute_units.npu.launch_overhead_s"
CONV = "compute_units.npu.efficiency.conv"
FP16 = "compute_units.npu.peak_ops_per_s.float16"
SYNC = "interconnect.latency_s"


def conv_chain(count: int, side: int, channels: int = 64):
    """``count`` fp16 3x3 convolutions of ``channels`` on ``side`` x ``side``, one after another."""
    shape = [1, channels, side, side]
    weight = Tensor(shape=[channels, channels, 3, 3], dtype="float16", source="weight")
    kernels = []
    for index in range(count):
        source = Tensor(shape=shape, dtype="float16", source="input") if index == 0 else Tensor(shape=shape, dtype="float16", producer=index - 1)
        kernels.append(kernel(f"conv{index}", ["conv"], 2 * channels * channels * 9 * side * side, [source, weight], shape, "float16"))
    return ModelAnalysis(kernels=kernels)


def analyses():
    """Models whose time is mostly per-op overhead, mostly compute, or between; and an int8 one."""
    chains = {f"fp16-{count}x{side}": conv_chain(count, side) for count, side in ((40, 8), (10, 64), (3, 256), (20, 32), (2, 16))}
    return chains | {"fp16-narrow": conv_chain(4, 32, channels=3), "int8": quantized_chain()}  # narrow: the NPU pads its channels


def test_a_prepared_case_predicts_what_the_simulator_does():
    phone = edgesdk.get_device("phone")
    changed = {OVERHEAD: 3e-6, CONV: 0.3, FP16: 9e12, SYNC: 2e-4}
    figures = Figures(phone)
    fitter = Fitter(figures, list(changed), dict.fromkeys(changed, 1.0))
    for name, analysis in analyses().items():
        case = prepare(name, "x", 1.0, analysis, figures)
        (predicted,) = fitter.predict([case], changed)
        other = with_figures(phone, changed)
        assert predicted == pytest.approx(simulate(analysis, partition(analysis, other), other).latency_ms, rel=1e-9)


def test_the_fit_recovers_figures_that_made_the_measurements():
    """Latencies simulated with known figures are fitted back from first-order figures 3-5x off."""
    phone = edgesdk.get_device("phone")
    truth = {OVERHEAD: 4e-6, CONV: 0.3, FP16: 2e13, SYNC: 3e-4}
    made = with_figures(phone, truth)
    figures = Figures(phone)
    cases = [prepare(name, "x", simulate(a, partition(a, made), made).latency_ms, a, figures) for name, a in analyses().items()]
    first_order = {OVERHEAD: 2e-5, CONV: 0.06, FP16: 5e12, SYNC: 1e-4}
    fitter = Fitter(figures, list(truth), first_order)
    fitted = fitter.fit(cases)
    predicted = fitter.predict(cases, fitted)
    # The weak pull toward first order (PRIOR_WEIGHT) leaves a few percent on exact data.
    assert errors(predicted, [case.measured_ms for case in cases])["worst_error"] < 0.05
    assert fitted[OVERHEAD] == pytest.approx(truth[OVERHEAD], rel=0.3) and fitted[SYNC] == pytest.approx(truth[SYNC], rel=0.1)
    # Only their product is seen in fp16 convolutions: the share of peak times the fp16 rate.
    assert fitted[CONV] * fitted[FP16] == pytest.approx(truth[CONV] * truth[FP16], rel=0.1)
    assert errors(fitter.predict(cases, first_order), [c.measured_ms for c in cases])["median_error"] > 0.5
    # Leave one model out: each model predicted from the others.
    assert errors(fitter.cross_validate(cases), [c.measured_ms for c in cases])["median_error"] < 0.1


def test_fitted_rates_stay_within_physical_bounds():
    phone = edgesdk.get_device("phone")
    fitter = Fitter(Figures(phone), [CONV, FP16], {CONV: 0.5, FP16: 1e13})
    (conv_low, conv_high), (fp16_low, fp16_high) = fitter.bounds()
    assert np.exp(conv_high) == pytest.approx(1.0) and np.exp(fp16_high) == pytest.approx(phone.compute_units["npu"].peak_ops_per_s["int8"])


def test_errors():
    result = errors([1.0, 3.0, 0.4, 1.1], [1.0, 1.0, 1.0, 1.0])
    assert result["median_error"] == pytest.approx(0.35) and result["worst_error"] == pytest.approx(2.0) and result["within_2x"] == 0.5


def test_a_fit_record_must_name_figures_of_the_profile(tmp_path):
    record = (
        "fit: {source: s, method: m, models: [a], first_order: {compute_units.npu.warp_factor: 1.0},"
        " cross_validated_median_error: 0.1, cross_validated_within_2x: 1.0}"
    )
    (tmp_path / "mine.yaml").write_text(f"extends: phone\nid: mine\n{record}\n")
    with pytest.raises(ProfileError, match="compute_units.npu.warp_factor is no figure of the profile"):
        load_profiles(tmp_path)["mine"]


def test_profiles_say_where_their_figures_come_from(monkeypatch):
    from edgesdk.verbs.pipeline import estimated

    model = small_model("float16")
    assert estimated(model, edgesdk.get_device("phone"))[1].figures == "fitted"
    assert estimated(model, edgesdk.get_device("mcu"))[1].figures == "first-order"
    pc = estimated(small_model(), edgesdk.get_device("pc"))[1]
    assert pc.figures == "calibrated" and "default calibration shipped with the profile" in pc.figures_source
    monkeypatch.setenv("EDGESDK_NO_CALIBRATION", "1")
    assert estimated(small_model(), edgesdk.get_device("pc"))[1].figures == "first-order"


def test_a_profile_extending_a_fitted_one_keeps_its_fit_only_while_it_keeps_the_fitted_figures(tmp_path):
    (tmp_path / "small.yaml").write_text("extends: phone\nid: small-vtcm\non_chip_memory_bytes: 1048576\n")
    (tmp_path / "slow.yaml").write_text("extends: phone\nid: slow-npu\ncompute_units: {npu: {launch_overhead_s: 1.0e-4}}\n")
    (tmp_path / "cpu.yaml").write_text("extends: phone\nid: no-npu\ncompute_units: {npu: null}\n")
    profiles = load_profiles(tmp_path)
    assert profiles["small-vtcm"].fit == edgesdk.get_device("phone").fit is not None
    assert profiles["slow-npu"].fit is None and profiles["no-npu"].fit is None
