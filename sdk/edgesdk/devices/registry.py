"""Finds device profiles: those plugins contribute, then the user's own YAML files.

User profiles live in the directories of ``EDGESDK_PROFILE_PATH`` (``os.pathsep``-separated) and
in ``--profiles-dir``. Any profile file may say ``extends: <id>`` to start from another profile and
override fields (mappings merge key by key, other values are replaced, ``null`` removes a key),
and ``on_chip_memory_bytes: N`` to set the on-chip memory of every compute unit (what-if studies).
A bad user file is an error naming the file and the field; a bad plugin profile is reported and
skipped, like any other plugin failure.
"""

from __future__ import annotations

import contextvars
import logging
import os
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edgesdk.devices.profile import DeviceProfile, ProfileSource, figure
from edgesdk.errors import ProfileError, UnknownDeviceError, describe_validation_error
from edgesdk.plugin import manager as plugin_manager

log = logging.getLogger("edgesdk.devices")

PROFILE_PATH_ENV = "EDGESDK_PROFILE_PATH"
USER = "user"


@dataclass
class _Document:
    """A profile file read but not yet resolved against the profile it extends."""

    raw: dict[str, Any]
    source: ProfileSource

    @property
    def user(self) -> bool:
        return self.source.plugin == USER


def read_profile_file(path: Path | Traversable, source: ProfileSource) -> _Document:
    """Read one YAML profile (``yaml.safe_load``); the id defaults to the file's stem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"profile {source}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ProfileError(f"profile {source}: not UTF-8 text (byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ProfileError(f"profile {source}: invalid YAML{where}: {problem}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"profile {source}: expected a mapping of fields, got {type(data).__name__}")
    data.setdefault("id", Path(path.name).stem)
    return _Document(data, source)


def _keeps_fit(parent: DeviceProfile, merged: dict[str, Any]) -> bool:
    """Whether a profile extending ``parent`` keeps every figure of the parent's fit record."""
    if parent.fit is None:
        return True
    try:
        return all(figure(merged, path) == figure(parent, path) for path in parent.fit.first_order)
    except (KeyError, TypeError, AttributeError):  # a figure removed, or a section of the wrong type
        return False


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Resolver:
    """Resolves ``extends`` chains; keeps every profile it has validated."""

    def __init__(self, documents: dict[str, _Document], ready: dict[str, DeviceProfile]):
        self.documents = documents
        self.ready = ready

    def known_ids(self) -> list[str]:
        return sorted({*self.documents, *self.ready})

    def resolve(self, device_id: str, chain: tuple[str, ...] = ()) -> DeviceProfile:
        if device_id in self.ready:
            return self.ready[device_id]
        document = self.documents[device_id]
        if device_id in chain:
            cycle = " -> ".join((*chain, device_id))
            raise ProfileError(f"profile {document.source}: `extends` makes a cycle: {cycle}")
        raw = dict(document.raw)
        parent_id = raw.pop("extends", None)
        on_chip = raw.pop("on_chip_memory_bytes", None)
        if parent_id is not None:
            if parent_id not in self.documents and parent_id not in self.ready:
                raise ProfileError(
                    f"profile {document.source}: extends: unknown device {parent_id!r}",
                    hint=f"known devices: {', '.join(self.known_ids())}",
                )
            parent = self.resolve(parent_id, (*chain, device_id))
            inherited = {**parent.model_dump(mode="json"), "backend": parent.backend_name}
            raw = _merge(inherited, raw)
            if "fit" not in document.raw and not _keeps_fit(parent, raw):
                raw.pop("fit", None)  # the fitted figures changed: the record no longer describes them
        if on_chip is not None:
            if isinstance(on_chip, bool) or not isinstance(on_chip, int) or on_chip < 0:
                raise ProfileError(f"profile {document.source}: on_chip_memory_bytes: must be a whole number >= 0")
            units = raw.get("compute_units")
            if isinstance(units, dict):
                raw["compute_units"] = {name: {**unit, "on_chip_memory_bytes": on_chip} if isinstance(unit, dict) else unit for name, unit in units.items()}
        try:
            profile = DeviceProfile.model_validate(raw)
        except ValidationError as exc:
            raise ProfileError(f"profile {document.source}: {describe_validation_error(exc)}") from None
        profile = profile.with_source(document.source)
        self.ready[device_id] = profile
        return profile


