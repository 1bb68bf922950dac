"""`edgesdk qat`: quantization-aware training (a thin shell over edgesdk.verbs.qat)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgesdk.cli.options import InputShapeOption, JsonOption, input_shapes, print_json, with_quantize_options
from edgesdk.cli.options import console as out_console
from edgesdk.cli.progress import progress
from edgesdk.verbs.qat import SCHEMES, qat


def qat_command(
    model: Annotated[Path, typer.Argument(help="The float ONNX model file.", show_default=False)],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Training samples (.npz: per model input, N samples stacked on a new first axis; and the --labels array). "
            "The first 256 also calibrate PTQ's ranges.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="The trained quantized model to write (*.onnx); its encodings go beside it.", show_default=False)],
    scheme: Annotated[str, typer.Option("--scheme", help=f"What to train for: {', '.join(SCHEMES)}.")] = "int8",
    labels: Annotated[str | None, typer.Option("--labels", help="The --data array of targets (ce: integer classes; mse: float values).")] = None,
    loss: Annotated[
        str | None, typer.Option("--loss", help="ce, mse, or distill (the float model's outputs are the targets) [default: ce with --labels, else distill].")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the data.")] = 5,
    lr: Annotated[
        float, typer.Option("--lr", help="Adam's learning rate (cosine-annealed): weights move in units of their grid step, scales relatively.")
    ] = 3e-3,
    lowrank: Annotated[
        int | None, typer.Option("--lowrank", metavar="R", help="LR-QAT: train rank-R adapters inside the integer grid instead of every weight.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per step.")] = 32,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the sample order and the adapters' start: the same seed, the same model.")] = 0,
    input_shape: InputShapeOption = None,
    json_output: JsonOption = False,
    *,
    quantize_options: dict[str, Any],  # always given, by with_quantize_options
) -> None:
    """Quantization-aware training: fine-tune a quantized model with its quantizers in the loop (or LR-QAT)."""
    with progress() as on_stage:
        report = qat(
            model, data, out, scheme=scheme, labels=labels, loss=loss, epochs=epochs, lr=lr, lowrank=lowrank, batch_size=batch_size,
            seed=seed, input_shapes=input_shapes(input_shape), on_stage=on_stage, **quantize_options,
        )  # fmt: skip
    if json_output:
        print_json(report.model_dump(mode="json"))
        return
    trained = report.training
    say = out_console()
    how = f"LR-QAT rank {trained.lowrank}" if trained.lowrank else "QAT"
    say.print(f"{report.output}: {trained.scheme} {how}, {trained.epochs} epochs on {trained.samples} samples ({report.seconds:.1f} s)", highlight=False)
    epochs_text = " -> ".join(f"{value:.4g}" for value in report.losses)
    say.print(
        f"{trained.loss} loss on {trained.validation_samples} validation samples by epoch (0: PTQ): {epochs_text}; kept epoch {trained.best_epoch}",
        highlight=False,
    )
    say.print(f"trainable parameters {trained.trainable_parameters:,}; peak training memory {report.peak_memory_bytes / 2**20:.2f} MiB", highlight=False)
    say.print(f"vs float: PTQ {report.ptq_accuracy.short()}; trained {report.accuracy.short()}", highlight=False)
    say.print(f"encodings: {report.encodings}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("qat")(with_quantize_options(qat_command))
