"""Matrix jobs on a local process pool and on a real Ray cluster started here (`ray start --head`
on 127.0.0.1): the same deploys, the same manifests; failures are rows; a rerun resumes."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

import edgesdk
from edgesdk.frontend.tensors import save_npz
from edgesdk.verbs.batch import RESULTS_FILE, batch
from tests.conftest import BUILTIN_DEVICES
from tests.e2e.conftest import MODELS, free_port

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).parent / "ray"
# What differs between two deploys of the same thing: when, where, and how long the compile took.
VOLATILE = {"created_utc", "compile_seconds", "compile_stages", "cached", "measured"}


@pytest.fixture(scope="module")
def matrix_dir(tmp_path_factory) -> Path:
    """3 models x 6 devices x 2 precisions (none, int8 on 16 calibration samples)."""
    directory = tmp_path_factory.mktemp("matrix")
    rng = np.random.default_rng(0)
    models = []
    for name, (build, shapes) in MODELS.items():
        onnx.save(build(), directory / f"{name}.onnx")
        save_npz(directory / f"{name}.npz", {input: rng.standard_normal([16, *shape]).astype(np.float32) for input, shape in shapes.items()})
        models.append({"path": f"{name}.onnx", "input_shapes": shapes, "calibration": f"{name}.npz"})
    (directory / "matrix.yaml").write_text(yaml.safe_dump({"models": models, "devices": "all", "precisions": ["none", "int8"], "output": "local"}))
    return directory


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, session_cache):
    """A Ray head node on 127.0.0.1, stopped after the module's tests."""
    if shutil.which(str(RAY)) is None:
        pytest.fail("ray is not installed: `make test` installs edgesdk[distributed]")
    port = free_port()
    # A loopback cluster for this test alone: no token authentication (Ray 2.60 turns it on when
    # ~/.ray/auth_token exists, which an earlier local `ray.init()` leaves behind).
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    command = [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
    subprocess.run(command, check=True, env=environment, capture_output=True, timeout=180)
    yield f"127.0.0.1:{port}"
    subprocess.run([str(RAY), "stop", "--force"], env=environment, capture_output=True, timeout=120)


def with_output(matrix: Path, output: str) -> Path:
    """The same matrix writing elsewhere."""
    data = yaml.safe_load(matrix.read_text())
    copy = matrix.with_name(f"matrix-{output}.yaml")
    copy.write_text(yaml.safe_dump({**data, "output": output}))
    return copy


def stable(manifest: dict) -> dict:
    """A manifest without what differs from run to run (nested keys too)."""
    if isinstance(manifest, dict):
        return {key: stable(value) for key, value in manifest.items() if key not in VOLATILE}
    if isinstance(manifest, list):
        return [stable(value) for value in manifest]
    return manifest


def assert_same(left, right, where: str = "") -> None:
    """Equal, floats to 1e-9 relative: onnxruntime's threads may sum in another order."""
    if isinstance(left, dict):
        assert left.keys() == right.keys(), where
        for key in left:
            assert_same(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, list):
        assert len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(left, float) and isinstance(right, float):
        assert math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {left} != {right}"
    else:
        assert left == right, where


def test_the_ray_matrix_is_the_local_matrix_and_a_rerun_resumes(matrix_dir, ray_cluster):
    local = batch(matrix_dir / "matrix.yaml", workers=2)
    assert len(local.rows) == len(MODELS) * len(BUILTIN_DEVICES) * 2 and not local.failed
    assert {(row.model, row.device, row.precision) for row in local.rows} == {
        (model, device, precision) for model in MODELS for device in BUILTIN_DEVICES for precision in ("none", "int8")
    }
    assert all(row.verified and row.fits and row.latency_ms > 0 and row.energy_mj > 0 for row in local.rows)
    assert all(row.accuracy is not None for row in local.rows if row.precision == "int8")
    assert sorted(Path(path).name for path in local.html) == sorted(f"{model}.html" for model in MODELS)

    remote = batch(with_output(matrix_dir / "matrix.yaml", "ray"), executor_name="ray", address=ray_cluster)
    assert remote.executor == "ray" and not remote.failed
    for ours, theirs in zip(local.rows, remote.rows, strict=True):
        assert (ours.model, ours.device, ours.precision, ours.key) == (theirs.model, theirs.device, theirs.precision, theirs.key)
        assert (ours.latency_ms, ours.energy_mj, ours.peak_memory_bytes) == (theirs.latency_ms, theirs.energy_mj, theirs.peak_memory_bytes)
        manifests = [json.loads((Path(row.artifact) / "manifest.json").read_text()) for row in (ours, theirs)]
        assert_same(*map(stable, manifests), where=f"{ours.model}/{ours.device}-{ours.precision}")
        assert edgesdk.load_artifact(theirs.artifact).manifest.verification.passed

    again = batch(matrix_dir / "matrix.yaml", workers=2)
    assert again.resumed == len(local.rows) and [row.model_dump() for row in again.rows] == [row.model_dump() for row in local.rows]


def test_compare_on_ray_gives_the_local_table(matrix_dir, ray_cluster):
    arguments = (matrix_dir / "tiny_cnn.onnx", "pc,phone,mcu")
    options = {"quantize": "none,int8", "calibration": matrix_dir / "tiny_cnn.npz", "input_shapes": MODELS["tiny_cnn"][1]}
    local = edgesdk.compare(*arguments, **options)
    remote = edgesdk.compare(*arguments, executor="ray", address=ray_cluster, **options)
    assert_same(local.model_dump(mode="json"), remote.model_dump(mode="json"))
    assert [(row.device, row.scheme) for row in local.rows] == [(device, scheme) for device in ("pc", "phone", "mcu") for scheme in ("none", "int8")]


def test_failed_and_crashed_tasks_are_rows_and_the_others_are_kept(matrix_dir, run_cli, monkeypatch, tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    onnx.save(MODELS["mlp"][0](), tmp_path / "mlp.onnx")
    onnx.save(MODELS["transformer_block"][0](), tmp_path / "crashes.onnx")
    models = [
        {"path": "broken.onnx"},
        {"path": "mlp.onnx", "input_shapes": MODELS["mlp"][1]},
        # A new shape: not in the cache, so its compile worker runs, and crashes.
        {"path": "crashes.onnx", "input_shapes": {"tokens": [1, 8, 64]}},
    ]
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump({"models": models[1:2], "devices": ["pc"], "output": "out"}))
    assert not batch(matrix, workers=2).failed  # mlp on pc, now cached
    shutil.rmtree(tmp_path / "out")
    matrix.write_text(yaml.safe_dump({"models": models, "devices": ["pc"], "output": "out"}))

    monkeypatch.setenv("EDGESDK_TEST_CRASH", "import")
    code, out, err = run_cli("batch", str(matrix), "--json")
    assert code == 1
    rows = {row["model"]: row for row in json.loads(out)["rows"]}
    assert "not a valid ONNX model" in rows["broken"]["error"] or "broken.onnx" in rows["broken"]["error"]
    assert "crashed" in rows["crashes"]["error"] and rows["crashes"]["artifact"] is None
    assert rows["mlp"]["error"] is None and rows["mlp"]["verified"] is True
    assert json.loads((tmp_path / "out" / RESULTS_FILE).read_text())["rows"] == json.loads(out)["rows"]

    monkeypatch.delenv("EDGESDK_TEST_CRASH")
    code, out, _ = run_cli("batch", str(matrix), "--json")  # resumes: only the failed ones run again
    assert code == 1 and json.loads(out)["resumed"] == 1  # mlp
    assert {row["model"]: row["error"] is None for row in json.loads(out)["rows"]} == {"broken": False, "mlp": True, "crashes": True}


def test_a_bad_ray_address_is_one_line(matrix_dir, run_cli):
    code, out, err = run_cli("batch", str(matrix_dir / "matrix.yaml"), "--executor", "ray", "--address", f"127.0.0.1:{free_port()}")
    assert code == 2 and out == ""
    assert err.startswith("error: --address 127.0.0.1:") and "cannot connect (connection refused)" in err and "Traceback" not in err


def test_tuning_runs_first_one_task_per_device_and_the_deploys_use_it(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))  # a tuning database changes every later pc build
    onnx.save(MODELS["tiny_cnn"][0](), tmp_path / "cnn.onnx")
    models = [{"path": "cnn.onnx", "input_shapes": MODELS["tiny_cnn"][1]}]
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump({"models": models, "devices": ["pc", "mcu"], "tune": {"trials": 2, "budget_s": 20}, "output": "out"}))
    report = batch(matrix, workers=2)
    assert not report.failed
    lines = sorted(report.tuning)
    assert lines[0] == "mcu: not tuned: its code does not run here"
    assert lines[1].startswith("pc: cnn at none: ") and " kernels tuned in " in lines[1] and not lines[1].startswith("pc: cnn at none: 0 kernels")
    pc = next(row for row in report.rows if row.device == "pc")
    database = edgesdk.tune(tmp_path / "cnn.onnx", "pc", input_shapes=MODELS["tiny_cnn"][1], trials=2, budget_s=1e-9)
    chosen = sum(kernel.chosen == "tuned" for kernel in database.kernels)  # what the batch's tune found, read back
    assert pc.tuned_kernels == chosen and pc.verified
