"""Plugin passes of the ``onnx`` stage, run on the loaded float model before quantization."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import onnx

from edgesdk.errors import UserInputError
from edgesdk.frontend.model import Model, load_model
from edgesdk.plugin import passes
from edgesdk.plugin.passes import PassChoice


def apply_onnx_passes(model: Model, choices: Sequence[PassChoice]) -> Model:
    """``model`` after each ``onnx``-stage choice, in order; each result is loaded and checked like
    a user's model (it becomes the numerics reference)."""
    for choice in (choice for choice in choices if choice.stage == "onnx"):
        what = f"pass {choice.name} (plugin {choice.plugin!r})"
        result = passes.run(choice, onnx.ModelProto.FromString(model.serialized))  # a copy: ours stays as it was
        if not isinstance(result, onnx.ModelProto):
            raise UserInputError(f"{what} returned {type(result).__name__}, expected an onnx.ModelProto")
        try:
            checked = load_model(result)
        except UserInputError as exc:
            raise UserInputError(f"{what} made an invalid model: {exc}") from None
        note = f"plugin pass {choice.name} ({choice.plugin}) on the ONNX model"
        model = dataclasses.replace(
            checked, name=model.name, source_sha256=model.source_sha256, origin=model.origin, notes=[*model.notes, *checked.notes, note],
            bound_inputs=model.bound_inputs,
        )  # fmt: skip
    return model
