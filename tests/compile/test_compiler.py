"""The compile cache: what a warm deploy reuses."""

from __future__ import annotations

import pytest

import edgesdk
from edgesdk.compile import compiler
from edgesdk.testing.models import mlp


@pytest.mark.slow
def test_a_warm_deploy_starts_no_tvm_process(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))
    shapes = {"features": [1, 64]}
    cold = edgesdk.deploy(mlp(), "phone", tmp_path / "cold", input_shapes=shapes)
    stages = cold.manifest.build.compile_stages
    assert list(stages) == ["import", "analyze", "build device", "build host", "run"] and all(seconds > 0 for seconds in stages.values())

    def no_worker(*args, **kwargs):
        raise AssertionError("a warm deploy started a TVM worker")

    monkeypatch.setattr(compiler, "run_in_worker", no_worker)
    monkeypatch.setattr(compiler, "run_isolated", no_worker)
    warm = edgesdk.deploy(mlp(), "phone", tmp_path / "warm", input_shapes=shapes)
    assert warm.manifest.build.cached and warm.manifest.verification.passed
    assert warm.manifest.verification.outputs == cold.manifest.verification.outputs
    # Other verification inputs are another run: that one needs the worker, and then it is cached too.
    with pytest.raises(AssertionError, match="started a TVM worker"):
        edgesdk.deploy(mlp(), "phone", tmp_path / "seeded", input_shapes=shapes, seed=7)
    monkeypatch.undo()
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))
    assert edgesdk.deploy(mlp(), "phone", tmp_path / "seeded", input_shapes=shapes, seed=7).manifest.build.cached


def test_two_builds_go_to_two_workers_each_importing_the_model(tmp_path, monkeypatch):
    from edgesdk.compile.lowering import BuildSpec
    from edgesdk.compile.worker import RunTask
    from edgesdk.frontend.model import load_model
    from edgesdk.plugin.toolchains import host_toolchain

    model = load_model(mlp(), {"features": [1, 64]})
    device = BuildSpec(role="device", target={"kind": "llvm", "mtriple": "aarch64-linux-gnu"}, emit="shared_library", toolchain=host_toolchain(), basename="m")
    host = device.model_copy(update={"role": "host", "target": {"kind": "llvm"}})
    todo = [(0, device), (1, host)]
    run = RunTask(library="lib.so", weights=str(tmp_path / "model" / "params.npz"), inputs="in.npz", outputs="out.npz", output_names=["y"])
    monkeypatch.setattr(compiler.os, "cpu_count", lambda: 2)
    (first, first_builds), (second, second_builds) = compiler._jobs(model, tmp_path, todo, run, [], False)
    assert first.model_dir and first.run is None and first_builds == todo[:1]
    # The second runs the simulation on the weights it imported itself, not on the first's.
    assert second.model_dir is None and second_builds == todo[1:] and second.run is not None
    assert second.weights_file == second.run.weights != run.weights
    monkeypatch.setattr(compiler.os, "cpu_count", lambda: 1)
    [(only, builds)] = compiler._jobs(model, tmp_path, todo, run, [], False)
    assert builds == todo and only.run == run and only.model_dir
