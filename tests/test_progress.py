import numpy as np
import onnx

import edgesdk
from edgesdk.progress import COUNTED, WITHIN, counted, reporting, stage
from edgesdk.testing.models import tiny_cnn


def test_stages_reach_the_innermost_listener_and_nothing_without_one():
    outer, inner = [], []
    stage("nobody listens")  # no listener: nothing happens
    with reporting(outer.append):
        stage("a")
        with reporting(inner.append):
            for item in counted(["x", "y"], "layers"):
                stage(f"work on {item}")
        with reporting(None):  # None keeps the listener already set
            stage("b")
    stage("after")
    assert outer == ["a", "b"]  # the step ended with its loop
    assert inner == ["layers 1/2 x", "layers 1/2 x › work on x", "layers 2/2 y", "layers 2/2 y › work on y"]


def test_steps_within_steps_name_every_level():
    stages: list[str] = []
    with reporting(stages.append):
        for _ in counted(["a"], "outer"):
            for _ in counted(["b", "c"], "inner", None):
                pass
            stage("between")
    assert stages == ["outer 1/1 a", "outer 1/1 a › inner 1/2", "outer 1/1 a › inner 2/2", "outer 1/1 a › between"]


def test_counted_stages_parse_with_and_without_an_item():
    named = COUNTED.fullmatch("calibrating int8 ranges 3/16")
    assert named and (named["what"], named["done"], named["total"], named["item"]) == ("calibrating int8 ranges", "3", "16", None)
    item = COUNTED.fullmatch("AdaRound 2/5 conv 1/x")
    assert item and (item["what"], item["done"], item["item"]) == ("AdaRound", "2", "conv 1/x")
    assert COUNTED.fullmatch("compile: build") is None
    stages: list[str] = []
    with reporting(stages.append):
        list(counted(range(2), "runs", None))
    assert stages == ["runs 1/2", "runs 2/2"] and all(COUNTED.fullmatch(text)["item"] is None for text in stages)


def _samples(n: int) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)}


def test_quantize_reports_every_search_as_it_runs(tmp_path):
    onnx.save(tiny_cnn(), tmp_path / "m.onnx")
    stages: list[str] = []
    edgesdk.quantize(
        tmp_path / "m.onnx", _samples(8), tmp_path / "q.onnx", scheme="int8", analyze=True,
        adaround_seconds=0.5, bias_correction=True, on_stage=stages.append,
    )  # fmt: skip
    counts = {}
    for text in stages:
        match = COUNTED.fullmatch(text.split(WITHIN)[-1])  # the innermost step
        if match:
            counts.setdefault(match["what"], []).append((int(match["done"]), int(match["total"])))
    assert counts["calibrating int8 ranges"][:8] == [(n, 8) for n in range(1, 9)]
    layers = counts["AdaRound"]
    assert layers[0] == (1, 4) and layers[-1] == (4, 4)  # tiny_cnn: 3 convs and a Gemm
    assert [done for done, _ in counts["sensitivity"]] == [1, 2, 3, 4]
    assert "bias correction" in stages and stages[0] == "load"
    assert "sensitivity 2/4 Conv_3 › calibrating int8 ranges 1/8" in stages  # each layer's own calibration, named within its step


def test_compare_reports_each_analysis_as_it_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))
    stages: list[str] = []
    edgesdk.compare(tiny_cnn(), "phone,mcu", quantize="none,w4a16", input_shapes={"image": [1, 3, 32, 32]}, on_stage=stages.append)
    finished = [COUNTED.fullmatch(text) for text in stages if text.startswith("compare ")]
    assert all(finished) and [(int(m["done"]), int(m["total"])) for m in finished] == [(n, len(finished)) for n in range(1, len(finished) + 1)]
    # Each analysis runs in a worker; the devices waiting on it are named as it finishes.
    items = sorted(m["item"] for m in finished)
    assert items[0] == "analysed: none for phone, mcu" and all(item.startswith("analysed: w4a16 for ") for item in items[1:])
    assert sorted(device for item in items[1:] for device in item.split(" for ")[1].split(", ")) == ["mcu", "phone"]
