"""The plugin contract: every hook a plugin may implement.

Plugins are found through the entry-point group ``edgesdk`` (built-in plugins too) and through
the ``EDGESDK_PLUGINS`` environment variable. Mark implementations with ``edgesdk.hookimpl``.
Hooks are always called with keyword arguments, so an implementation may accept a subset of a
spec's arguments and specs can grow new arguments without breaking plugins.

Registration hooks return lists; each plugin's implementation is called on its own, so a plugin
that raises is reported by name and skipped while the others keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import os
    from importlib.resources.abc import Traversable

    import typer

    from edgesdk.devices.profile import DeviceProfile
    from edgesdk.plugin.kinds import Backend, Pass, Template

__all__ = [
    "hookimpl",
    "hookspec",
    "edgesdk_device_profiles",
    "edgesdk_backends",
    "edgesdk_passes",
    "edgesdk_templates",
    "edgesdk_register_commands",
]

hookspec = pluggy.HookspecMarker("edgesdk")
hookimpl = pluggy.HookimplMarker("edgesdk")

# A spec declares a hook's signature and its implementations' return type; pluggy never calls its body.


@hookspec
def edgesdk_device_profiles() -> list[DeviceProfile | os.PathLike | str | Traversable]:  # type: ignore[empty-body]
    """Devices this plugin contributes: validated profiles, or paths of profile YAML files.

    Called whenever the device list is built (``edgesdk devices``, any ``--device`` lookup).
    A YAML file may ``extends:`` a profile of another plugin.
    """


@hookspec
def edgesdk_backends() -> list[Backend]:  # type: ignore[empty-body]
    """Lowering backends: which devices each serves and the choices it makes for them.

    Called when a model is deployed to a device, to find the backend that serves its profile.
    """


@hookspec
def edgesdk_passes() -> list[Pass]:  # type: ignore[empty-body]
    """Optimization or quantization passes, each configured by a pydantic model.

    Called when the optimization pipeline is assembled for a deploy.
    """


@hookspec
def edgesdk_templates() -> list[Template]:  # type: ignore[empty-body]
    """Project or plugin scaffolds offered by ``edgesdk new``.

    Called when ``edgesdk new`` lists or renders templates.
    """


@hookspec
def edgesdk_register_commands(app: typer.Typer) -> None:
    """Add subcommands to the ``edgesdk`` command-line app.

    Called once when the CLI app is built, after the built-in commands are registered.
    """
