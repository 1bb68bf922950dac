import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgesdk.testing.task_metrics import (
    average_precision,
    character_error_rate,
    charset_of,
    ctc_decode,
    db_boxes,
    edit_distance,
    line_agreement,
    map50,
    top1_agreement,
    yolo_detections,
)


def one_hot(indices, classes):
    return np.eye(classes, dtype=np.float32)[indices]


def test_charset_puts_blank_first_and_space_last():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    )
    onnx.helper.set_model_props(model, {"character": "a\nb\n7"})
    assert charset_of(model) == ["", "a", "b", "7", " "]
    with pytest.raises(ValueError, match="no 'names' metadata"):
        charset_of(model, key="names")


def test_ctc_merges_repeats_before_dropping_blanks():
    charset = ["", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 3, 0, 0, 2]  # aa|a bb ' ' b: the blank splits the a's, not the b's
    assert ctc_decode(one_hot(steps, 4), charset) == ["aab b"]
    batch = np.stack([one_hot([1, 1, 1], 4), one_hot([1, 0, 1], 4), one_hot([0, 0, 0], 4)])
    assert ctc_decode(batch, charset) == ["a", "aa", ""]
    assert ctc_decode(one_hot([0, 1, 0], 3), ["~", "a", "b"]) == ["a"]  # index 0 is the blank whatever it is called
    with pytest.raises(ValueError, match="5 classes but a charset of 4"):
        ctc_decode(np.zeros((1, 3, 5)), charset)


def test_edit_distance_and_character_error_rate():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance("", "abc") == edit_distance("abc", "") == 3
    # corpus CER: 3 edits over 7 + 3 reference characters, not the mean of 3/7 and 0
    assert character_error_rate(["kitten", "abc"], ["sitting", "abc"]) == pytest.approx(0.3)
    assert character_error_rate("abcd", "a") == 3.0
    assert character_error_rate([""], [""]) == 0.0 and character_error_rate(["x"], [""]) == 1.0
    with pytest.raises(ValueError):
        character_error_rate(["a"], ["a", "b"])


def test_line_and_top1_agreement():
    assert line_agreement(["a b", "c", "d"], ["a b", "x", "d"]) == pytest.approx(2 / 3)
    assert line_agreement([], []) == 1.0
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    reference = np.array([[0.6, 0.4], [0.45, 0.55], [0.9, 0.1], [0.1, 0.9]])
    assert top1_agreement(probs, reference) == 0.5
    assert top1_agreement(probs, np.array([0, 1, 1, 1])) == 0.75


def test_db_boxes_keeps_confident_text_and_unclips_it():
    prob = np.zeros((1, 1, 64, 96), np.float32)
    prob[0, 0, 10:20, 20:60] = 0.9  # a line: 10 x 40
    prob[0, 0, 40:50, 10:30] = 0.35  # above thresh 0.3 but scores below box_thresh 0.6
    prob[0, 0, 50:52, 70:72] = 0.95  # 2 px: thinner than min_size
    prob[0, 0, 30:35, 70:75] = prob[0, 0, 35:40, 75:80] = 0.8  # touching corners: one 8-connected blob
    tight = db_boxes(prob, unclip_ratio=0)
    assert tight.shape == (1, 6)  # the corner blob is 10 x 10 but half empty: mean 0.4 < 0.6
    np.testing.assert_allclose(tight, [[20, 10, 60, 20, 0.9, 0]], atol=1e-6)
    np.testing.assert_allclose(db_boxes(prob, box_thresh=0.3, unclip_ratio=0)[:, :4], [[20, 10, 60, 20], [70, 30, 80, 40], [10, 40, 30, 50]])
    # unclip grows each side by area * 1.6 / perimeter = 400 * 1.6 / 100
    np.testing.assert_allclose(db_boxes(prob)[0, :4], [13.6, 3.6, 66.4, 26.4], atol=1e-5)


