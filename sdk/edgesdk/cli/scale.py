"""`edgesdk batch`: a matrix of deploys on a process pool or Ray (a thin shell over edgesdk.verbs.batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgesdk.cli.options import AddressOption, ExecutorOption, JsonOption, ProfilesDirOption, WideOption, WorkersOption, print_json
from edgesdk.cli.options import console as out_console
from edgesdk.cli.progress import progress
from edgesdk.cli.tables import Column, print_table
from edgesdk.verbs.batch import BatchReport, MatrixRow, batch


def _cells(row: MatrixRow, wide: bool) -> list[str]:
    figures = [
        "-" if row.latency_ms is None else f"{row.latency_ms:.3g}",
        "-" if row.energy_mj is None else f"{row.energy_mj:.3g}",
        "-" if row.peak_memory_bytes is None else f"{row.peak_memory_bytes / 2**20:.2f}",
        {True: "yes", False: "NO", None: "-"}[row.fits],
        row.accuracy.short() if row.accuracy else "-",
    ]
    outcome = row.error if row.error else "ok" if row.verified else "-"
    return [row.model, row.device, row.precision, *figures, outcome if wide or len(outcome) < 60 else outcome[:57] + "..."]


def batch_command(
    matrix: Annotated[Path, typer.Argument(metavar="MATRIX.yaml", help="Models x devices x precisions, and the output directory.", show_default=False)],
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    profiles_dir: ProfilesDirOption = None,
    wide: WideOption = False,
    json_output: JsonOption = False,
) -> None:
    """Deploy every model to every device at every precision, each deploy in its own worker; rerun to resume."""
    with progress() as on_stage:
        report: BatchReport = batch(matrix, executor_name=executor, address=address, workers=workers, profiles_dir=profiles_dir, on_stage=on_stage)
    if json_output:
        print_json(report.model_dump(mode="json"))
    else:
        columns = [Column("model"), Column("device"), Column("precision"), Column("ms", numeric=True), Column("mJ", numeric=True)]
        columns += [Column("peak\nMiB", numeric=True), Column("fits"), Column("vs float"), Column("verified / error", flexible=True)]
        title = f"{report.matrix}: {len(report.rows)} deploys on {report.executor}" + (f" ({report.resumed} kept from the last run)" if report.resumed else "")
        print_table(title, columns, [_cells(row, wide) for row in report.rows], wide=wide)
        say = out_console()
        for line in report.tuning:
            say.print(f"tune: {line}", highlight=False)
        say.print(f"results: {Path(report.output) / 'results.json'}", highlight=False)
        for path in report.html:
            say.print(f"report: {path}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("batch")(batch_command)
