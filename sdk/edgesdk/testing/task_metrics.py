"""Task-level metrics for comparing a quantized model with its fp32 original on real tasks.

Post-processing mirrors the pipelines the models ship with (rapidocr for PP-OCR, ultralytics for
YOLOv8), simplified to axis-aligned boxes. Detections everywhere are float arrays of shape (k, 6):
``x0, y0, x1, y1, score, class`` in input pixels, one array per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from scipy import ndimage

BLANK = 0


def charset_of(model: onnx.ModelProto, key: str = "character") -> list[str]:
    """The CTC index table of a PaddleOCR recognizer: blank, the dictionary in its metadata, space.

    Paddle2ONNX stores the dictionary newline-separated under ``character``; PaddleOCR (and
    rapidocr) put the CTC blank at index 0 and append a space as the last class. The blank is
    returned as "" so a decoded index never adds text.
    """
    props = {prop.key: prop.value for prop in model.metadata_props}
    if key not in props:
        raise ValueError(f"model has no '{key}' metadata (keys: {sorted(props)})")
    return ["", *props[key].splitlines(), " "]


def ctc_decode(probs: np.ndarray, charset: Sequence[str]) -> list[str]:
    """Greedy CTC: argmax per step, merge repeated indices, then drop blanks (index 0).

    ``probs`` is (N, T, C) (or (T, C) for one line) with C == len(charset). A repeat separated by
    a blank is two characters ("a", blank, "a" -> "aa"); an unbroken repeat is one.
    """
    probs = np.asarray(probs)
    if probs.ndim == 2:
        probs = probs[None]
    if probs.shape[-1] != len(charset):
        raise ValueError(f"{probs.shape[-1]} classes but a charset of {len(charset)}")
    texts = []
    for best in probs.argmax(axis=-1):
        keep = np.ones(best.shape, bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= best != BLANK
        texts.append("".join(charset[i] for i in best[keep]))
    return texts


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit-cost insert, delete, substitute), one DP row at a time."""
    row = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, char_b in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (char_a != char_b))
    return row[-1]


def character_error_rate(predicted: str | Sequence[str], reference: str | Sequence[str]) -> float:
    """Total edits over total reference characters (corpus CER, so long lines weigh more).

    May exceed 1 when predictions insert text; an empty reference gives 0 if the prediction is
    empty too, else 1.
    """
    predicted = [predicted] if isinstance(predicted, str) else list(predicted)
    reference = [reference] if isinstance(reference, str) else list(reference)
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predictions for {len(reference)} references")
    edits = sum(edit_distance(p, r) for p, r in zip(predicted, reference, strict=False))
    chars = sum(len(r) for r in reference)
    if chars == 0:
        return float(edits > 0)
    return edits / chars


