"""`edgesdk qat`: quantization-aware training, for when post-training quantization loses too much.

The model is quantized as `edgesdk quantize` does (the PTQ model: QDQ for int8/w4a8, blocked int4
weights for w4a16), then trained in torch with its quantizers in the loop, starting from PTQ's
ranges and integers (edgesdk.training), and written back into that same model: the integers,
scales and biases change, the graph does not. So `edgesdk deploy` consumes it as it consumes any
quantized model, with no `--quantize`, and records in its manifest that it came from QAT.

``--lowrank R`` is LR-QAT: the PTQ integers frozen (stored as int8), rank-R adapters trained
inside the integer grid and merged into it at the end.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgesdk.errors import InternalError, UserInputError, our_step
from edgesdk.frontend.agreement import cosine
from edgesdk.frontend.reference import reference_runner
from edgesdk.frontend.tensors import load_npz
from edgesdk.progress import Listener, reporting, stage
from edgesdk.quantization.accuracy import Accuracy, measure_agreement
from edgesdk.quantization.ptq import calibration_samples
from edgesdk.quantization.recipe import recipe
from edgesdk.quantization.schemes import quantized_model
from edgesdk.training.origin import TrainingOrigin
from edgesdk.verbs.pipeline import checked_options
from edgesdk.verbs.quantize import check_output, encodings_path, users_graph, write_quantized

SCHEMES = ("int8", "w4a8", "w4a16")
TRAIN_EXTRA = "pip install 'edgesdk[train]'"
CALIBRATION_SAMPLES = 256  # PTQ's ranges come from the first samples, as `quantize --calibration` would
AGREEMENT_SAMPLES = 64  # samples the PTQ and QAT models are compared with the float model on
EXPORT_CHECK_SAMPLES = 8
VALIDATION_SHARE = 0.1  # of --data: never trained on; the epoch kept is the best on them
MIN_VALIDATION = 16


class QatReport(BaseModel):
    """What `edgesdk qat --json` prints."""

    model_config = ConfigDict(extra="forbid")

    model: str
    output: str
    encodings: str
    training: TrainingOrigin
    losses: list[float] = Field(description="The loss on the validation samples after each epoch; [0] is the PTQ model's.")
    peak_memory_bytes: int = Field(description="Peak memory of one training step (weights, gradients, optimizer state, activations), torch's profiler.")
    seconds: float = Field(description="Training time, evaluations included.")
    ptq_accuracy: Accuracy = Field(description="The PTQ model against the float model, on the first samples.")
    accuracy: Accuracy = Field(description="The written model against the float model, on the same samples.")


def _stacked(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.stack([sample[name] for sample in samples]) for name in samples[0]}


def _split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and the validation samples: a seeded ``VALIDATION_SHARE`` of them
    choose the epoch kept (all of them, training included, when there are too few to spare)."""
    order = np.random.default_rng(seed).permutation(count)
    held = int(count * VALIDATION_SHARE)
    if held < MIN_VALIDATION:
        return order, order
    return np.sort(order[held:]), np.sort(order[:held])


