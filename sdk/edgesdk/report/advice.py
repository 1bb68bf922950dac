"""What a report says about a partition in words: the fallbacks grouped by reason, and a hint
where the user's choice of precision placed kernels past a unit."""

from __future__ import annotations

from collections import Counter

from edgesdk.devices.profile import DeviceProfile
from edgesdk.simulate.cost_report import PartitionInfo

# The --quantize scheme that makes a float model compute in these dtypes.
SCHEME_FOR_DTYPE = {"float16": "fp16", "int8": "int8"}


def fallback_reasons(partition: PartitionInfo) -> list[str]:
    """One line per (unit skipped, reason, unit taken): how many kernels, e.g. ``1 kernel: npu ->
    cpu, unsupported op class sort (topk)``."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for fallback in partition.fallbacks:
        groups.setdefault((fallback.from_unit, fallback.to_unit, fallback.reason), []).append(fallback.op)
    lines = []
    for (source, target, reason), ops in groups.items():
        named = ", ".join(ops[:3]) + (f" and {len(ops) - 3} more" if len(ops) > 3 else "")
        lines.append(f"{len(ops)} kernel{'s' if len(ops) > 1 else ''}: {source} -> {target}, {reason} ({named})")
    return lines


def hints(partition: PartitionInfo, profile: DeviceProfile) -> list[str]:
    """Where the precision, not the model, chose the unit: float32 kernels placed past an NPU that
    has no float32 (``float32 runs on the gpu (13 kernels): the npu has no float32; try --quantize
    int8 or fp16``, the schemes in the order of the unit's dtypes), weights in a format a unit does
    not run natively."""
    lines = []
    # Placement reasons are partition.why_not's: "dtype D not supported (...)" or "S weights not native (...)".
    skipped = Counter((placement.from_unit, placement.to_unit, tuple(placement.reason.split(" ")[:2])) for placement in partition.placements)
    for (source, target, (first, second)), count in skipped.items():
        unit = profile.compute_units.get(source)
        kernels = f"{count} kernel{'s' if count > 1 else ''}"
        if unit is None:
            continue
        if first == "dtype":
            schemes = [SCHEME_FOR_DTYPE[dtype] for dtype in unit.dtypes if dtype in SCHEME_FOR_DTYPE and dtype != second]
            advice = f"; try --quantize {' or '.join(schemes)}" if second == "float32" and schemes else ""
            lines.append(f"{second} runs on the {target} ({kernels}): the {source} has no {second}{advice}")
        else:
            lines.append(f"{first} weights run on the {target} ({kernels}): the {source} runs {', '.join(unit.quantization_schemes)} natively")
    return lines
