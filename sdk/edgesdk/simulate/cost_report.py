"""What the simulator reports: where each kernel runs (``PartitionInfo``) and what the model costs
(``Estimate``, per layer ``LayerCost``). The manifest and `edgesdk profile` carry them;
`edgesdk compare` sets them side by side (``CompareReport``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgesdk.quantization.accuracy import Accuracy

if TYPE_CHECKING:
    from edgesdk.compile.patches import PatchPlan


def byte_size(count: int) -> str:
    """``count`` bytes for people: KiB below a MiB, else MiB."""
    return f"{count / 2**20:.2f} MiB" if count >= 2**20 else f"{count / 2**10:.1f} KiB"


Bound = Literal["compute", "memory", "launch", "transfer"]
SPLIT = ("compute", "memory", "launch", "transfer")  # the parts of a kernel's latency


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


class Fallback(_Record):
    """A kernel that could not run on the unit it preferred: that unit does not run its operation
    (an op class, a tensor rank), whatever the precision."""

    op: str
    from_unit: str
    to_unit: str
    reason: str


class Placement(Fallback):
    """A kernel placed past a unit it prefers because that unit does not compute its dtype or
    weight format (a float32 model on an NPU without float32): the model's precision chooses the
    unit; nothing failed."""


class PartitionInfo(_Record):
    """Which compute unit runs each compiled kernel."""

    units: dict[str, int] = Field(description="Kernels assigned to each compute unit.")
    fallbacks: list[Fallback] = Field(default_factory=list, description="Kernels a preferred unit cannot run, and why.")
    placements: list[Placement] = Field(default_factory=list, description="Kernels placed past a preferred unit for their dtype or weight format.")


class LayerCost(_Record):
    """The simulated cost of one kernel call (docs/simulator.md)."""

    index: int
    name: str
    op_class: str
    unit: str
    dtype: str
    flops: int
    bytes: int = Field(description="DRAM bytes moved by the kernel.")
    spilled: bool = Field(description="Whether no tile of it fits the unit's on-chip memory: its operands stream through DRAM untiled.")
    tiles: int = Field(1, description="Tiles it runs in to fit the unit's on-chip memory (1: it fits whole, or spilled).")
    tiling: str = Field("fits", description="`fits`, `spill`, or its split, e.g. `yy/4 x ff/2` (output axis / tiles, outermost first).")
    offchip_bytes: int = Field(0, description="Of `bytes`, what goes through DRAM because it does not fit on chip (tiles with their halos, or the spill).")
    compute_ms: float
    memory_ms: float
    launch_ms: float = Field(0.0, description="The unit's fixed cost of dispatching it (`launch_overhead_s`).")
    transfer_ms: float
    latency_ms: float = Field(description="Including launch overhead and incoming transfers.")
    energy_mj: float
    bound: Bound = Field(
        description="What most of its latency is: its arithmetic, its memory traffic (the roofline's two sides), its launch "
        "overhead, or its incoming transfers."
    )

    def split(self) -> dict[str, float]:
        """Its latency in ms as compute or memory time (the side of the roofline that binds), launch
        overhead and transfers."""
        roofline = self.latency_ms - self.launch_ms - self.transfer_ms
        return {"compute" if self.compute_ms >= self.memory_ms else "memory": roofline, "launch": self.launch_ms, "transfer": self.transfer_ms}


class PatchInfo(_Record):
    """The first stage run patch by patch (edgesdk.compile.patches), so that the peak fits."""

    cut: str = Field(description="The tensor that ends the stage: computed patch by patch, then joined.")
    grid: list[int] = Field(description="Patches along rows and columns.")
    stage_nodes: int = Field(description="ONNX nodes in the stage.")
    unpatched_bytes: int = Field(description="Activation memory needed without patches (peak in run order, or the arena where larger).")
    patched_bytes: int = Field(description="The same with patches.")
    stage_macs: int = Field(description="Multiply-adds of the stage's convolutions, unpatched.")
    recompute_macs: int = Field(description="Multiply-adds computed again where the patches' receptive fields overlap.")

    @classmethod
    def of(cls, plan: PatchPlan, unpatched_bytes: int, patched_bytes: int) -> PatchInfo:
        return cls(
            cut=plan.cut,
            grid=list(plan.grid),
            stage_nodes=plan.stage_nodes,
            unpatched_bytes=unpatched_bytes,
            patched_bytes=patched_bytes,
            stage_macs=plan.macs,
            recompute_macs=plan.patched_macs - plan.macs,
        )


class MemoryInfo(_Record):
    """Activation memory of the compiled model (edgesdk.compile.reorder), model inputs included."""

    naive_bytes: int = Field(description="Every activation tensor in a buffer of its own.")
    default_order_peak_bytes: int = Field(description="Most bytes live at once with the kernels in the file's order.")
    scheduled_peak_bytes: int = Field(description="The same in the order the artifact runs (chosen for the lowest peak).")
    ordering_exact: bool = Field(description="Whether that order is proven optimal (else the best a bounded search found).")
    spill_bytes: int = Field(description="DRAM bytes moved because kernels do not fit their unit's on-chip memory (tiled or spilled; sum of `offchip_bytes`).")
    arena_bytes: int | None = Field(
        None,
        description="What the device code allocates for tensors: one arena in which every intermediate tensor has an offset "
        "(edgesdk.compile.arena: tensors alive at different times share bytes), plus the model outputs; model inputs not. "
        "Null where nothing was built (`profile` of a model).",
    )
    device_ram_bytes: int | None = Field(
        None,
        description="RAM the standalone device code (edgesdk.compile.standalone) takes for tensors: one static arena for the tensors "
        "between kernels and each kernel's scratch (padded copies and the like, edgesdk.compile.workspace), plus the model's "
        "input and output buffers. Null without standalone code.",
    )
    timeline: list[int] = Field(description="Live activation bytes after each kernel, in run order.")
    patches: PatchInfo | None = Field(None, description="Set when the first stage runs patch by patch to fit the device's RAM (mcu).")


class Estimate(_Record):
    """The simulated cost of the model on the device (docs/simulator.md)."""

    latency_ms: float
    energy_mj: float
    peak_memory_bytes: int
    weight_bytes: int
    flops: int
    utilisation: dict[str, float] = Field(description="Share of the total latency each unit is busy.")
    cycles: int | None = Field(
        None, description="The latency in cycles of the busiest unit's clock, where its profile states one (`clock_hz`; the mcu: 480 MHz)."
    )
    calibrated_utc: str | None = Field(
        None, description="When the cost-model fit applied was measured (`edgesdk calibrate`, or the profile's shipped calibration); null: none."
    )
    figures: Literal["calibrated", "fitted", "first-order"] = Field(
        "first-order",
        description="Where the device's figures come from: `calibrated` (kernels measured on a host: yours after `edgesdk calibrate`, "
        "else the profile's shipped default), `fitted` (to published latencies of the real device: the profile's `fit`), "
        "`first-order` (public peak rates with assumed efficiencies and overheads).",
    )
    figures_source: str = Field("", description="What the figures were calibrated or fitted on, and how well they predict, in words.")
    memory: MemoryInfo | None = Field(None, description="Activation memory by run order; null for a model compiled before kernels were ordered.")
    per_layer: list[LayerCost]

    def split(self) -> dict[str, float]:
        """The latency in ms as compute, memory, launch and transfer time (``LayerCost.split``), the
        parts that take any."""
        total = dict.fromkeys(SPLIT, 0.0)
        for layer in self.per_layer:
            for part, ms in layer.split().items():
                total[part] += ms
        return {part: ms for part, ms in total.items() if ms}


class CompareRow(_Record):
    """One device at one precision in `edgesdk compare`."""

    device: str
    scheme: str = Field(description="The precision simulated (`auto` resolved to the device's recipe).")
    latency_ms: float
    energy_mj: float
    peak_memory_bytes: int
    weight_bytes: int
    units: dict[str, int] = Field(description="Kernels per compute unit.")
    fallbacks: int = Field(description="Kernels that could not run on the unit they preferred.")
    speedup: float = Field(description="Latency of the first precision asked for on this device / this latency.")
    accuracy: Accuracy | None = Field(None, description="Agreement with the float model on the --calibration samples (quantized precisions).")
    eval_accuracy: Accuracy | None = Field(None, description="Agreement with the float model on the held-out --eval inputs.")


class CompareReport(_Record):
    """What `edgesdk compare --json` prints."""

    model: str
    rows: list[CompareRow]
