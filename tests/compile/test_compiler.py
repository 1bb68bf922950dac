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
