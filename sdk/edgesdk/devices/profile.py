"""The device-profile schema: what edgesdk knows about a device, as data.

A profile describes hardware, not software: compute units with their peak throughput per dtype,
on-chip memory and energy per op; DRAM size, bandwidth and energy; the TVM target the device's
code is generated for; and the quantization recipe that suits it. Units are in field names.
Profiles are written in YAML (``device_profiles/*.yaml``); see ``edgesdk.devices.registry`` for
how they are found, extended and overridden.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

DType = Literal["float32", "float16", "bfloat16", "int32", "int16", "int8", "uint8", "int4"]
OpClass = Literal[
    "conv",
    "depthwise_conv",
    "matmul",
    "elementwise",
    "activation",
    "pool",
    "reduce",
    "normalization",
    "softmax",
    "data_movement",
    "gather",
    "sort",
    "resize",
    "other",
]
QuantizationScheme = Literal["none", "int8", "w8a16", "w4a16", "w4a8", "fp16", "vq"]
RangeMethod = Literal["minmax", "percentile", "mse"]
DeviceClass = Literal["phone", "pc", "xr", "automotive", "iot", "mcu"]
UnitKind = Literal["npu", "gpu", "cpu", "dsp"]

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]
Fraction = Annotated[float, Field(gt=0, le=1)]


def _default_efficiency() -> dict[OpClass | Literal["default"], float]:
    return {"default": 0.5}


def _default_quantization_schemes() -> list[QuantizationScheme]:
    return ["none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComputeUnit(_Strict):
    """One engine of the device (an NPU, a GPU, a CPU cluster, a DSP)."""

    kind: UnitKind = Field(description="What sort of engine this is; partitioning prefers npu, then gpu, dsp, cpu.")
    description: str = Field("", description="What the unit is modelled on, in words.")
    peak_ops_per_s: dict[DType, Annotated[float, Field(gt=0)]] = Field(
        min_length=1,
        description="Peak throughput per dtype in operations per second (a multiply-add counts as 2).",
    )
    efficiency: dict[OpClass | Literal["default"], Fraction] = Field(
        default_factory=_default_efficiency,
        description="Fraction of peak that kernels of each op class reach; `default` covers the rest.",
    )
    efficiency_by_dtype: dict[DType, dict[OpClass, Fraction]] = Field(
        default_factory=dict,
        description="Where a dtype's share of peak for an op class differs from `efficiency` (an NPU's int16 depthwise "
        "convolutions run on its vector units, not its tensor unit): per dtype, per op class.",
    )
    launch_overhead_s: float = Field(ge=0, description="Fixed cost of dispatching one kernel on this unit, in seconds.")
    clock_hz: float | None = Field(
        None, gt=0, description="The unit's clock where it is published: simulated latency times it is cycles (compared with emulated instruction counts)."
    )
    op_classes: list[OpClass] | Literal["all"] = Field(description="Op classes this unit can run, or `all`.")
    dtypes: list[DType] = Field(min_length=1, description="Dtypes this unit computes in.")
    max_rank: int | None = Field(None, gt=0, description="Largest tensor rank the unit accepts (none: no limit).")
    channel_tile: int | None = Field(
        None,
        gt=0,
        description="The unit stores activations with channels padded to a multiple of this (an NPU's vector depth: 32 on "
        "Qualcomm's HTP) and computes and streams the padding (null: no padding).",
    )
    on_chip_memory_bytes: int = Field(
        ge=0,
        description="Fast memory local to the unit (VTCM, TCM, L2): a kernel whose working set exceeds it spills to DRAM.",
    )
    tensor_bandwidth_bytes_per_s: float | None = Field(
        None,
        gt=0,
        description="Rate at which the unit streams a kernel's inputs and outputs, wherever they live: every byte a kernel "
        "reads or writes costs time even when it never leaves the chip (null: not modelled, only DRAM traffic costs).",
    )
    energy_pj_per_op: dict[DType, Annotated[float, Field(gt=0)]] = Field(
        min_length=1,
        description="Energy of one operation per dtype in picojoules, control overhead included.",
    )
    quantization_schemes: list[QuantizationScheme] = Field(
        default_factory=_default_quantization_schemes,
        description="Quantization schemes this unit runs natively.",
    )

    @field_validator("efficiency")
    @classmethod
    def _has_default(cls, value: dict[str, float]) -> dict[str, float]:
        if "default" not in value:
            raise ValueError("needs a `default` entry for op classes not listed")
        return value

    @model_validator(mode="after")
    def _figures_for_every_dtype(self) -> ComputeUnit:
        for figure in ("peak_ops_per_s", "energy_pj_per_op"):
            missing = [d for d in self.dtypes if d not in getattr(self, figure)]
            if missing:
                raise ValueError(f"{figure} has no entry for dtypes {missing}")
        return self

    def efficiency_key(self, op_class: str, dtype: str) -> str:
        """Which figure gives the share of peak of ``op_class`` computed in ``dtype`` (a dotted path
        below the unit)."""
        if op_class in self.efficiency_by_dtype.get(dtype, {}):  # type: ignore[call-overload]  # str keys of Literal dicts
            return f"efficiency_by_dtype.{dtype}.{op_class}"
        return f"efficiency.{op_class if op_class in self.efficiency else 'default'}"

    def efficiency_for(self, op_class: str, dtype: str) -> float:
        return float(figure(self, self.efficiency_key(op_class, dtype)))

    def supports_op_class(self, op_class: str) -> bool:
        return self.op_classes == "all" or op_class in self.op_classes


class Memory(_Strict):
    """Main memory shared by the compute units."""

    dram_bytes: int = Field(gt=0, description="Capacity of main memory in bytes.")
    dram_bandwidth_bytes_per_s: float = Field(gt=0, description="Sustainable main-memory bandwidth.")
    dram_energy_pj_per_byte: float = Field(gt=0, description="Energy to move one byte to or from main memory.")
    flash_bytes: int | None = Field(None, gt=0, description="Non-volatile memory that can hold read-only weights (MCUs run from flash).")


class Interconnect(_Strict):
    """How a tensor moves between compute units at a partition boundary."""

    bandwidth_bytes_per_s: float = Field(gt=0, description="Bandwidth of a transfer between units.")
    latency_s: float = Field(ge=0, description="Fixed cost of one transfer (synchronisation, cache maintenance).")


class QuantizationRecipe(_Strict):
    """The quantization `--quantize auto` applies on this device."""

    scheme: QuantizationScheme = Field("none", description="Scheme to apply.")
    range_method: RangeMethod = Field("minmax", description="How activation ranges are calibrated.")


class FitRecord(_Strict):
    """Which figures of the profile were fitted to measurements, what on, and how well they predict."""

    source: str = Field(description="What the figures were fitted on: the measurements, their device, runtime and commit.")
    method: str = Field(description="How: the objective, the validation, the script that refits them.")
    models: list[str] = Field(description="The models whose measurements the fit used.")
    held_out: list[str] = Field([], description="Models never used to fit, kept to check it.")
    first_order: dict[str, float] = Field(
        min_length=1,
        description="Each fitted figure (a dotted path such as `compute_units.npu.launch_overhead_s`) and its value "
        "before the fit (public peak or assumed): the fit starts from and is pulled toward it.",
    )
    cross_validated_median_error: float = Field(ge=0, description="Leave-one-model-out median of |predicted/measured - 1|.")
    cross_validated_within_2x: Fraction = Field(description="Leave-one-model-out share of predictions within 2x of the measurement.")


def figure(data: Any, path: str) -> Any:
    """The value at dotted ``path`` in a profile (as a model or a dict); KeyError when there is none."""
    for key in path.split("."):
        data = data[key] if isinstance(data, dict) else getattr(data, key)
    return data


@dataclass(frozen=True)
class ProfileSource:
    """Where a profile came from: the plugin (or `user`) and the file, when there is one."""

    plugin: str
    path: Path | None = None

    def __str__(self) -> str:
        return str(self.path) if self.path else f"plugin {self.plugin!r}"


class DeviceProfile(_Strict):
    """A device edgesdk can deploy to."""

    id: Identifier = Field(description="Short name used on the command line (`--device ID`).")
    name: str = Field(description="Human-readable name.")
    device_class: DeviceClass = Field(description="The family of device.")
    description: str = Field("", description="What the profile is modelled on, in words.")
    target: dict[str, Any] = Field(description="TVM target as a JSON object, e.g. `{kind: llvm, mtriple: aarch64-linux-gnu}`.")
    compute_units: dict[Identifier, ComputeUnit] = Field(min_length=1, description="The device's engines, by name.")
    memory: Memory
    interconnect: Interconnect
    quantization: QuantizationRecipe = Field(default_factory=QuantizationRecipe, description="Recommended recipe for `--quantize auto`.")
    backend: Identifier | None = Field(
        None,
        description="Name of the lowering backend (a plugin's `edgesdk_backends`) that builds for this "
        "device. Defaults to the profile id; a profile that `extends` another inherits its backend.",
    )

    fit: FitRecord | None = Field(None, description="The figures fitted to measured latencies (benchmarks/device_fidelity.py); none: first-order figures.")

    _source: ProfileSource | None = PrivateAttr(None)

    @field_validator("target")
    @classmethod
    def _target_has_kind(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("kind"), str):
            raise ValueError("needs a string `kind` (for example `llvm` or `c`)")
        return value

    @model_validator(mode="after")
    def _recipe_runs_somewhere(self) -> DeviceProfile:
        scheme = self.quantization.scheme
        if scheme != "none" and not any(scheme in unit.quantization_schemes for unit in self.compute_units.values()):
            raise ValueError(f"quantization.scheme {scheme!r} is not native to any compute unit")
        return self

    @model_validator(mode="after")
    def _fitted_figures_exist(self) -> DeviceProfile:
        for path in self.fit.first_order if self.fit else ():
            try:
                value = figure(self, path)
            except (KeyError, AttributeError):
                raise ValueError(f"fit.first_order: {path} is no figure of the profile") from None
            if not isinstance(value, int | float):
                raise ValueError(f"fit.first_order: {path} is not a number")
        return self

    @property
    def backend_name(self) -> str:
        return self.backend or self.id

    @property
    def source(self) -> ProfileSource | None:
        return self._source

    def with_source(self, source: ProfileSource) -> DeviceProfile:
        copy = self.model_copy()
        copy._source = source
        return copy
