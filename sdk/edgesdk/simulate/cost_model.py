"""The device cost model: latency, energy and memory of a partitioned model, per kernel and in total.

Per kernel ``k`` on unit ``u``, computing in dtype ``d`` (docs/simulator.md explains each term):

- compute time  = ops(k) / (peak_ops_per_s[u][d] * efficiency), ops being FLOPs, or one per
                  output element for a kernel that only moves data, with channels padded to u's
                  channel_tile (edgesdk.simulate.layout); efficiency is the profile's
                  figure for k's op class, or, on the unit of a cost-model fit, interpolated from the
                  measured kernels of that class most like it (edgesdk.simulate.efficiency_model)
- DRAM bytes    = weight bytes read by k, plus model inputs and outputs, which live in DRAM; when
                  k's working set (inputs + outputs) exceeds u's on-chip memory, what it costs
                  to tile k so that a tile fits (halos and re-read operands included), or to
                  spill where no tile fits (edgesdk.simulate.tiling)
- memory time   = the longer of DRAM bytes / DRAM bandwidth and, on a unit whose
                  tensor_bandwidth_bytes_per_s is given, all bytes k reads and writes / that
                  bandwidth (activations kept on chip still stream: int16 ones cost twice int8's;
                  padded to u's layout)
- latency       = max(compute time, memory time) + launch_overhead_s[u]     (a roofline)
- transfer      = for each input produced on another unit: bytes / interconnect bandwidth +
                  interconnect latency, charged to the consuming kernel; on an accelerator (not
                  a CPU) the model's inputs it reads and the model output it writes cross too:
                  the application hands them over and waits on the CPU (``crossings``)
- energy        = FLOPs * energy_pj_per_op[u][d] + (DRAM + 2 x transfer bytes) * dram_energy_pj_per_byte

Kernels run one after another (no overlap between units). Peak memory is the weights plus the
largest set of activations alive at once, in call order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edgesdk.compile.kernels import Kernel, ModelAnalysis
from edgesdk.devices.profile import ComputeUnit, DeviceProfile
from edgesdk.simulate.cost_report import Bound, Estimate, LayerCost, MemoryInfo
from edgesdk.simulate.fit import CostFit
from edgesdk.simulate.layout import padded_ops, streamed_bytes
from edgesdk.simulate.partition import Partition, on_device
from edgesdk.simulate.tiling import Tiling, plan


def _efficiency(profile: DeviceProfile, unit_name: str, kernel: Kernel, dtype: str, fit: CostFit | None) -> float:
    """A fitted unit interpolates from measured kernels like this one; else the profile's figure
    for the kernel's class in ``dtype``."""
    fitted = fit.efficiency_of(kernel) if fit is not None and fit.unit == unit_name else None
    return fitted if fitted is not None else profile.compute_units[unit_name].efficiency_for(kernel.op_class, dtype)


def _figure(per_dtype: Mapping[Any, float], dtype: str, conservative: Callable[..., Any]) -> float:
    """A unit's figure for ``dtype``; a dtype it lacks runs widened to float32 (software fp16 on a
    CPU without fp16 arithmetic), else at its most conservative figure (``conservative``: min or
    max). ``per_dtype`` has the profile's DType keys; ``dtype`` is any dtype name."""
    return per_dtype[figure_key(per_dtype, dtype, conservative)]


def figure_key(per_dtype: Mapping[Any, float], dtype: str, conservative: Callable[..., Any]) -> str:
    """The dtype whose figure ``_figure`` takes for ``dtype``."""
    if dtype in per_dtype:
        return dtype
    return "float32" if "float32" in per_dtype else conservative(per_dtype, key=per_dtype.__getitem__)


def _distinct(analysis: ModelAnalysis, sources: tuple[str, ...]) -> int:
    """Bytes of the tensors of ``sources`` the kernels read, a parameter read by several kernels
    once (a weight shared by the patches of a stage; a model input several kernels slice)."""
    seen: set[int] = set()
    total = 0
    for kernel in analysis.kernels:
        for tensor in kernel.inputs:
            if tensor.source in sources and (tensor.param is None or tensor.param not in seen):
                total += tensor.bytes
                if tensor.param is not None:
                    seen.add(tensor.param)
    return total


