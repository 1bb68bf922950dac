import json

import numpy as np
import pytest

import edgesdk
from edgesdk.simulate.efficiency_model import FEATURES, Sample
from edgesdk.simulate.fit import CostFit, fit_factors, fit_file, fit_times, stored_fit
from edgesdk.simulate.time_model import TERMS, fit_coefficients
from edgesdk.verbs.calibrate import micro_benchmarks, suite_model


def sample(kernel, op_class, ops, ms):
    return Sample(kernel=kernel, op_class=op_class, ops=ops, features=(1.0,) * len(FEATURES), measured_ms=ms)


def test_fit_inverts_the_cost_model():
    peak = 1e11
    overhead_s = 2e-6
    samples = [
        # conv at 2% of peak, twice; matmul at 5%
        sample("conv_a", "conv", 10**8, (10**8 / (peak * 0.02) + overhead_s) * 1e3),
        sample("conv_b", "conv", 10**7, (10**7 / (peak * 0.02) + overhead_s) * 1e3),
        sample("mm", "matmul", 10**8, (10**8 / (peak * 0.05) + overhead_s) * 1e3),
    ]
    efficiency = fit_factors(samples, peak, overhead_s)
    assert efficiency["conv"] == pytest.approx(0.02) and efficiency["matmul"] == pytest.approx(0.05)
    assert efficiency["default"] == pytest.approx(0.035)


def test_the_time_model_recovers_phase_costs_and_adds_them_up_for_shapes_it_never_saw():
    """Kernel time = start + per FLOP + per weight byte + per activation byte + per byte written,
    non-negative, on relative error: fitted to big kernels, it still predicts a small one."""
    rng = np.random.default_rng(0)
    truth = np.array([1e-6, 3e-6, 5e-12, 2e-10, 1e-10, 4e-10])
    terms = [(float(i % 2), float(1 - i % 2), *(float(v) for v in rng.integers(10**4, 10**8, 4))) for i in range(20)]
    seconds = [float(np.dot(truth, t)) for t in terms]
    coefficients = fit_coefficients(terms, seconds)
    assert coefficients is not None and all(c >= 0 for c in coefficients)
    small = (1.0, 0.0, 1e5, 2e3, 4e3, 4e3)
    assert float(np.dot(coefficients, small)) == pytest.approx(float(np.dot(truth, small)), rel=1e-6)
    assert fit_coefficients(terms[:5], seconds[:5]) is None  # too few samples: the efficiency model stays
    # A term that only adds noise comes out as zero, never negative.
    noisy = [s * (1 + 0.05 * (-1) ** i) for i, s in enumerate(seconds)]
    assert min(fit_coefficients([(t[0], t[1], t[2], 0.0, t[4], 1.0) for t in terms], noisy)) >= 0.0
    samples = [
        sample(f"c{i}", "conv", int(t[2]), (s + 1e-6) * 1e3).model_copy(update={"terms": t}) for i, (t, s) in enumerate(zip(terms, seconds, strict=True))
    ]
    assert fit_times(samples, 1e-6)["conv"] == pytest.approx(list(coefficients), rel=1e-6, abs=1e-20)
    # Kernels timed at less than twice the call overhead carry no busy time the timing resolves:
    # left out, they cannot pull the fit (as near-zero targets of a relative fit they zeroed it).
    unresolved = [sample(f"u{i}", "conv", 10**6, 1.5e-3).model_copy(update={"terms": terms[i]}) for i in range(5)]
    assert fit_times(samples + unresolved, 1e-6)["conv"] == pytest.approx(list(coefficients), rel=1e-6, abs=1e-20)


def test_the_micro_benchmark_suite_builds_valid_models_with_each_operator_twice():
    from edgesdk.frontend.model import load_model

    suite = micro_benchmarks()
    assert len(suite) >= 100 and len({op.name for op in suite}) == len(suite)
    assert suite == micro_benchmarks()  # seeded: the same suite every time
    assert {op.op for op in suite} >= {"Conv", "MatMul", "Softmax", "MaxPool", "LayerNormalization", "Erf", "Transpose"}
    model = load_model(suite_model(suite[:5] + suite[-12:]))
    ops = [node.op_type for node in model.proto.graph.node]
    assert ops == [op.op for op in suite[:5] + suite[-12:] for _ in range(2)]


def write_fit(device="pc"):
    fitted = CostFit(
        device=device,
        unit="cpu",
        created_utc="2026-01-01T00:00:00+00:00",
        host="test",
        launch_overhead_s=7e-6,
        efficiency={"default": 0.01, "conv": 0.02},
        feature_weights={},
        samples=[],
        time_terms=list(TERMS),
    )
    path = fit_file(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fitted.model_dump_json())
    return path


