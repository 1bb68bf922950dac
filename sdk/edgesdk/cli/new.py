"""`edgesdk new`: a project or plugin from a template (a thin shell over edgesdk.verbs.new)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

import edgesdk
from edgesdk.cli.options import JsonOption, print_json
from edgesdk.cli.options import console as out_console
from edgesdk.errors import UserInputError
from edgesdk.verbs.new import parse_data, templates


def new_command(
    template: Annotated[
        str | None, typer.Argument(metavar="TEMPLATE", help="The template: app, plugin, or one a plugin adds (see --list).", show_default=False)
    ] = None,
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="The new project's or device's name, e.g. acme-npu.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", metavar="DIR", help="The directory to create (new or empty) [default: ./NAME].")] = None,
    data: Annotated[list[str] | None, typer.Option("--data", metavar="KEY=VALUE", help="Answer one of the template's questions (repeat per answer).")] = None,
    list_templates: Annotated[bool, typer.Option("--list", help="List the templates and exit.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Create a project (app) or a plugin from a template."""
    if list_templates:
        if template is not None:
            raise UserInputError("--list takes no TEMPLATE or NAME")
        _list(json_output)
        return
    if template is None or name is None:
        raise UserInputError("give a TEMPLATE and a NAME, e.g. `edgesdk new plugin acme-npu`", hint="`edgesdk new --list` lists the templates")
    path = edgesdk.new(template, name, out, parse_data(data or []))
    files = sorted(item.relative_to(path).as_posix() for item in path.rglob("*") if item.is_file())
    if json_output:
        print_json({"template": template, "name": name, "path": str(path), "files": files})
        return
    say = out_console()
    say.print(f"created {path} from the template '{template}':", markup=False, highlight=False)
    for file in files:
        say.print(f"  {file}", markup=False, highlight=False)
    if "README.md" in files:
        say.print(f"next: read {path / 'README.md'}", markup=False, highlight=False)


def _list(json_output: bool) -> None:
    offered = templates()
    if json_output:
        print_json([offer.to_json() for offer in offered])
        return
    table = Table("name", "kind", "plugin", "description", box=box.SIMPLE_HEAD)
    for offer in offered:
        table.add_row(offer.template.name, offer.template.kind, offer.plugin, offer.template.description)
    out_console().print(table)


def register(app: typer.Typer) -> None:
    app.command("new")(new_command)
