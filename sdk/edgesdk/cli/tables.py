"""Tables that fit the terminal: every column at its natural width except one flexible text
column (a kernel's name, a list of units), which takes what is left and ends in an ellipsis when
it must. No cell wraps and no number is cut: a table whose fixed columns alone are wider than the
terminal is printed wider (the terminal wraps the line, not the cell). ``wide``: every column
whole. Key/value summaries (``print_fields``) are lines, not a table: a long value (a path, a
hint) stays one line for the terminal to wrap and a mouse to copy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgesdk.cli.options import console as out_console

MIN_FLEXIBLE = 10


@dataclass(frozen=True)
class Column:
    header: str  # a newline splits it over two lines, so a narrow column can have a long name
    numeric: bool = False
    flexible: bool = False


def print_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]], *, wide: bool = False, console: Console | None = None) -> None:
    console = console or out_console()
    natural = [
        max((len(line) for text in (column.header, *(row[index] for row in rows)) for line in text.split("\n")), default=0)
        for index, column in enumerate(columns)
    ]
    fixed = sum(width for width, column in zip(natural, columns, strict=True) if not column.flexible) + len(columns) - 1  # one space between columns
    widths = [
        width if wide or not column.flexible else max(min(width, console.width - fixed), min(width, MIN_FLEXIBLE))
        for width, column in zip(natural, columns, strict=True)
    ]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=0, title=title, title_justify="left")
    for width, column in zip(widths, columns, strict=True):
        table.add_column(column.header, justify="right" if column.numeric else "left", no_wrap=True, overflow="ellipsis", min_width=width, max_width=width)
    for row in rows:
        table.add_row(*row)
    total = sum(widths) + len(columns) - 1
    (console if total <= console.width else Console(width=total, file=console.file, quiet=console.quiet)).print(table)


def print_fields(title: str, fields: Sequence[tuple[str, str]], *, console: Console | None = None) -> None:
    """``title``, then each ``(key, value)`` as "  key  value", keys in a column of their own; a
    value's own newlines continue under it."""
    console = console or out_console()
    width = max((len(key) for key, _ in fields), default=0) + 2
    console.print(Text(title, style="italic"))
    for key, value in fields:
        for number, line in enumerate(value.split("\n")):
            console.print(Text.assemble(("  " + (key if number == 0 else "").ljust(width), "bold"), line), soft_wrap=True)