def test_a_stored_fit_reaches_the_simulator_not_the_device_profile(tmp_path, monkeypatch):
    from edgesdk.verbs.pipeline import estimated
    from tests.simulate.test_partition_and_cost_model import small_model

    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path))
    shipped = edgesdk.get_device("pc")
    before = estimated(small_model(), shipped)[1]
    monkeypatch.setenv("EDGESDK_NO_CALIBRATION", "1")
    plain = estimated(small_model(), shipped)[1]  # the profile's own figures
    monkeypatch.delenv("EDGESDK_NO_CALIBRATION")
    write_fit()
    assert edgesdk.get_device("pc") == shipped  # the profile stays as shipped
    assert stored_fit("pc").created_utc == "2026-01-01T00:00:00+00:00" and stored_fit("phone") is None
    applied = stored_fit("pc").applied(shipped)
    assert applied.compute_units["cpu"].efficiency == {"default": 0.01, "conv": 0.02}
    assert applied.compute_units["cpu"].launch_overhead_s == 7e-6
    assert applied.compute_units["cpu"].peak_ops_per_s == shipped.compute_units["cpu"].peak_ops_per_s
    after = estimated(small_model(), shipped)[1]
    # Before: the pc's shipped default calibration; after: the one made on this host.
    assert before.figures == after.figures == "calibrated" and "shipped" in before.figures_source and "shipped" not in after.figures_source
    assert before.calibrated_utc != after.calibrated_utc == "2026-01-01T00:00:00+00:00"
    assert after.per_layer[0].compute_ms == pytest.approx(plain.per_layer[0].compute_ms * shipped.compute_units["cpu"].efficiency["conv"] / 0.02)
    monkeypatch.setenv("EDGESDK_NO_CALIBRATION", "1")
    assert stored_fit("pc") is None and estimated(small_model(), shipped)[1].calibrated_utc is None


def test_a_corrupt_fit_file_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path))
    write_fit().write_text("{not json")
    assert stored_fit("pc") is None


def test_a_fit_made_with_other_time_terms_is_ignored_not_misapplied(tmp_path, monkeypatch):
    from edgesdk.verbs.pipeline import estimated
    from tests.simulate.test_partition_and_cost_model import small_model

    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path))
    path = write_fit()
    stale = json.loads(path.read_text()) | {"time_terms": list(TERMS[:-1]), "time_coefficients": {"conv": [1e-6] * (len(TERMS) - 1)}}
    path.write_text(json.dumps(stale))
    assert stored_fit("pc") is None
    assert "shipped" in estimated(small_model(), edgesdk.get_device("pc"))[1].figures_source  # the default, not the stale fit


def test_calibration_efficiency_comes_from_the_nearest_measured_kernels():
    from edgesdk.compile.kernels import Kernel, LoopNest, Tensor
    from edgesdk.simulate.efficiency_model import efficiency_features

    def conv(reduction):
        nest = LoopNest(
            iterations=reduction * 4096, reduction=reduction, inner_extent=64, inner_stride_bytes=4, reduction_extents=[reduction], reduction_strides_bytes=[4]
        )
        return Kernel(
            name=f"conv_{reduction}",
            op_classes=["conv"],
            flops=2 * reduction * 4096,
            inputs=[],
            outputs=[Tensor(shape=[1, 1, 64, 64], dtype="float32")],
            nest=nest,
        )

    def measured(reduction, efficiency):
        kernel = conv(reduction)
        return Sample(kernel=kernel.name, op_class="conv", ops=kernel.ops, features=efficiency_features(kernel), measured_ms=1.0, efficiency=efficiency)

    # Efficiency falls with the reduction length: 10% at 8, 1% at 512.
    samples = [measured(r, e) for r, e in [(8, 0.1), (16, 0.08), (32, 0.05), (64, 0.03), (128, 0.02), (256, 0.015), (512, 0.01)]]
    weights = {"conv": dict.fromkeys(FEATURES, 1.0)}
    calibration = CostFit(
        device="pc", unit="cpu", created_utc="", host="", launch_overhead_s=0, efficiency={}, feature_weights=weights, samples=samples, time_terms=list(TERMS)
    )
    assert calibration.efficiency_of(conv(8)) == pytest.approx(0.1, rel=0.1)
    assert calibration.efficiency_of(conv(512)) == pytest.approx(0.01, rel=0.1)
    assert 0.03 < calibration.efficiency_of(conv(48)) < 0.05  # between its neighbours
    assert calibration.model_copy(update={"samples": samples[:3]}).efficiency_of(conv(8)) is None  # too few samples
    matmul = conv(8).model_copy(update={"op_classes": ["matmul"]})
    assert calibration.efficiency_of(matmul) is None


def test_feature_weights_are_chosen_by_leave_one_out_error_and_ignore_noise():
    import numpy as np

    from edgesdk.simulate.efficiency_model import choose_weights, loo_error

    rng = np.random.default_rng(0)
    samples = []
    for index in range(40):
        features = rng.uniform(0, 8, len(FEATURES))
        efficiency = 0.1 * 2 ** -features[0]  # only the first feature matters
        samples.append(Sample(kernel=f"k{index}", op_class="conv", ops=1, features=tuple(features), measured_ms=1.0, efficiency=efficiency))
    chosen = choose_weights(samples)["conv"]
    assert chosen[FEATURES[0]] > 0 and max(chosen[name] for name in FEATURES[1:]) <= chosen[FEATURES[0]] / 4
    data = (np.array([s.features for s in samples]), np.log2([s.efficiency for s in samples]))
    assert loo_error(*data, chosen) < loo_error(*data, dict.fromkeys(FEATURES, 1.0)) / 2


def test_l1_set_overflow_of_strided_reductions():
    from edgesdk.simulate.efficiency_model import l1_set_overflow

    assert l1_set_overflow(4, 1000) == 1  # contiguous
    assert l1_set_overflow(4096, 32) == 4  # 32 steps all in one 8-way set
    assert l1_set_overflow(2048, 64) == 4  # two sets: 16 lines
    assert l1_set_overflow(256, 64) == 1  # 16 sets hold 128 lines
    assert l1_set_overflow(4000, 512) == 1  # spreads over every set
