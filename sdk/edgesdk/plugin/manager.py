"""Finds, loads and calls plugins.

Entry points in the ``edgesdk`` group (the built-in device plugins are declared there too) are
loaded one by one, each inside ``try``: a plugin that fails to import, registers a misspelt hook
or raises in a hook is reported by name and skipped. ``EDGESDK_PLUGINS=mod_a,mod_b`` imports
extra plugin modules by dotted name; ``EDGESDK_TRACE_PLUGINS=1`` prints every hook call and its
result to stderr (pluggy's tracing).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from edgesdk.errors import UserInputError
from edgesdk.plugin import hookspecs

log = logging.getLogger("edgesdk.plugins")

ENTRY_POINT_GROUP = "edgesdk"
PLUGINS_ENV = "EDGESDK_PLUGINS"
TRACE_ENV = "EDGESDK_TRACE_PLUGINS"
_OWN_DISTRIBUTION = "edgesdk"


@dataclass(frozen=True)
class PluginInfo:
    """One plugin as ``edgesdk plugins`` shows it; ``error`` is set when it was skipped."""

    name: str
    version: str | None
    builtin: bool
    hooks: tuple[str, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "builtin": self.builtin,
            "hooks": list(self.hooks),
            "error": self.error,
        }


@dataclass
class _Loaded:
    manager: pluggy.PluginManager
    infos: list[PluginInfo] = field(default_factory=list)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _report(name: str, what: str, exc: BaseException) -> str:
    message = f"{what}: {_one_line(exc)}"
    log.warning("plugin %r skipped, %s", name, message)
    return message


def _register(loaded: _Loaded, module: object, name: str, version: str | None, builtin: bool) -> None:
    pm = loaded.manager
    try:
        pm.register(module, name=name)
        pm.check_pending()  # a hookimpl with no spec is a misspelt hook name
    except Exception as exc:
        if pm.is_registered(module):
            pm.unregister(module)
        error = _report(name, "invalid plugin", exc)
        loaded.infos.append(PluginInfo(name, version, builtin, error=error))
        return
    hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(module) or ()))
    loaded.infos.append(PluginInfo(name, version, builtin, hooks))


def _trace(outcome: pluggy.Result[Any], hook_name: str, implementations: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
    """pluggy's call monitor: each call (one plugin's, see ``collect``) and what it returned."""
    names = ",".join(impl.plugin_name for impl in implementations if not (impl.wrapper or impl.hookwrapper))
    shown = repr(outcome.get_result()) if outcome.exception is None else f"raised {_one_line(outcome.exception)}"
    print(f"edgesdk trace: {names}.{hook_name}() -> {shown}", file=sys.stderr)


@functools.cache
def _load(extra_modules: str) -> _Loaded:
    pm = pluggy.PluginManager("edgesdk")
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV):
        pm.add_hookcall_monitoring(lambda *args: None, _trace)
    loaded = _Loaded(pm)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        version = ep.dist.version if ep.dist else None
        builtin = ep.dist is not None and ep.dist.name == _OWN_DISTRIBUTION
        try:
            module = ep.load()
        except Exception as exc:
            error = _report(ep.name, "failed to import", exc)
            loaded.infos.append(PluginInfo(ep.name, version, builtin, error=error))
            continue
        _register(loaded, module, ep.name, version, builtin)
    for dotted in filter(None, (part.strip() for part in extra_modules.split(","))):
        try:
            module = importlib.import_module(dotted)
        except Exception as exc:
            error = _report(dotted, "failed to import", exc)
            loaded.infos.append(PluginInfo(dotted, None, False, error=error))
            continue
        _register(loaded, module, dotted, getattr(module, "__version__", None), False)
    return loaded


def _loaded() -> _Loaded:
    return _load(os.environ.get(PLUGINS_ENV, ""))


def reset() -> None:
    """Forget loaded plugins so the next call loads them again (for tests and long sessions)."""
    _load.cache_clear()


def manager() -> pluggy.PluginManager:
    return _loaded().manager


def plugins() -> list[PluginInfo]:
    """Every plugin found, in load order, including the ones skipped because they failed."""
    return list(_loaded().infos)


def collect(hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call ``hook_name`` through pluggy and gather ``(plugin_name, item)`` pairs.

    Each plugin's implementation is called through a pluggy hook caller that holds it alone (with
    every wrapper), in pluggy's order: tryfirst/trylast, wrappers and tracing work, and what each
    returns is known by its plugin. Registration hooks return lists; a plugin that raises, or
    returns something that is not a list, is reported by name in one line and contributes
    nothing; the others are unaffected.
    """
    pm = manager()
    implementations = [impl for impl in getattr(pm.hook, hook_name).get_hookimpls() if not (impl.wrapper or impl.hookwrapper)]
    gathered: list[tuple[str, Any]] = []
    for impl in reversed(implementations):  # pluggy calls the last of its list first
        alone = pm.subset_hook_caller(hook_name, remove_plugins=[other.plugin for other in implementations if other is not impl])
        try:
            results = alone(**kwargs)
            result = results[0] if results else None
            if result is not None and not isinstance(result, (list, tuple)):
                raise TypeError(f"returned {type(result).__name__}, expected a list")
        except Exception as exc:
            _report(impl.plugin_name, f"error in {hook_name}", exc)
            continue
        gathered.extend((impl.plugin_name, item) for item in result or ())
    return gathered


def unique(pairs: list[tuple[str, Any]], what: str, key: Callable[[Any], str]) -> dict[str, tuple[str, Any]]:
    """``(plugin, item)`` pairs by ``key(item)``; two plugins giving one key is an error naming both."""
    found: dict[str, tuple[str, Any]] = {}
    for plugin, item in pairs:
        name = key(item)
        if name in found:
            raise UserInputError(
                f"{what} {name!r} is provided by two plugins: {found[name][0]} and {plugin}",
                hint="uninstall one of them, or leave it out of EDGESDK_PLUGINS",
            )
        found[name] = (plugin, item)
    return found
