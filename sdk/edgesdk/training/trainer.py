"""The training loop of QAT and LR-QAT: losses, Adam with a cosine schedule, the best epoch kept,
and the peak memory of a training step as torch's memory profiler measures it.

Losses, on the model's first output:

- ``ce``: cross-entropy against integer labels (one per score vector: ``(N,)`` for a classifier,
  ``(N, T)`` for a language model's next tokens);
- ``mse``: mean squared error against float targets of the output's size;
- ``distill``: the float model's outputs are the targets (no labels): KL divergence of the
  softmax over the last axis when it holds scores, else mean squared error.

After every epoch the loss is measured on the validation samples (up to ``EVALUATION_SAMPLES``),
which training never sees, with the quantizers as they are; the best state, PTQ's (epoch 0)
included, is the one kept: QAT never hands back a model worse than PTQ on data it was not fitted to.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgesdk.errors import UserInputError
from edgesdk.progress import stage
from edgesdk.training.graph_module import GraphModule

LOSSES = ("ce", "mse", "distill")
EVALUATION_SAMPLES = 1024

logger = logging.getLogger("edgesdk")


@dataclasses.dataclass
class TrainingResult:
    losses: list[float]  # on the validation samples, per epoch, measured after it; [0] is PTQ's
    best_epoch: int
    trainable_parameters: int
    peak_memory_bytes: int
    seconds: float


def task_loss(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``kind``'s loss of a batch of first outputs against their targets (see the module docstring)."""
    batch = output.shape[0]
    if kind == "ce":
        classes = output.shape[-1]
        logits, labels = output.reshape(-1, classes), target.reshape(-1).long()
        if logits.shape[0] != labels.shape[0]:
            raise UserInputError(
                f"--labels: {target[0].numel()} label(s) per sample, but the model's first output has "
                f"{logits.shape[0] // batch} score vector(s) of {classes} per sample"
            )
        return F.cross_entropy(logits, labels)
    if kind == "distill" and output.shape[-1] > 1:
        teacher = target.reshape(-1, output.shape[-1]).float()
        return F.kl_div(F.log_softmax(output.reshape(-1, output.shape[-1]), -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")
    if output[0].numel() != target[0].numel():
        raise UserInputError(f"--labels: targets of {target[0].numel()} values per sample, but the model's first output has {output[0].numel()}")
    return F.mse_loss(output.reshape(batch, -1), target.reshape(batch, -1).float())


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.array(array)) for name, array in arrays.items()}


def _batch(inputs: Mapping[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: values[index] for name, values in inputs.items()}


def evaluate(module: GraphModule, inputs: Mapping[str, torch.Tensor], targets: torch.Tensor, kind: str, batch_size: int) -> float:
    """The mean loss over (up to ``EVALUATION_SAMPLES`` of) the samples."""
    count = min(len(targets), EVALUATION_SAMPLES)
    total = 0.0
    with torch.no_grad():
        for index in torch.arange(count).split(batch_size):
            total += float(task_loss(kind, module(_batch(inputs, index))[0], targets[index])) * len(index)
    return total / count


@contextlib.contextmanager
def _stderr_to_log() -> Iterator[None]:
    """The profiler's C++ side prints its start, stop and allocator notes to file descriptor 2: to the debug log instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                logger.debug(f"torch profiler: {line}")


def measured_peak(step) -> int:
    """Peak bytes of memory in use during ``step()`` (parameters, gradients, optimizer state,
    activations and temporaries), from torch's memory profiler timeline."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with _stderr_to_log(), torch.profiler.profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as profiler:
        step()
    with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings():
        # Deprecated for CUDA's snapshots, which do not see CPU memory: this is torch's CPU timeline.
        warnings.simplefilter("ignore", FutureWarning)
        path = Path(directory) / "timeline.json"
        profiler.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    return int(max((sum(sample) for sample in sizes), default=0))


def train(
    module: GraphModule,
    inputs: Mapping[str, np.ndarray],
    targets: np.ndarray,
    validation: tuple[Mapping[str, np.ndarray], np.ndarray],
    *,
    loss: str,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> TrainingResult:
    """Train ``module``'s trainable parameters on ``inputs`` (per input, samples stacked on the
    first axis) against ``targets``; the state of the epoch best on ``validation`` (inputs,
    targets) is left in ``module``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    tensors, wanted = _tensors(inputs), torch.from_numpy(np.array(targets))
    held_inputs, held_targets = _tensors(validation[0]), torch.from_numpy(np.array(validation[1]))
    samples = len(wanted)
    parameters = module.trainable()
    optimizer = torch.optim.Adam(parameters, lr=lr)
    batches = math.ceil(samples / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs * batches, 1))
    started = time.perf_counter()
    losses = [evaluate(module, held_inputs, held_targets, loss, batch_size)]
    best, best_state = losses[0], copy.deepcopy(module.state_dict())
    peak = 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(samples, generator=generator)
        for number, index in enumerate(order.split(batch_size), 1):

            def step(index=index) -> float:
                optimizer.zero_grad(set_to_none=True)
                value = task_loss(loss, module(_batch(tensors, index))[0], wanted[index])
                value.backward()
                optimizer.step()
                schedule.step()
                return value.item()

            # The second step is measured: Adam's state exists by then, as in every later step.
            measure = not peak and (epoch - 1) * batches + number == min(2, epochs * batches)
            if measure:
                peak = measured_peak(step)
            else:
                value = step()
                stage(f"epoch {epoch}/{epochs} step {number}/{batches}, loss {value:.4f}")
        losses.append(evaluate(module, held_inputs, held_targets, loss, batch_size))
        stage(f"epoch {epoch}/{epochs} validation loss {losses[-1]:.4f}")
        if losses[-1] < best:
            best, best_state = losses[-1], copy.deepcopy(module.state_dict())
    module.load_state_dict(best_state)
    return TrainingResult(
        losses=losses,
        best_epoch=losses.index(best),
        trainable_parameters=sum(parameter.numel() for parameter in parameters),
        peak_memory_bytes=peak,
        seconds=time.perf_counter() - started,
    )