def _user_directories(profiles_dir: str | os.PathLike | None) -> list[Path]:
    # Like PATH, entries of the variable that do not exist are skipped; an explicit flag is not.
    directories = [Path(entry).expanduser() for entry in os.environ.get(PROFILE_PATH_ENV, "").split(os.pathsep) if entry]
    directories = [d for d in directories if d.is_dir()]
    if profiles_dir is not None:
        explicit = Path(profiles_dir).expanduser()
        if not explicit.is_dir():
            raise ProfileError(f"--profiles-dir {profiles_dir}: no such directory")
        directories.append(explicit)
    return directories


def _claim(owners: dict[str, ProfileSource], device_id: str, source: ProfileSource) -> None:
    """Record who provides ``device_id``; a second provider is an error naming both."""
    if device_id in owners:
        first = owners[device_id]
        by = f"plugins {first.plugin!r} and {source.plugin!r} ({first}; {source})" if USER not in (first.plugin, source.plugin) else f"{first} and {source}"
        raise ProfileError(f"device id {device_id!r} is defined twice, by {by}", hint="uninstall or rename one of them")
    owners[device_id] = source


_collecting = contextvars.ContextVar("edgesdk_collecting_profiles", default=False)


def _collect_from_plugins() -> list[tuple[str, Any]]:
    if _collecting.get():
        # A plugin asked for the device list while we were asking it for its devices.
        raise ProfileError("edgesdk_device_profiles must not look devices up; return a YAML path that uses `extends:`")
    token = _collecting.set(True)
    try:
        return plugin_manager.collect("edgesdk_device_profiles")
    finally:
        _collecting.reset(token)


def _plugin_profiles() -> tuple[dict[str, _Document], dict[str, DeviceProfile], dict[str, ProfileSource]]:
    documents: dict[str, _Document] = {}
    ready: dict[str, DeviceProfile] = {}
    owners: dict[str, ProfileSource] = {}
    for plugin, item in _collect_from_plugins():
        try:
            if isinstance(item, DeviceProfile):
                source, device_id = ProfileSource(plugin), item.id
            elif isinstance(item, (str, os.PathLike, Traversable)):
                path = Path(item) if isinstance(item, (str, os.PathLike)) else item
                source = ProfileSource(plugin, Path(str(path)))
                document = read_profile_file(path, source)
                device_id = str(document.raw["id"])
            else:
                raise ProfileError(f"got {item!r}, expected a DeviceProfile or the path of a YAML file")
        except ProfileError as exc:
            log.warning("plugin %r: profile skipped, %s", plugin, exc)
            continue
        _claim(owners, device_id, source)  # two plugins claiming one id: an error, not a skip
        if isinstance(item, DeviceProfile):
            ready[device_id] = item.with_source(source)
        else:
            documents[device_id] = document
    return documents, ready, owners


def load_profiles(profiles_dir: str | os.PathLike | None = None) -> dict[str, DeviceProfile]:
    """Every device profile by id: the plugins' first, then the user's."""
    documents, ready, owners = _plugin_profiles()
    for directory in _user_directories(profiles_dir):
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            document = read_profile_file(path, ProfileSource(USER, path))
            _claim(owners, str(document.raw["id"]), document.source)
            documents[str(document.raw["id"])] = document
    resolver = _Resolver(documents, ready)
    profiles: dict[str, DeviceProfile] = dict(ready)
    for device_id, document in documents.items():
        try:
            profiles[device_id] = resolver.resolve(device_id)
        except ProfileError as exc:
            if document.user:
                raise
            log.warning("plugin %r: profile skipped, %s", document.source.plugin, exc)
    return profiles


def devices(profiles_dir: str | os.PathLike | None = None) -> list[DeviceProfile]:
    """All device profiles, plugins' first, in the order they were found."""
    return list(load_profiles(profiles_dir).values())


def get_device(device_id: str, profiles_dir: str | os.PathLike | None = None) -> DeviceProfile:
    """The profile with this id; an unknown id is a usage error that lists the known ones."""
    profiles = load_profiles(profiles_dir)
    if device_id not in profiles:
        raise UnknownDeviceError(
            f"unknown device {device_id!r}",
            hint=f"known devices: {', '.join(profiles)} (see `edgesdk devices`)",
        )
    return profiles[device_id]


def device_summary(profile: DeviceProfile) -> dict[str, Any]:
    """The record `edgesdk devices --json` prints for a profile."""
    return {
        "id": profile.id,
        "name": profile.name,
        "device_class": profile.device_class,
        "compute_units": [{"name": name, **unit.model_dump(mode="json")} for name, unit in profile.compute_units.items()],
        "memory_bytes": profile.memory.dram_bytes,
        "target": profile.target,
        "plugin": profile.source.plugin if profile.source else None,
    }