def line_agreement(predicted: Sequence[str], reference: Sequence[str]) -> float:
    """The fraction of lines read exactly alike (1.0 for no lines)."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predictions for {len(reference)} references")
    if not reference:
        return 1.0
    return sum(p == r for p, r in zip(predicted, reference, strict=False)) / len(reference)


def top1_agreement(probs: np.ndarray, reference: np.ndarray) -> float:
    """The fraction of rows whose argmax matches; ``reference`` is probabilities or class ids."""
    probs, reference = np.asarray(probs), np.asarray(reference)
    labels = reference.argmax(axis=-1) if reference.ndim == probs.ndim else reference
    if len(labels) != len(probs):
        raise ValueError(f"{len(probs)} rows against {len(labels)} references")
    return float(np.mean(probs.argmax(axis=-1) == labels)) if len(labels) else 1.0


def db_boxes(prob_map: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.6, min_size: int = 3, unclip_ratio: float = 1.6) -> np.ndarray:
    """DB text boxes from one (H, W) probability map (a leading (1, 1) or (1,) is squeezed).

    Threshold the map, take 8-connected components, box each by its bounding rectangle, score it
    by the mean probability inside, and drop boxes thinner than ``min_size`` or scoring below
    ``box_thresh``. DB predicts shrunk text kernels, so survivors grow on each side by
    area * unclip_ratio / perimeter, PaddleOCR's unclip for a rectangle (its 1.6 leaves a margin
    around the ink; 1.0 gives about the tight ink box). Returns (k, 6), class 0.
    """
    prob_map = np.asarray(prob_map, np.float32)
    while prob_map.ndim > 2:
        prob_map = prob_map[0]
    height, width = prob_map.shape
    labels, _ = ndimage.label(prob_map > thresh, structure=np.ones((3, 3)))
    boxes = []
    for rows, cols in ndimage.find_objects(labels):
        h, w = rows.stop - rows.start, cols.stop - cols.start
        if min(h, w) < min_size:
            continue
        score = float(prob_map[rows, cols].mean())
        if score < box_thresh:
            continue
        grow = h * w * unclip_ratio / (2 * (h + w))
        boxes.append([max(cols.start - grow, 0), max(rows.start - grow, 0), min(cols.stop + grow, width), min(rows.stop + grow, height), score, 0])
    return np.array(boxes, np.float32).reshape(-1, 6)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x0,y0,x1,y1 box against (k, >=4) boxes."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def nms(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression of (k, >=5) boxes, best score first."""
    order = np.argsort(-boxes[:, 4], kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        order = order[box_iou(boxes[best], boxes[order]) <= iou]
    return np.array(keep, np.int64)


def yolo_detections(output: np.ndarray, conf: float = 0.25, iou: float = 0.45, max_det: int = 300) -> list[np.ndarray]:
    """Boxes from a YOLOv8 head, (N, 4 + classes, anchors) of cx, cy, w, h then class scores.

    Each anchor keeps its best class (ultralytics' single-label mode) if it scores >= ``conf``;
    NMS runs per class at ``iou``. Returns one (k, 6) array per image, best first.
    """
    output = np.asarray(output, np.float32)
    results = []
    for image in output:
        scores = image[4:]
        classes = scores.argmax(axis=0)
        best = scores[classes, np.arange(scores.shape[1])]
        keep = best >= conf
        cx, cy, w, h = image[:4, keep]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, best[keep], classes[keep]], axis=1)
        kept = [boxes[boxes[:, 5] == c][nms(boxes[boxes[:, 5] == c], iou)] for c in np.unique(boxes[:, 5])]
        boxes = np.concatenate(kept) if kept else np.zeros((0, 6), np.float32)
        results.append(boxes[np.argsort(-boxes[:, 4], kind="stable")][:max_det])
    return results


def average_precision(scores: np.ndarray, hits: np.ndarray, positives: int) -> float:
    """VOC all-point interpolated AP: area under the precision envelope of a ranked list."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(hits, np.float64)[order]
    true_pos = np.cumsum(hits)
    recall = np.concatenate([[0.0], true_pos / positives, [1.0]])
    precision = np.concatenate([[1.0], true_pos / np.arange(1, len(hits) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def map50(detections: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> float:
    """mAP at IoU 0.5 of per-image detections, taking ``references`` (e.g. fp32's) as ground truth.

    Per class, detections over all images are ranked by score; each claims the unclaimed
    same-class reference it overlaps most if IoU >= 0.5, else is a false positive. AP is averaged
    over the classes present in the references; detections of other classes do not count. With
    no references at all: 1.0 if there are no detections either, else 0.0.
    """
    if len(detections) != len(references):
        raise ValueError(f"{len(detections)} images of detections against {len(references)}")
    classes = np.unique(np.concatenate([np.asarray(r).reshape(-1, 6)[:, 5] for r in references] or [np.empty(0)]))
    if classes.size == 0:
        return float(all(len(d) == 0 for d in detections))
    aps = []
    for cls in classes:
        scores, hits, positives = [], [], 0
        for found, truth in zip(detections, references, strict=False):
            found = np.asarray(found).reshape(-1, 6)
            found = found[found[:, 5] == cls]
            truth = np.asarray(truth).reshape(-1, 6)
            truth = truth[truth[:, 5] == cls]
            positives += len(truth)
            claimed = np.zeros(len(truth), bool)
            for box in found[np.argsort(-found[:, 4], kind="stable")]:
                overlaps = box_iou(box, truth) if len(truth) else np.zeros(0)
                match = int(np.argmax(overlaps)) if overlaps.size else -1
                hit = match >= 0 and overlaps[match] >= 0.5 and not claimed[match]
                if hit:
                    claimed[match] = True
                scores.append(box[4])
                hits.append(hit)
        aps.append(average_precision(np.array(scores), np.array(hits), positives))
    return float(np.mean(aps))
