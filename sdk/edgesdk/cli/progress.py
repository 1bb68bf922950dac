"""The progress display on stderr: a spinner naming the current stage, a bar for counted stages."""

from __future__ import annotations

import contextlib

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from edgesdk.cli.options import QUIET
from edgesdk.progress import COUNTED, WITHIN


class _CountBar(ProgressColumn):
    """A bar only while a counted stage runs; a spinner alone says enough otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.bar = BarColumn()

    def render(self, task: Task) -> RenderableType:
        return self.bar.render(task) if task.total else Text("")


@contextlib.contextmanager
def progress():
    """A spinner on stderr naming the current stage, with a bar for counted stages ("AdaRound
    3/12 conv1": edgesdk.progress); silent when stderr is not a terminal or with --quiet."""
    console = Console(stderr=True)
    if not console.is_terminal or QUIET.get():
        yield lambda stage: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), _CountBar(), TextColumn("{task.fields[count]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=None, count="")

        def on_stage(stage: str) -> None:
            # The bar follows the outermost counted step; steps within it are named after it.
            parts, bar, words = stage.split(WITHIN), None, []
            for part in parts:
                match = COUNTED.fullmatch(part)
                if match and bar is None:
                    bar = match
                    words.append(f"{match['what']}: {match['item']}" if match["item"] else match["what"])
                else:
                    words.append(part)
            if bar:
                done, total = int(bar["done"]), int(bar["total"])
                progress.update(task, description=WITHIN.join(words), completed=done - 1, total=total, count=f"{done}/{total}")
            else:
                progress.update(task, description=stage, completed=0, total=None, count="")

        yield on_stage