def _peak_memory(analysis: ModelAnalysis) -> tuple[int, int]:
    """(weight bytes, weights + most activation bytes alive at once), activations by liveness in
    run order (the ordering's own count where the kernels were ordered)."""
    weights = _distinct(analysis, ("weight", "constant"))
    if analysis.order is not None:
        return weights, weights + analysis.order.scheduled_peak_bytes
    last_use: dict[int, int] = {}
    for index, kernel in enumerate(analysis.kernels):
        for tensor in kernel.inputs:
            if tensor.producer is not None:
                last_use[tensor.producer] = index
    live, peak = 0, 0
    for index, kernel in enumerate(analysis.kernels):
        live += kernel.bytes_written
        peak = max(peak, live)
        live -= sum(analysis.kernels[p].bytes_written for p, last in last_use.items() if last == index)
    return weights, weights + _distinct(analysis, ("input",)) + peak


def direct_bytes(index: int, kernel: Kernel, consumers: set[int]) -> int:
    """What ``kernel`` moves to or from DRAM in any case: its weights and model inputs, and its
    result when that is a model output."""
    dram = sum(t.bytes for t in kernel.inputs if t.source in ("weight", "constant", "input"))
    return dram + (kernel.bytes_written if index not in consumers else 0)


def dram_traffic(index: int, kernel: Kernel, unit: ComputeUnit, consumers: set[int], tiling: bool = True) -> tuple[int, int, Tiling]:
    """(DRAM bytes, the part of them tiling or spilling adds, tiling) of ``kernel`` on ``unit``:
    ``direct_bytes``, or, when its working set does not fit on chip, what its tiles (or its spill)
    move, if more."""
    tiles = plan(kernel, unit.on_chip_memory_bytes, tiling)
    direct = direct_bytes(index, kernel, consumers)
    dram = max(direct, tiles.traffic)
    return dram, dram - direct, tiles


def tensor_seconds(kernel: Kernel, unit: ComputeUnit) -> float:
    """Time for ``unit`` to stream ``kernel``'s inputs and outputs in its layout (0 where not modelled)."""
    bandwidth = unit.tensor_bandwidth_bytes_per_s
    return streamed_bytes(kernel, unit.channel_tile) / bandwidth if bandwidth else 0.0


def crossings(index: int, kernel: Kernel, unit_name: str, partition: Partition, profile: DeviceProfile, consumers: set[int]) -> tuple[int, int]:
    """(bytes, count) of the tensors that cross between units at ``kernel``: its inputs computed on
    another unit; on an accelerator also the model inputs it reads and the model output it
    writes, which the application on the CPU hands over and waits for (one synchronisation each)."""
    moved = [t.bytes for t in kernel.inputs if t.producer is not None and partition.units[t.producer] != unit_name]
    if profile.compute_units[unit_name].kind != "cpu":
        moved += [t.bytes for t in kernel.inputs if t.source == "input"]
        if index not in consumers:
            moved.append(kernel.bytes_written)
    return sum(moved), len(moved)


