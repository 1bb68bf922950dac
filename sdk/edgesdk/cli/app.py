"""The ``edgesdk`` command line: parse, make one API call, render (rich) or print JSON.

The app is built by `make_app()` (plugin commands are added there, never at import). `main()`
turns every expected failure into one ``error:`` line on stderr with exit 2 (bad input) or 1 (a
check failed); ``--debug`` (or ``EDGESDK_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

import edgesdk
from edgesdk.cli import commands as cli_deploy
from edgesdk.cli import new as cli_new
from edgesdk.cli import scale as cli_scale
from edgesdk.cli import training as cli_training
from edgesdk.cli.options import QUIET, JsonOption, ProfilesDirOption, print_json
from edgesdk.cli.options import console as out_console
from edgesdk.cli.tables import Column, print_table
from edgesdk.devices.profile import DeviceProfile
from edgesdk.devices.registry import device_summary
from edgesdk.errors import EdgeSDKError
from edgesdk.plugin import manager as plugin_manager
from edgesdk.versions import tvm_version


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"edgesdk {edgesdk.__version__} (apache-tvm {tvm_version() or 'not installed'})")
        raise typer.Exit()


def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Show versions and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors and --json output: no progress, no tables.")] = False,
) -> None:
    """edgesdk: deploy one ONNX model to many devices through Apache TVM."""
    QUIET.set(quiet)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


def _binary_size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _units_text(profile: DeviceProfile) -> str:
    lines = []
    for name, unit in profile.compute_units.items():
        dtype, peak = max(unit.peak_ops_per_s.items(), key=lambda item: item[1])
        rate = f"{peak / 1e12:.3g}T" if peak >= 1e11 else f"{peak / 1e9:.3g}G"
        lines.append(f"{name} {rate} {dtype}, {_binary_size(unit.on_chip_memory_bytes)}")
    return "\n".join(lines)


def _target_text(target: dict[str, Any]) -> str:
    return target.get("mcpu") or target.get("mtriple", "").split("-")[0] or target["kind"]


def devices_command(
    json_output: JsonOption = False,
    schema: Annotated[bool, typer.Option("--schema", help="Print the profile JSON Schema and exit.")] = False,
    profiles_dir: ProfilesDirOption = None,
) -> None:
    """List the devices you can deploy to."""
    if schema:
        print_json(DeviceProfile.model_json_schema())
        return
    profiles = edgesdk.devices(profiles_dir)
    if json_output:
        print_json([device_summary(profile) for profile in profiles])
        return
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True)
    table.add_column("units: peak ops/s, on-chip", no_wrap=True)
    table.add_column("DRAM", no_wrap=True)
    table.add_column("target", no_wrap=True)
    table.add_column("plugin")
    for profile in profiles:
        table.add_row(
            profile.id,
            _units_text(profile),
            _binary_size(profile.memory.dram_bytes),
            _target_text(profile.target),
            profile.source.plugin if profile.source else "",
        )
    out_console().print(table)


def plugins_command(json_output: JsonOption = False) -> None:
    """List the plugins edgesdk found, and any it had to skip."""
    infos = edgesdk.plugins()
    if json_output:
        print_json([info.to_json() for info in infos])
        return
    table = Table("name", "version", "builtin", "hooks", "error")
    for info in infos:
        table.add_row(info.name, info.version or "", "yes" if info.builtin else "no", ", ".join(info.hooks), info.error or "")
    out_console().print(table)


def doctor_command(json_output: JsonOption = False, profiles_dir: ProfilesDirOption = None) -> None:
    """What this machine has for edgesdk: optional tools, the cache, where each device's figures come from."""
    report = edgesdk.doctor(profiles_dir)
    if json_output:
        print_json(report.model_dump(mode="json"))
        return
    console = out_console()
    console.print(f"edgesdk {report.edgesdk}, apache-tvm {report.tvm or 'not installed'}, Python {report.python} on {report.platform}", highlight=False)
    rows = [[tool.name, (tool.version or "found") if tool.found else f"missing: {tool.install}", tool.purpose] for tool in report.tools]
    print_table("optional tools", [Column("tool"), Column("version"), Column("for", flexible=True)], rows, console=console)
    cache = report.cache
    console.print(f"cache: {cache.path}, {_binary_size(cache.bytes)} in {cache.files} files (EDGESDK_CACHE_DIR moves it)", highlight=False)
    rows = [[device.device, device.figures, device.source] for device in report.devices]
    print_table("cost figures", [Column("device"), Column("figures"), Column("from", flexible=True)], rows, console=console)


def make_app() -> typer.Typer:
    app = typer.Typer(
        name="edgesdk",
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    app.callback(invoke_without_command=True)(_root)
    app.command("devices")(devices_command)
    app.command("plugins")(plugins_command)
    app.command("doctor")(doctor_command)
    cli_deploy.register(app)
    cli_new.register(app)
    cli_scale.register(app)
    cli_training.register(app)
    plugin_manager.collect("edgesdk_register_commands", app=app)
    return app


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("warning: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _route_warnings_to_stderr() -> None:
    logger = logging.getLogger("edgesdk")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        logger.addHandler(_StderrHandler())


def _fail(message: str, hint: str | None = None) -> None:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0 ok, 1 a check failed, 2 bad input or usage."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or bool(os.environ.get("EDGESDK_DEBUG"))
    QUIET.set(False)  # until the root command reads --quiet
    _route_warnings_to_stderr()
    try:
        command = typer.main.get_command(make_app())
        result = command.main(args=args, prog_name="edgesdk", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.TyperException as exc:  # a usage error found while parsing arguments
        ctx = getattr(exc, "ctx", None)
        _fail(exc.format_message(), f"see `{ctx.command_path if ctx else 'edgesdk'} --help`")
        return 2
    except typer.Abort:
        _fail("aborted")
        return 130
    except EdgeSDKError as exc:
        if debug:
            traceback.print_exc()
        _fail(exc.message, exc.hint)
        return exc.exit_code
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _fail(f"internal error: {type(exc).__name__}: {exc}", "this is a bug in edgesdk or a plugin; rerun with --debug for the traceback")
        return 1
