"""Real recurrent models shipped inside PyPI packages (an LSTM voice-activity detector and a GRU
speech enhancer), deployed through TVM to pc and phone and run chunk by chunk with their state
carried from one call to the next, against onnxruntime doing the same on the original model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgesdk
from edgesdk.frontend.reference import reference_runner
from edgesdk.testing.real_models import STREAMING_MODELS, real_model, stream

pytestmark = pytest.mark.slow
CHUNKS = 12


def _chunks(model_id: str) -> list[np.ndarray]:
    """Bursts of tone and noise with silences between, so that the state matters."""
    shape = STREAMING_MODELS[model_id].shapes[STREAMING_MODELS[model_id].chunk]
    rng = np.random.default_rng(7)
    chunks = []
    for index in range(CHUNKS):
        loud = index % 4 in (1, 2)
        base = np.sin(np.linspace(0, 40 * (index + 1), int(np.prod(shape)))) * (0.5 if loud else 0.01)
        chunks.append((base + rng.standard_normal(base.shape) * (0.1 if loud else 0.001)).astype(np.float32).reshape(shape))
    return chunks


def _ops(graph: onnx.GraphProto) -> set[str]:
    """Every op type of ``graph``, in its If/Loop branches too."""
    found = set()
    for node in graph.node:
        found.add(node.op_type)
        for attribute in node.attribute:
            for branch in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                found |= _ops(branch)
    return found


def _model(model_id: str) -> onnx.ModelProto:
    try:
        return real_model(model_id)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("device", ["pc", "phone"])
@pytest.mark.parametrize("model_id", sorted(STREAMING_MODELS))
def test_a_recurrent_model_streams_like_onnxruntime(tmp_path, model_id, device):
    entry = STREAMING_MODELS[model_id]
    model = _model(model_id)
    assert _ops(model.graph) & {"LSTM", "GRU"}  # the recurrent layer is there, as an ONNX op
    artifact = edgesdk.deploy(model, device, tmp_path / "a", input_shapes={name: list(shape) for name, shape in entry.shapes.items() if shape})
    assert artifact.manifest.verification.passed
    assert not [fallback for fallback in artifact.manifest.partition.fallbacks if fallback.to_unit == "onnxruntime"]
    chunks = _chunks(model_id)
    ours = stream(artifact.run, model_id, chunks)
    theirs = stream(reference_runner(model.SerializeToString()), model_id, chunks)
    for step, (got, want) in enumerate(zip(ours, theirs, strict=True)):
        for name, expected in want.items():
            scale = max(1.0, float(np.abs(expected).max()))
            assert np.abs(got[name] - expected).max() <= 1e-4 * scale, (step, name)
    # The state does its work: a chunk alone gives another answer than after the chunks before it.
    alone = stream(artifact.run, model_id, [chunks[4]])[0]
    assert any(not np.allclose(alone[name], ours[4][name], atol=1e-6) for name in alone)
