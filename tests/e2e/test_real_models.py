"""Pretrained models we did not write, exported by other tools, shipped inside PyPI packages.

`make test` fetches the pinned wheels (no dependencies) into .venv/test-models at set-up; the
models are read from the wheel zips. Each has dynamic dims to bind and, except the PP-OCR
detector, reshapes computed in-graph from Shape (Paddle2ONNX and PyTorch exporters).
"""

import zipfile
from pathlib import Path

import onnx
import pytest

import edgesdk
from edgesdk.model import load_model

pytestmark = pytest.mark.slow

WHEELS = Path(__file__).resolve().parents[2] / ".venv" / "test-models"

# id -> (wheel file, member, input shapes to bind)
REAL_MODELS = {
    # PaddleOCR PP-OCRv4 text detector (Paddle2ONNX, opset 12): DBNet on a MobileNetV3 backbone.
    "ppocr_v4_det": ("rapidocr_onnxruntime-1.4.4-py3-none-any.whl", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", {"x": [1, 3, 96, 96]}),
    # PP-OCRv4 text recognizer (opset 12): SVTR neck with attention; reshapes from Shape.
    "ppocr_v4_rec": ("rapidocr_onnxruntime-1.4.4-py3-none-any.whl", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", {"x": [1, 3, 48, 160]}),
    # PP-OCR v2 text-direction classifier (opset 11): Shape -> Slice -> Concat -> Reshape.
    "ppocr_cls": ("rapidocr_onnxruntime-1.4.4-py3-none-any.whl", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": [1, 3, 48, 192]}),
    # NudeNet detector: YOLOv8n exported by PyTorch 2.3.1 (opset 17); Shape -> Gather -> Range/Reshape/Expand.
    "nudenet_yolov8n": ("nudenet-3.4.2-py3-none-any.whl", "nudenet/320n.onnx", {"images": [1, 3, 160, 160]}),
}


def real_model(model_id: str) -> onnx.ModelProto:
    wheel, member, _ = REAL_MODELS[model_id]
    path = WHEELS / wheel
    if not path.is_file():
        pytest.fail(f"{path} is missing: `make setup`/`make test` downloads the test wheels")
    with zipfile.ZipFile(path) as archive:
        proto = onnx.load_from_string(archive.read(member))
    proto.graph.name = model_id
    return proto


@pytest.mark.parametrize("model_id", list(REAL_MODELS))
def test_real_model_needs_its_shapes_then_folds_to_static(model_id):
    source = real_model(model_id)
    shapes = REAL_MODELS[model_id][2]
    with pytest.raises(edgesdk.UserInputError, match=f"input '{next(iter(shapes))}' has dynamic dimensions"):
        load_model(source)
    model = load_model(source, shapes)
    assert 11 <= model.opset <= 17
    assert sum(node.op_type == "Shape" for node in model.proto.graph.node) == 0
    for value in [*model.proto.graph.value_info, *model.proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert all(dim.HasField("dim_value") for dim in dims), f"{value.name} is not static"


@pytest.mark.parametrize("device", ["xr-headset", "pc"])
@pytest.mark.parametrize("model_id", list(REAL_MODELS))
def test_real_model_deploys_and_verifies(model_id, device, tmp_path):
    artifact = edgesdk.deploy(real_model(model_id), device, tmp_path / "a", input_shapes=REAL_MODELS[model_id][2])
    check = artifact.manifest.verification
    assert check.passed, check
    assert all(output.max_abs_err <= output.tolerance for output in check.outputs)
