"""The matrix file: what it accepts, what it refuses (one line each), and where its paths point."""

from __future__ import annotations

import pytest
import yaml

from edgesdk.errors import UserInputError
from edgesdk.verbs.batch import _tasks, load_matrix


@pytest.fixture
def files(tmp_path):
    for name in ("a.onnx", "b.onnx", "a.npz"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def write(directory, data) -> str:
    path = directory / "matrix.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def test_paths_are_relative_to_the_matrix_file_and_every_cell_is_a_task(files):
    models = [{"path": "a.onnx", "calibration": "a.npz"}, {"path": "b.onnx", "name": "bee"}]
    matrix = load_matrix(write(files, {"models": models, "devices": ["pc", "mcu"], "precisions": ["none", "int8", "none"], "output": "out"}))
    assert matrix.models[0].path == files / "a.onnx" and matrix.models[0].calibration == files / "a.npz"
    assert matrix.output == files / "out" and [model.label for model in matrix.models] == ["a", "bee"]
    tasks = _tasks(matrix, None)
    assert [(task.model.label, task.device, task.precision) for task in tasks] == [
        (model, device, precision) for model in ("a", "bee") for device in ("pc", "mcu") for precision in ("none", "int8")
    ]
    assert tasks[1].out == files / "out" / "a" / "pc-int8" and tasks[1].calibration() == files / "a.npz" and tasks[0].calibration() is None
    assert len({task.key for task in tasks}) == len(tasks)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("models: [", "not valid YAML"),
        ({"models": []}, "models: List should have at least 1 item"),
        ({"models": [{"path": "a.onnx"}], "device": ["pc"]}, "device: Extra inputs are not permitted"),
        ({"models": [{"path": "missing.onnx"}]}, "models: missing: path missing.onnx: no such file"),
        ({"models": [{"path": "a.onnx"}, {"path": "a.onnx"}]}, "two models are called a: give one a `name`"),
        ({"models": [{"path": "a.onnx", "name": "../escape"}]}, "models.0.name: String should match pattern"),
        ({"models": [{"path": "a.onnx"}], "tune": {"trials": 0}}, "tune.trials: Input should be greater than or equal to 1"),
    ],
)
def test_a_bad_matrix_is_one_line_naming_the_field(files, data, message):
    with pytest.raises(UserInputError) as raised:
        load_matrix(write(files, data))
    assert message in raised.value.message and "\n" not in raised.value.message


def test_unknown_devices_and_options_are_refused_before_any_work(files):
    with pytest.raises(UserInputError, match="nope"):
        _tasks(load_matrix(write(files, {"models": [{"path": "a.onnx"}], "devices": ["nope"]})), None)
    with pytest.raises(UserInputError, match="unknown option"):
        _tasks(load_matrix(write(files, {"models": [{"path": "a.onnx"}], "options": {"colour": "red"}})), None)