def _take(arrays: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {name: array[index] for name, array in arrays.items()}


def _targets(loss: str, labels: np.ndarray | None, float_bytes: bytes, samples: list[dict[str, np.ndarray]]) -> np.ndarray:
    if loss != "distill":
        assert labels is not None
        return labels
    stage("distill: the float model's outputs")
    run = reference_runner(float_bytes)
    return np.stack([next(iter(run(sample).values())) for sample in samples]).astype(np.float32)


def _checked_arguments(scheme: str, loss: str | None, labels: str | None, epochs: int, lr: float, lowrank: int | None, batch_size: int) -> str:
    if importlib.util.find_spec("torch") is None:
        raise UserInputError("qat needs torch (training runs in it)", hint=TRAIN_EXTRA)
    if scheme not in SCHEMES:
        raise UserInputError(f"--scheme {scheme}: qat trains {', '.join(SCHEMES)}", hint="use --scheme w4a8")
    loss = loss or ("ce" if labels else "distill")
    if loss not in ("ce", "mse", "distill"):
        raise UserInputError(f"--loss {loss}: unknown", hint="losses: ce, mse, distill")
    if loss in ("ce", "mse") and not labels:
        raise UserInputError(f"--loss {loss} needs --labels KEY: the array of targets in the --data file", hint="or --loss distill (no labels)")
    if epochs < 1 or batch_size < 1 or not lr > 0 or not math.isfinite(lr):
        raise UserInputError("--epochs and --batch-size must be at least 1, --lr a positive number")
    if lowrank is not None and lowrank < 1:
        raise UserInputError(f"--lowrank {lowrank}: the adapters' rank must be at least 1")
    return loss


def qat(
    source,
    data,
    out,
    *,
    scheme: str = "int8",
    labels: str | None = None,
    loss: str | None = None,
    epochs: int = 5,
    lr: float = 3e-3,
    lowrank: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    input_shapes=None,
    on_stage: Listener | None = None,
    **quantize_options,
) -> QatReport:
    """The Python face of `edgesdk qat`: ``source`` a model path or proto; ``data`` an .npz path or a
    mapping holding, per model input, N samples stacked on a new first axis, and the ``labels``
    array (ce: integer classes, one per score vector of the first output; mse: float targets);
    ``loss`` ce, mse or distill (default: ce with labels, else distill); ``lowrank`` R for LR-QAT;
    ``quantize_options`` as `edgesdk quantize` takes them (range_method, group_size, ...)."""
    loss = _checked_arguments(scheme, loss, labels, epochs, lr, lowrank, batch_size)
    out = Path(out)
    check_output(out)
    arrays = dict(load_npz(data) if not isinstance(data, Mapping) else data)
    origin = "--data" if isinstance(data, Mapping) else str(data)
    targets = arrays.pop(labels, None) if labels else None
    if labels and targets is None:
        raise UserInputError(f"--labels {labels}: {origin} has no such array", hint=f"its arrays: {', '.join(sorted(arrays)) or 'none'}")
    recipe_options, _ = checked_options(quantize_options, "qat")
    calibration = {name: array[:CALIBRATION_SAMPLES] for name, array in arrays.items()}
    chosen = recipe(scheme, calibration, None, **recipe_options)

    from edgesdk.training.export import exported
    from edgesdk.training.graph_module import GraphModule
    from edgesdk.training.trainer import train

    with reporting(on_stage):
        loaded, model = users_graph(source, input_shapes, calibration, scheme)
        stage("quantize (PTQ)")
        with our_step("quantize", loaded.original.where):
            ptq = quantized_model(model, chosen, loaded.samples)
        samples = calibration_samples(arrays, loaded.original.inputs, origin)
        if targets is not None and len(targets) != len(samples):
            raise UserInputError(f"--labels {labels}: {len(targets)} targets for {len(samples)} samples")
        float_bytes = loaded.original.serialized
        wanted = _targets(loss, targets, float_bytes, samples)
        with our_step("qat", loaded.original.where):
            module = GraphModule(ptq.proto, rank=lowrank, seed=seed)
        stage("train")
        training, validation = _split(len(samples), seed)
        stacked = _stacked(samples)
        result = train(
            module, _take(stacked, training), wanted[training], (_take(stacked, validation), wanted[validation]),
            loss=loss, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
        )  # fmt: skip
        trained = TrainingOrigin(
            method="lr-qat" if lowrank else "qat",
            scheme=scheme,
            lowrank=lowrank,
            loss=loss,
            epochs=epochs,
            best_epoch=result.best_epoch,
            learning_rate=lr,
            batch_size=batch_size,
            seed=seed,
            samples=len(training),
            validation_samples=len(validation),
            trainable_parameters=result.trainable_parameters,
            loss_before=result.losses[0],
            loss_after=min(result.losses),
        )
        with our_step("qat", loaded.original.where):
            proto = exported(module, trained)
            written = proto.SerializeToString()
            _check_export(module, written, samples[:EXPORT_CHECK_SAMPLES])
        stage("measure")
        compared = samples[:AGREEMENT_SAMPLES]
        ptq_accuracy = measure_agreement(ptq.serialized, float_bytes, compared)
        accuracy = measure_agreement(written, float_bytes, compared)
        write_quantized(proto, out)
    return QatReport(
        model=loaded.original.name,
        output=str(out),
        encodings=str(encodings_path(out)),
        training=trained,
        losses=result.losses,
        peak_memory_bytes=result.peak_memory_bytes,
        seconds=round(result.seconds, 3),
        ptq_accuracy=ptq_accuracy,
        accuracy=accuracy,
    )


def _check_export(module, exported_bytes: bytes, samples: list[dict[str, np.ndarray]]) -> None:
    """onnxruntime on the written model must compute what the trained module computes."""
    import torch

    run = reference_runner(exported_bytes)
    with torch.no_grad():
        trained = module({name: torch.from_numpy(values) for name, values in _stacked(samples).items()})[0].numpy()
    written = np.stack([next(iter(run(sample).values())) for sample in samples])
    agreement = cosine(written, trained)
    if agreement < 0.999:
        raise InternalError(f"qat: the written model's outputs differ from the trained model's (cosine {agreement:.5f})")
