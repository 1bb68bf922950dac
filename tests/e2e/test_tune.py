"""`edgesdk tune` end to end: MetaSchedule measures candidates here, the ledger makes a second run
resume, the budget leaves work for later, and a deploy builds with what the database holds."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgesdk
from edgesdk.compile.tuning_db import TaskRecord, database_dir, read_ledger, write_ledger

pytestmark = pytest.mark.slow


def two_convs(path):
    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((16, 8, 3, 3)), "w2": rng.standard_normal((16, 16, 1, 1))}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 20, 20])],
        [numpy_helper.from_array((value * 0.1).astype(np.float32), name) for name, value in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache of this test's own: a tuning database would change every later pc build of the session."""
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tune_measures_resumes_and_keeps_to_its_budget(tmp_path, own_cache, run_cli):
    model = two_convs(tmp_path / "two_convs.onnx")
    # The budget runs out during the first (largest) kernel: the second is left for later.
    code, out, err = run_cli("tune", str(model), "--device", "pc", "--trials", "2", "--budget-s", "1", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["untuned"] == 1 and len(first["kernels"]) == 1
    (kernel,) = first["kernels"]
    assert kernel["macs"] == 16 * 20 * 20 * 8 * 9 and kernel["rules_ms"] > 0 and kernel["trials"] == 2
    assert kernel["chosen"] in ("tuned", "rules") and (kernel["tuned_ms"] is None or kernel["tuned_ms"] > 0)
    assert kernel["chosen"] == "rules" or kernel["tuned_ms"] < kernel["rules_ms"]
    ledger = read_ledger(database_dir(first["target"]))
    assert list(ledger) == [kernel["workload"]]

    # Again, with no time to tune: the finished kernel comes from the ledger, not measured again.
    code, out, err = run_cli("tune", str(model), "--device", "pc", "--trials", "2", "--budget-s", "1e-9", "--json")
    assert code == 0, err
    second = json.loads(out)
    assert second["kernels"] == first["kernels"] and second["untuned"] == 1

    code, _, err = run_cli("tune", str(model), "--device", "phone")
    assert code == 2 and "does not run on this machine" in err and "Traceback" not in err


def test_deploy_builds_the_tuned_kernels_and_says_so(tmp_path, own_cache):
    from tests.compile.test_tuning import commit_schedule

    model = two_convs(tmp_path / "two_convs.onnx")
    plain = edgesdk.deploy(model, "pc", tmp_path / "plain")
    assert plain.manifest.build.tuned_kernels == []

    # What a tune that found a better schedule for the 3x3 conv leaves behind.
    import tvm

    from edgesdk.compile import lowering
    from edgesdk.compile.tuner import tasks

    target_json = edgesdk.get_device("pc").target
    target = tvm.target.Target(target_json)
    mod, *_ = lowering.import_onnx(model, {"x": [1, 8, 20, 20]})
    with target:
        fused = tvm.transform.Sequential(lowering.fusion_passes(target))(mod)
    name, key, module, macs = tasks(fused, target)[0]

    def parallel_rows(sch):
        block = next(block for block in sch.get_child_blocks(sch.get_sblock("root")) if "conv" in str(sch.get(block).name_hint))
        sch.parallel(sch.get_loops(block)[1])

    directory = database_dir(target_json)
    commit_schedule(directory, module, target, parallel_rows)
    write_ledger(directory, {key: TaskRecord(kernel=name, workload=key, macs=macs, rules_ms=1.0, tuned_ms=0.5, trials=1, chosen="tuned")})

    tuned = edgesdk.deploy(model, "pc", tmp_path / "tuned")
    assert tuned.manifest.build.tuned_kernels == [name]
    assert tuned.manifest.build.cache_key != plain.manifest.build.cache_key  # the records are part of the key
    assert tuned.manifest.verification.passed
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 8, 20, 20)).astype(np.float32)}
    np.testing.assert_allclose(tuned.run(feeds)["y"], plain.run(feeds)["y"], rtol=1e-5, atol=1e-5)