def yolo_head(anchors, classes=3):
    """(1, 4 + classes, A) from (cx, cy, w, h, class, score) rows."""
    out = np.zeros((1, 4 + classes, len(anchors)), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(anchors):
        out[0, :4, i] = cx, cy, w, h
        out[0, 4 + cls, i] = score
    return out


def test_yolo_nms_is_per_class_and_drops_low_scores():
    head = yolo_head(
        [
            (50, 50, 20, 20, 0, 0.9),
            (52, 50, 20, 20, 0, 0.8),  # IoU 0.82 with the first, same class: suppressed
            (50, 50, 20, 20, 1, 0.7),  # same place, other class: kept
            (150, 150, 10, 30, 0, 0.3),
            (100, 100, 20, 20, 2, 0.2),  # below conf
        ]
    )
    (dets,) = yolo_detections(head, conf=0.25, iou=0.45)
    np.testing.assert_allclose(dets, [[40, 40, 60, 60, 0.9, 0], [40, 40, 60, 60, 0.7, 1], [145, 135, 155, 165, 0.3, 0]], atol=1e-6)
    assert len(yolo_detections(head, conf=0.25, iou=0.9)[0]) == 4  # a loose iou keeps the near twin
    assert yolo_detections(head, conf=0.95)[0].shape == (0, 6)


def test_average_precision_interpolates_the_precision_envelope():
    # ranks: miss, hit, hit of 2 positives -> precision 1/2, 2/3 at recall 1/2, 1;
    # the envelope lifts recall 1/2 to 2/3, so AP = 2/3 (not (1/2 + 2/3) / 2)
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1]), 2) == pytest.approx(2 / 3)
    assert average_precision(np.array([0.7, 0.9, 0.8]), np.array([1, 0, 1]), 2) == pytest.approx(2 / 3)  # ranked by score
    assert average_precision(np.array([0.9]), np.array([1]), 4) == pytest.approx(0.25)


def box(x0, y0, x1, y1, score=1.0, cls=0):
    return [x0, y0, x1, y1, score, cls]


def test_map50_against_reference_detections():
    references = [np.array([box(0, 0, 10, 10), box(20, 20, 30, 30)]), np.array([box(0, 0, 10, 10, cls=1)])]
    detections = [
        np.array([box(0, 0, 10, 10, 0.9), box(0, 0, 10, 10, 0.8), box(50, 50, 60, 60, 0.7), box(20, 20, 30, 30, 0.6)]),
        np.array([box(1, 1, 11, 11, 0.5, 1), box(0, 0, 10, 10, 0.95, 2)]),  # IoU 81/119 hit; class 2 not in references
    ]
    # class 0 ranks hit, duplicate, miss, hit: AP = 1/2 * 1 + 1/2 * 1/2; class 1: AP 1
    assert map50(detections, references) == pytest.approx(0.875)
    assert map50(references, references) == 1.0
    shifted = [np.array([box(5, 0, 15, 10)])]  # IoU 1/3 < 0.5
    assert map50(shifted, [np.array([box(0, 0, 10, 10)])]) == 0.0


def test_map50_empty_cases():
    nothing = np.zeros((0, 6), np.float32)
    assert map50([nothing, nothing], [nothing, nothing]) == 1.0
    assert map50([np.array([box(0, 0, 1, 1)]), nothing], [nothing, nothing]) == 0.0
    assert map50([nothing], [np.array([box(0, 0, 1, 1)])]) == 0.0
    with pytest.raises(ValueError):
        map50([nothing], [])


def test_task_data_is_seeded_model_ready_and_calibration_is_disjoint():
    from edgesdk.testing.task_data import calibration_set, scenes, text_lines, text_orientations, text_pages

    lines, again, calibration = text_lines(4, seed=3), text_lines(4, seed=3), calibration_set(text_lines, 4, seed=3)
    assert lines.inputs.shape == (4, 3, 48, 320) and lines.inputs.dtype == np.float32
    assert lines.labels == again.labels and np.array_equal(lines.inputs, again.inputs)
    assert set(lines.labels).isdisjoint(calibration.labels)
    assert lines.inputs.min() >= -1 and lines.inputs.max() <= 1
    turned = text_orientations(4, seed=0)
    assert turned.inputs.shape == (4, 3, 48, 192) and sorted(turned.labels) == [0, 0, 1, 1]
    pages = text_pages(2, seed=0, height=64, width=96)
    assert pages.inputs.shape == (2, 3, 64, 96) and all(boxes.shape[1] == 6 for boxes in pages.labels)
    with pytest.raises(ValueError, match="multiples of 32"):
        text_pages(1, height=50)
    photos = scenes(3, seed=0, size=64)
    assert photos.inputs.shape == (3, 3, 64, 64) and photos.inputs.min() >= 0 and photos.inputs.max() <= 1
    assert len(set(photos.labels)) == 3
