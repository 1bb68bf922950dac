"""How `edgesdk qat` trained a model: stored in the model it writes (ONNX metadata ``edgesdk.qat``)
and recorded by the manifest of every artifact deployed from it. No torch here: deploy reads it."""

from __future__ import annotations

import json
import logging

import onnx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

METADATA_KEY = "edgesdk.qat"

logger = logging.getLogger("edgesdk")


class TrainingOrigin(BaseModel):
    """Quantization-aware training that made the model (`edgesdk qat`)."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(description="`qat` (every weight trained, LSQ scales) or `lr-qat` (rank-R adapters inside the integer grid, merged).")
    scheme: str = Field(description="The quantization scheme trained for: int8, w4a8 or w4a16.")
    lowrank: int | None = Field(None, description="LR-QAT: the adapters' rank.")
    loss: str = Field(description="ce, mse or distill (against the float model's outputs).")
    epochs: int
    best_epoch: int = Field(description="The epoch whose state was kept (0: PTQ's, when training did not lower the loss).")
    learning_rate: float
    batch_size: int
    seed: int
    samples: int = Field(description="Training samples.")
    validation_samples: int = Field(
        description="Samples held out of training (10% of the data) that chose the epoch kept; with under 160 samples, the training samples themselves."
    )
    trainable_parameters: int
    loss_before: float = Field(description="The loss of the post-training-quantized model on the validation samples.")
    loss_after: float = Field(description="The loss of the model written, on the same samples.")


def training_origin(proto: onnx.ModelProto) -> TrainingOrigin | None:
    """What `edgesdk qat` recorded in ``proto``, if it made it (a damaged record is warned about and ignored)."""
    text = next((prop.value for prop in proto.metadata_props if prop.key == METADATA_KEY), None)
    if text is None:
        return None
    try:
        return TrainingOrigin.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        logger.warning(f"the model's {METADATA_KEY} metadata is not edgesdk's record of its training ({type(exc).__name__}): ignored")
        return None


def with_origin(proto: onnx.ModelProto, origin: TrainingOrigin) -> None:
    """Record ``origin`` in ``proto`` (replacing any earlier record)."""
    kept = [prop for prop in proto.metadata_props if prop.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.append(onnx.StringStringEntryProto(key=METADATA_KEY, value=origin.model_dump_json()))
