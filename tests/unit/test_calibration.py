import pytest

import edgesdk
from edgesdk.calibration import Calibration, Sample, calibration_file, fit, micro_benchmarks


def sample(benchmark, op_class, ops, ms):
    return Sample(benchmark=benchmark, kernel=benchmark, op_class=op_class, ops=ops, features=(1.0, 1.0, 1.0), measured_ms=ms)


def test_fit_inverts_the_cost_model():
    peak = 1e11
    overhead_s = 2e-6
    samples = [
        sample("add_tiny", "elementwise", 256, overhead_s * 1e3),
        sample("relu_tiny", "activation", 256, overhead_s * 1e3),
        # conv at 2% of peak, twice; matmul at 5%
        sample("conv_a", "conv", 10**8, (10**8 / (peak * 0.02) + overhead_s) * 1e3),
        sample("conv_b", "conv", 10**7, (10**7 / (peak * 0.02) + overhead_s) * 1e3),
        sample("mm", "matmul", 10**8, (10**8 / (peak * 0.05) + overhead_s) * 1e3),
    ]
    fitted_overhead, efficiency = fit(samples, peak)
    assert fitted_overhead == pytest.approx(overhead_s)
    assert efficiency["conv"] == pytest.approx(0.02) and efficiency["matmul"] == pytest.approx(0.05)
    assert efficiency["default"] == pytest.approx(0.035)


def test_micro_benchmarks_are_valid_single_op_models():
    from edgesdk.model import load_model

    benchmarks = micro_benchmarks()
    assert len(benchmarks) >= 15 and sum(name.endswith("_tiny") for name in benchmarks) >= 2
    for build in benchmarks.values():
        model = load_model(build())
        assert len(model.proto.graph.node) == 1


def write_calibration(device="pc"):
    calibration = Calibration(
        device=device, unit="cpu", created_utc="2026-01-01T00:00:00+00:00", host="test", launch_overhead_s=7e-6,
        efficiency={"default": 0.01, "conv": 0.02}, samples=[],
    )
    path = calibration_file(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(calibration.model_dump_json())
    return path


def test_a_stored_calibration_is_applied_to_its_device(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path))
    shipped = edgesdk.get_device("pc")
    assert shipped.calibrated_utc is None
    write_calibration()
    pc = edgesdk.get_device("pc")
    assert pc.calibrated_utc == "2026-01-01T00:00:00+00:00"
    assert pc.compute_units["cpu"].efficiency == {"default": 0.01, "conv": 0.02}
    assert pc.compute_units["cpu"].launch_overhead_s == 7e-6
    assert pc.compute_units["cpu"].peak_ops_per_s == shipped.compute_units["cpu"].peak_ops_per_s
    assert edgesdk.get_device("phone").calibrated_utc is None
    monkeypatch.setenv("EDGESDK_NO_CALIBRATION", "1")
    assert edgesdk.get_device("pc").calibrated_utc is None


def test_a_corrupt_calibration_file_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path))
    write_calibration().write_text("{not json")
    assert edgesdk.get_device("pc").calibrated_utc is None


def test_shape_efficiency_interpolates_from_the_nearest_measured_kernels():
    from edgesdk.calibration import shape_efficiency

    def measured(reduction, efficiency):
        s = sample(f"conv_{reduction}", "conv", 1, 1.0)
        return s.model_copy(update={"features": (float(reduction), 32.0, 100.0), "efficiency": efficiency})

    # Efficiency falls with the reduction length: 10% at 8, 1% at 512.
    samples = [measured(r, e) for r, e in [(8, 0.1), (16, 0.08), (32, 0.05), (64, 0.03), (128, 0.02), (256, 0.015), (512, 0.01)]]
    assert shape_efficiency(samples, "conv", (8.0, 32.0, 100.0)) == pytest.approx(0.1, rel=0.35)
    assert shape_efficiency(samples, "conv", (512.0, 32.0, 100.0)) == pytest.approx(0.01, rel=0.35)
    assert shape_efficiency(samples, "conv", (8.0, 32.0, 100.0)) > shape_efficiency(samples, "conv", (512.0, 32.0, 100.0))
    assert shape_efficiency(samples[:3], "conv", (8.0, 32.0, 100.0)) is None  # too few samples
    assert shape_efficiency(samples, "matmul", (8.0, 32.0, 100.0)) is None