def _layer(
    index: int, kernel: Kernel, unit_name: str, partition: Partition, profile: DeviceProfile, fit: CostFit | None, consumers: set[int], tiling: bool
) -> LayerCost:
    unit = profile.compute_units[unit_name]
    dtype = partition.dtypes[index]
    ops_per_s = _figure(unit.peak_ops_per_s, dtype, min)
    # A fitted unit predicts a float32 kernel's time from the work of its phases; other dtypes were
    # not measured and use the efficiency figures.
    fitted_s = fit.seconds_of(kernel) if fit is not None and fit.unit == unit_name and dtype == "float32" else None
    compute_s = fitted_s if fitted_s is not None else padded_ops(kernel, unit.channel_tile) / (ops_per_s * _efficiency(profile, unit_name, kernel, dtype, fit))

    dram, offchip, tiles = dram_traffic(index, kernel, unit, consumers, tiling)
    memory_s = max(dram / profile.memory.dram_bandwidth_bytes_per_s, tensor_seconds(kernel, unit))

    transfer_bytes, transfers = crossings(index, kernel, unit_name, partition, profile, consumers)
    link = profile.interconnect
    transfer_s = transfer_bytes / link.bandwidth_bytes_per_s + link.latency_s * transfers

    pj_per_op = _figure(unit.energy_pj_per_op, dtype, max)
    energy_pj = kernel.flops * pj_per_op + (dram + 2 * transfer_bytes) * profile.memory.dram_energy_pj_per_byte
    # A fitted time was measured with warm caches, as a model run again and again has them: its
    # memory traffic is in it, unless the kernel's tensors do not fit on chip.
    bound_s = memory_s if fitted_s is None or tiles.traffic else 0.0
    latency_s = max(compute_s, bound_s) + unit.launch_overhead_s + transfer_s
    parts: dict[Bound, float] = {"compute": compute_s, "memory": bound_s, "launch": unit.launch_overhead_s, "transfer": transfer_s}
    return LayerCost(
        index=index,
        name=kernel.name,
        op_class=kernel.op_class,
        unit=unit_name,
        dtype=dtype,
        flops=kernel.flops,
        bytes=dram,
        spilled=tiles.spilled,
        tiles=tiles.tiles,
        tiling=tiles.describe(),
        offchip_bytes=offchip,
        compute_ms=compute_s * 1e3,
        memory_ms=memory_s * 1e3,
        launch_ms=unit.launch_overhead_s * 1e3,
        transfer_ms=transfer_s * 1e3,
        latency_ms=latency_s * 1e3,
        energy_mj=energy_pj * 1e-9,
        bound=max(parts, key=parts.__getitem__),
    )


def figures_basis(profile: DeviceProfile, fit: CostFit | None) -> dict[str, str]:
    """Estimate.figures and figures_source: calibrated, fitted or first-order, and on what."""
    if fit is not None:
        return {"figures": "calibrated", "figures_source": f"{fit.unit} {fit.describe()}"}
    if profile.fit is not None:
        record = profile.fit
        return {
            "figures": "fitted",
            "figures_source": f"{record.source}; leave-one-model-out median error {record.cross_validated_median_error:.1%}, "
            f"{record.cross_validated_within_2x:.1%} within 2x",
        }
    return {"figures": "first-order", "figures_source": "public peak rates with assumed efficiencies and overheads; no calibration, no fit"}


def simulate(analysis: ModelAnalysis, partition: Partition, profile: DeviceProfile, fit: CostFit | None = None, tiling: bool = True) -> Estimate:
    """The cost of ``analysis`` placed as ``partition`` on ``profile``, with ``fit``'s factors for
    the unit it was fitted on (edgesdk.simulate.fit.stored_fit); ``tiling=False``: kernels that do
    not fit on chip spill instead of being tiled (what tiling saves)."""
    profile = fit.applied(profile) if fit is not None else profile
    analysis = on_device(analysis, partition.dtypes)
    consumers = {t.producer for k in analysis.kernels for t in k.inputs if t.producer is not None}
    layers = [
        _layer(index, kernel, unit, partition, profile, fit, consumers, tiling)
        for index, (kernel, unit) in enumerate(zip(analysis.kernels, partition.units, strict=False))
    ]
    total_ms = sum(layer.latency_ms for layer in layers)
    busy: dict[str, float] = {name: 0.0 for name in profile.compute_units}
    for layer in layers:
        busy[layer.unit] += layer.latency_ms
    weights, peak = _peak_memory(analysis)
    order = analysis.order
    memory = (
        MemoryInfo(
            naive_bytes=order.naive_bytes,
            default_order_peak_bytes=order.file_order_peak_bytes,
            scheduled_peak_bytes=order.scheduled_peak_bytes,
            ordering_exact=order.exact,
            spill_bytes=sum(layer.offchip_bytes for layer in layers),
            timeline=order.timeline,
        )
        if order is not None
        else None
    )
    busiest = max(busy, key=lambda name: busy[name])
    clock = profile.compute_units[busiest].clock_hz
    return Estimate(
        latency_ms=total_ms,
        cycles=round(total_ms * 1e-3 * clock) if clock else None,
        energy_mj=sum(layer.energy_mj for layer in layers),
        peak_memory_bytes=peak,
        weight_bytes=weights,
        flops=analysis.flops,
        utilisation={name: (ms / total_ms if total_ms else 0.0) for name, ms in busy.items()},
        calibrated_utc=fit.created_utc if fit is not None else None,
        **figures_basis(profile, fit),
        memory=memory,
        per_layer=layers,
    )
