"""`edgesdk tune`: search schedules for a model's conv and matmul kernels with MetaSchedule, measured
on this machine, and keep those that beat the schedule rules in the target's tuning database
(edgesdk.compile.tuning_db), which every later build for that target reads.

Only a device whose code runs here can be tuned (pc, and any profile with this host's target):
tuning measures candidates, and a phone's code cannot run on this machine.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgesdk.compile.compiler import tune_model
from edgesdk.compile.targets import half_target, runs_here
from edgesdk.compile.tuning_db import TaskRecord, database_dir
from edgesdk.devices.registry import get_device
from edgesdk.errors import UserInputError
from edgesdk.plugin.passes import choose
from edgesdk.progress import relay, reporting, stage
from edgesdk.quantization.recipe import recipe
from edgesdk.verbs.pipeline import checked_options, load_precision

DEFAULT_TRIALS = 64


class TuneReport(BaseModel):
    """What a tune did: per kernel, the rules' time, the tuned time and which one builds use."""

    model_config = ConfigDict(extra="forbid")

    model: str
    device: str
    target: dict[str, Any]
    database: str = Field(description="The target's tuning database directory.")
    trials: int = Field(description="MetaSchedule candidates measured per kernel.")
    budget_s: float | None
    seconds: float
    kernels: list[TaskRecord] = Field(description="This model's tuning tasks, most work first (tuned now, or found from an earlier tune).")
    untuned: int = Field(description="Kernels the time budget left for another run.")
    model_ms: list[float] | None = Field(
        description="The whole model's time (ms) as builds made it before and with the new schedules, when there were new ones: "
        "they are kept only if the model got faster (a kernel timed alone is not a kernel in a model)."
    )

    @property
    def rules_ms(self) -> float:
        return sum(kernel.rules_ms for kernel in self.kernels)

    @property
    def best_ms(self) -> float:
        return sum(kernel.tuned_ms if kernel.chosen == "tuned" and kernel.tuned_ms is not None else kernel.rules_ms for kernel in self.kernels)


def tune(
    model,
    device: str,
    *,
    input_shapes=None,
    trials: int = DEFAULT_TRIALS,
    budget_s: float | None = None,
    quantize: str | None = None,
    calibration=None,
    seed: int = 0,
    **options: Any,
) -> TuneReport:
    """Tune ``model``'s kernels as ``deploy(model, device, quantize=...)`` builds them.

    Options: ``timeout_s`` (worker time limit), ``profiles_dir``, ``on_stage`` (told each kernel as
    its tuning starts), ``passes`` (as deploy's), and deploy's quantization options.
    """
    missing = [name for name in ("xgboost", "psutil") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserInputError(f"tune needs {' and '.join(missing)} (MetaSchedule's cost model and process pool)", hint="pip install 'edgesdk[tune]'")
    if trials < 1:
        raise UserInputError(f"--trials {trials}: must be at least 1")
    if budget_s is not None and budget_s <= 0:
        raise UserInputError(f"--budget-s {budget_s:g}: must be positive")
    recipe_options, options = checked_options(options, "tune", ("timeout_s", "profiles_dir", "on_stage", "passes"))
    profile = get_device(device, options.get("profiles_dir"))
    chosen = recipe(quantize, calibration, profile, **recipe_options)
    passes = choose(options.get("passes"))
    with reporting(options.get("on_stage")):
        stage("load")
        precision = load_precision(model, input_shapes, chosen, calibration, passes)
        target = half_target(profile.target, precision.compiled)
        if target.get("kind") != "llvm" or not runs_here(target):
            raise UserInputError(
                f"device '{profile.id}': its code does not run on this machine, and tuning measures every candidate",
                hint="tune for pc (or a profile with this host's target); remote boards are not supported yet",
            )
        directory = database_dir(target)
        started = time.monotonic()
        result = tune_model(
            precision.compiled,
            target,
            directory,
            trials=trials,
            budget_s=budget_s,
            seed=seed,
            timeout_s=options.get("timeout_s"),
            on_stage=relay(),
            passes=passes,
        )
    return TuneReport(
        model=precision.original.name,
        device=profile.id,
        target=target,
        database=str(directory),
        trials=trials,
        budget_s=budget_s,
        seconds=round(time.monotonic() - started, 2),
        kernels=result.tuned,
        untuned=result.untuned,
        model_ms=result.model_ms,
    )
