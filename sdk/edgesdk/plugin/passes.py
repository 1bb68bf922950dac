"""Plugin passes chosen for a deploy (``--pass NAME[=JSON]``, ``deploy(..., passes={name: config})``):
found among the plugins' ``edgesdk_passes``, each config validated by the pass's own pydantic model.

A choice is plain data (``PassChoice``) so that the TVM worker, another process, can find the same
pass and run it on the Relax module; the manifest lists the choices.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edgesdk.errors import UserInputError, describe_validation_error
from edgesdk.plugin import manager
from edgesdk.plugin.kinds import Pass

STAGES = ("onnx", "relax")


class PassChoice(BaseModel):
    """A pass a deploy runs: which, from which plugin, at which stage, with which config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    plugin: str
    stage: Literal["onnx", "relax"]
    config: dict[str, Any]


def parse_pass_options(texts: Sequence[str]) -> dict[str, str | None]:
    """``--pass NAME[=JSON]`` options as ``{name: JSON text or None}``, in order."""
    requested: dict[str, str | None] = {}
    for text in texts:
        name, equals, config = text.partition("=")
        name = name.strip()
        if not name:
            raise UserInputError(f"--pass {text}: expected NAME or NAME=JSON")
        if name in requested:
            raise UserInputError(f"--pass {name}: given twice", hint="give each pass once, with all of its config")
        requested[name] = config if equals else None
    return requested


def offered() -> dict[str, tuple[str, Pass]]:
    """Every pass the plugins offer, by name; one name from two plugins is an error naming both."""
    passes = [(plugin, item) for plugin, item in manager.collect("edgesdk_passes") if isinstance(item, Pass)]
    return manager.unique(passes, "pass", lambda item: item.name)


def _config(name: str, config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise UserInputError(
                f"--pass {name}: its config is not JSON ({exc.msg} at column {exc.colno})", hint=f"e.g. --pass '{name}={{\"key\": 1}}'"
            ) from None
    if not isinstance(config, Mapping):
        raise UserInputError(f"--pass {name}: its config must be a JSON object, got {type(config).__name__}")
    return dict(config)


def choose(requested: Mapping[str, Any] | None) -> list[PassChoice]:
    """The passes ``requested`` ({name: config or None}, in the order given), checked."""
    if not requested:
        return []
    available = offered()
    chosen = []
    for name, config in requested.items():
        if name not in available:
            hint = f"installed passes: {', '.join(sorted(available))}" if available else "no installed plugin offers passes (`edgesdk plugins`)"
            raise UserInputError(f"--pass {name}: no installed plugin offers it", hint=hint)
        plugin, found = available[name]
        if getattr(found, "stage", None) not in STAGES:
            raise UserInputError(f"--pass {name}: plugin {plugin!r} gives it no stage", hint=f"a Pass declares `stage` as one of {', '.join(STAGES)}")
        try:
            validated = found.config_model.model_validate(_config(name, config))
        except ValidationError as exc:
            raise UserInputError(f"--pass {name}: {describe_validation_error(exc)}") from None
        chosen.append(PassChoice(name=name, plugin=plugin, stage=found.stage, config=validated.model_dump(mode="json")))
    return chosen


def fingerprint(choices: Sequence[PassChoice]) -> list[dict[str, Any]]:
    """What identifies the passes' effect in a cache key: the choices and their plugins' versions."""
    versions = {info.name: info.version for info in manager.plugins()}
    return [{**choice.model_dump(mode="json"), "version": versions.get(choice.plugin)} for choice in choices]


def run(choice: PassChoice, module: Any) -> Any:
    """Run the pass ``choice`` names on ``module``; a failure names the pass and its plugin."""
    plugin, found = offered().get(choice.name, (None, None))
    if found is None or plugin != choice.plugin:
        raise UserInputError(f"pass {choice.name}: plugin {choice.plugin!r} no longer offers it")
    try:
        return found.run(module, found.config_model.model_validate(choice.config))
    except Exception as exc:
        raise UserInputError(
            f"pass {choice.name} (plugin {plugin!r}) failed: {type(exc).__name__}: {exc}", hint=f"a fault of that plugin; deploy without --pass {choice.name}"
        ) from exc
