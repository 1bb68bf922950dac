"""`edgesdk new`: a new project or plugin, rendered from a template a plugin serves.

Templates come from the ``edgesdk_templates`` hook (edgesdk's own ``app`` and ``plugin`` too, from
its built-in ``templates`` plugin). Each is a copier template: a directory with a ``copier.yml``.
Rendering asks nothing: NAME answers the ``name`` question, ``data`` answers others by key, every
other question takes its default. No template tasks, migrations or Jinja extensions run
(copier's ``unsafe=False``), no git is needed, and nothing is printed. The project is rendered
beside its destination and renamed into place, into a new or empty directory only: a user's
files are never overwritten, and a failed render leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgesdk.errors import InternalError, UserInputError
from edgesdk.plugin import manager as plugin_manager
from edgesdk.plugin.kinds import Template

log = logging.getLogger("edgesdk.new")

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONFIG_FILES = ("copier.yml", "copier.yaml")


@dataclass(frozen=True)
class OfferedTemplate:
    """A template and the plugin that serves it."""

    plugin: str
    template: Template

    def to_json(self) -> dict[str, Any]:
        return {**self.template.model_dump(mode="json"), "plugin": self.plugin}


def templates() -> list[OfferedTemplate]:
    """Every template the plugins serve, by name. Two plugins serving one name is an error naming both."""
    offered: dict[str, OfferedTemplate] = {}
    for plugin, item in plugin_manager.collect("edgesdk_templates"):
        if not isinstance(item, Template):
            log.warning("plugin %r: edgesdk_templates returned a %s, not an edgesdk.Template; skipped", plugin, type(item).__name__)
            continue
        if (first := offered.get(item.name)) is not None:
            both = sorted((first.plugin, plugin))
            by = f"twice by plugin '{plugin}'" if first.plugin == plugin else f"by two plugins, '{both[0]}' and '{both[1]}'"
            raise UserInputError(f"template '{item.name}' is served {by}", hint="uninstall one of them (`edgesdk plugins` lists them)")
        offered[item.name] = OfferedTemplate(plugin, item)
    return sorted(offered.values(), key=lambda offer: offer.template.name)


def parse_data(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (``--data``) as a dict; the value may hold ``=``."""
    data: dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not _KEY_PATTERN.match(key):
            raise UserInputError(f"--data {item!r}: expected KEY=VALUE, KEY one of the template's questions")
        if key in data:
            raise UserInputError(f"--data {key}: given twice")
        data[key] = value
    return data


def new(template: str, name: str, out: str | os.PathLike | None = None, data: Mapping[str, Any] | None = None) -> Path:
    """Render ``template`` (a name from ``templates()``: ``app``, ``plugin``, or a plugin's) as ``name``
    into ``out`` (default ``./name``), a new or empty directory; ``data`` answers the template's
    questions by key. Returns the project directory (absolute)."""
    if not NAME_PATTERN.match(name):
        raise UserInputError(f"name {name!r}: use lowercase letters and digits, words joined by single hyphens (e.g. acme-npu)")
    offered = {offer.template.name: offer for offer in templates()}
    if template not in offered:
        raise UserInputError(f"unknown template {template!r}", hint=f"the templates are: {', '.join(offered) or 'none'} (`edgesdk new --list`)")
    offer = offered[template]
    answers = {"name": name, **_checked_data(offer, data or {})}
    destination = Path(out if out is not None else name).absolute()
    _check_destination(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _render(offer, staging, answers)
        if destination.exists():
            destination.rmdir()  # empty, checked above; a file written there since makes this fail
        staging.rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def _questions(offer: OfferedTemplate) -> tuple[set[str], bool]:
    """The questions of a copier template, and whether that list is complete (no ``!include``)."""
    config = next((offer.template.path / name for name in _CONFIG_FILES if (offer.template.path / name).is_file()), None)
    if config is None:
        raise InternalError(
            f"template '{offer.template.name}': {offer.template.path} has no copier.yml",
            hint=f"the plugin '{offer.plugin}' serves a template edgesdk cannot render; report it to its authors",
        )
    tags: list[str] = []

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, tag, node: tags.append(tag))  # copier's !include
    try:
        documents = list(yaml.load_all(config.read_text(), Loader=Loader))
    except yaml.YAMLError as exc:
        raise InternalError(f"template '{offer.template.name}': {config}: {' '.join(str(exc).split())}", hint=f"a bug in the plugin '{offer.plugin}'") from None
    keys = {key for document in documents if isinstance(document, dict) for key in document if not str(key).startswith("_")}
    return keys, not tags


def _checked_data(offer: OfferedTemplate, data: Mapping[str, Any]) -> dict[str, Any]:
    if "name" in data:
        raise UserInputError("name: give it as NAME, not in --data")
    questions, complete = _questions(offer)
    unknown = sorted(set(data) - questions) if complete else []
    if unknown:
        asked = ", ".join(sorted(questions - {"name"})) or "nothing but its name"
        raise UserInputError(f"template '{offer.template.name}' has no question {unknown[0]!r}; it asks: {asked}")
    return dict(data)


def _check_destination(destination: Path) -> None:
    if not destination.exists():
        return
    if not destination.is_dir():
        raise UserInputError(f"{destination}: exists and is not a directory; refusing to replace it", hint="choose another directory with -o")
    if any(destination.iterdir()):
        raise UserInputError(f"{destination}: exists and is not empty; refusing to write into it", hint="choose another directory with -o")


def _render(offer: OfferedTemplate, staging: Path, answers: dict[str, Any]) -> None:
    import copier  # imported when rendering only: the CLI starts without it

    name = offer.template.name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # copier's warnings are UserWarnings
        try:
            # Into our own empty staging directory: nothing there to overwrite or to clean up for copier.
            copier.run_copy(str(offer.template.path), staging, data=answers, defaults=True, unsafe=False, quiet=True, overwrite=True, cleanup_on_error=False)
        except (ValueError, TypeError) as exc:  # an answer the template refuses: a validator, a choice, a type
            raise UserInputError(f"template '{name}': {_first_line(exc)}") from None
        except Exception as exc:
            raise InternalError(
                f"template '{name}' failed to render: {type(exc).__name__}: {_first_line(exc)}",
                hint=f"the template is served by the plugin '{offer.plugin}'; report it to its authors",
            ) from exc
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            log.warning("template '%s': %s", name, _first_line(warning.message))


def _first_line(exc: object) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
