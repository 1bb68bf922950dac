"""Activation memory by operator order: the peak in the file's order against the order edgesdk runs.

    .venv/bin/python benchmarks/memory.py [--out benchmarks/results/memory.json]

Each model is deployed to pc (edgesdk.compile.reorder orders its kernels after fusion); from the
artifact: every activation in a buffer of its own (naive), the peak in the file's node order, the
peak in the order the artifact runs, the ratio, whether that order is proven optimal, the seconds
the search took, and the bytes TVM's static plan allocates in that order (arena). Then the same
kernels simulated on the phone (its GPU runs float32: 2 MB on chip) and on a phone with 256 KB of
on-chip memory, with kernels tiled to fit (edgesdk.simulate.tiling) and without (they spill):
latency, and DRAM bytes for tiles and spills. Last, models too big for the mcu's 1 MiB of SRAM
deployed there with their first stage in patches (edgesdk.compile.patches): memory needed with and
without, the grid, and the multiply-adds computed again. Irregular models
are included (level-by-level branches, a randomly wired NAS-like DAG, a U-Net, models shuffled into
a poor but valid topological order) and the real PP-OCR det and YOLOv8n from PyPI wheels when
`make test` has fetched them. Last, the search alone on synthetic 500-node graphs (a chain of
branchy blocks, and eight long parallel chains, where the exact search gives way to the beam).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_result  # noqa: E402
from make_example import hand_tracker  # noqa: E402

import edgesdk  # noqa: E402
from edgesdk.compile.kernels import ModelAnalysis  # noqa: E402
from edgesdk.compile.ordering import Node, schedule  # noqa: E402
from edgesdk.devices.profile import DeviceProfile  # noqa: E402
from edgesdk.simulate.cost_model import simulate  # noqa: E402
from edgesdk.simulate.partition import partition  # noqa: E402
from edgesdk.testing import models  # noqa: E402
from edgesdk.testing.real_models import REAL_MODELS, real_model, wheels_dir  # noqa: E402

IMAGE_64 = {"image": [1, 3, 64, 64]}
MODELS = {
    "level_by_level_branches": (models.level_by_level_branches, IMAGE_64),
    "branchy_net": (models.branchy_net, IMAGE_64),
    "branchy_net, shuffled": (lambda: models.shuffled(models.branchy_net(), 1), IMAGE_64),
    "unet_like": (models.unet_like, IMAGE_64),
    "nas_cells": (models.nas_cells, {"image": [1, 3, 32, 32]}),
    "nas_cells, shuffled": (lambda: models.shuffled(models.nas_cells(), 3), {"image": [1, 3, 32, 32]}),
    "mobilenet_v2_like": (models.mobilenet_v2_like, {"image": [1, 3, 224, 224]}),
    "resnet18_like": (models.resnet18_like, {"image": [1, 3, 224, 224]}),
    "hand_tracker (example)": (hand_tracker, {"frames": [1, 3, 96, 96]}),
}
REAL = {"yolov8n (real)": "nudenet_yolov8n", "ppocr_det (real)": "ppocr_v4_det"}


def synthetic(kind: str) -> list[Node]:
    rng = random.Random(7)
    nodes = [Node(size=4096)]
    if kind == "blocks":  # 125 blocks of a 3-way branch joined: 502 nodes
        for _ in range(125):
            start = len(nodes) - 1
            ends = []
            for _ in range(3):
                nodes.append(Node(size=rng.choice([1024, 4096, 16384]), inputs=(start,)))
                ends.append(len(nodes) - 1)
            nodes.append(Node(size=4096, inputs=tuple(ends)))
        nodes.append(Node(size=64, inputs=(len(nodes) - 1,), output=True))
    else:  # eight parallel chains of 62 nodes, joined at the end: 498 nodes
        ends = []
        for _ in range(8):
            previous = 0
            for _ in range(62):
                nodes.append(Node(size=rng.choice([256, 4096]), inputs=(previous,)))
                previous = len(nodes) - 1
            ends.append(previous)
        nodes.append(Node(size=64, inputs=tuple(ends), output=True))
    return nodes


def with_on_chip(profile: DeviceProfile, size: int) -> DeviceProfile:
    units = {name: unit.model_copy(update={"on_chip_memory_bytes": size}) for name, unit in profile.compute_units.items()}
    return profile.model_copy(update={"id": f"{profile.id}-{size // 1024}kb", "compute_units": units})


def tiling_study(analysis: ModelAnalysis, profiles: list[DeviceProfile]) -> dict:
    """Per profile: simulated latency and off-chip bytes, with tiling and with spills instead."""
    study = {}
    for profile in profiles:
        placed = partition(analysis, profile)
        tiled, spilled = simulate(analysis, placed, profile), simulate(analysis, placed, profile, tiling=False)
        assert tiled.memory is not None and spilled.memory is not None
        study[profile.id] = {
            "latency_ms_tiled": round(tiled.latency_ms, 4),
            "latency_ms_untiled": round(spilled.latency_ms, 4),
            "offchip_bytes_tiled": tiled.memory.spill_bytes,
            "offchip_bytes_untiled": spilled.memory.spill_bytes,
            "kernels_tiled": sum(layer.tiles > 1 for layer in tiled.per_layer),
            "kernels_spilled": sum(layer.spilled for layer in tiled.per_layer),
        }
    return study


PATCHED = {
    "mcu_stem_net": (models.mcu_stem_net, {"image": [1, 3, 128, 128]}),
    "large_spatial_net": (models.large_spatial_net, {"image": [1, 3, 224, 224]}),
}


def patch_study(scratch: Path) -> list[dict]:
    rows = []
    for name, (build, shapes) in PATCHED.items():
        started = time.perf_counter()
        artifact = edgesdk.deploy(build(), "mcu", scratch / f"patched-{name}", input_shapes=shapes)
        memory = artifact.manifest.estimate.memory
        assert memory is not None and memory.patches is not None
        patched = memory.patches
        rows.append(
            {
                "model": name,
                "device": "mcu",
                "verified": artifact.manifest.verification.passed,
                "cut": patched.cut,
                "grid": patched.grid,
                "unpatched_bytes": patched.unpatched_bytes,
                "patched_bytes": patched.patched_bytes,
                "ratio": round(patched.patched_bytes / patched.unpatched_bytes, 3),
                "recompute": round(patched.recompute_macs / patched.stage_macs, 4),
                "deploy_s": round(time.perf_counter() - started, 1),
            }
        )
        row = rows[-1]
        print(
            f"{name} on mcu: {patched.unpatched_bytes / 1024:.0f} KiB -> {patched.patched_bytes / 1024:.0f} KiB ({row['ratio']:.2f}x) "
            f"in {patched.grid[0]}x{patched.grid[1]} patches, +{row['recompute']:.1%} multiply-adds in the stage, verified {row['verified']}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.json")
    args = parser.parse_args()
    builds = dict(MODELS)
    if wheels_dir().is_dir():
        for name, model_id in REAL.items():
            entry = REAL_MODELS[model_id]
            builds[name] = ((lambda model_id=model_id: real_model(model_id)), {entry.input_name: list(entry.shape)})
    phone = edgesdk.get_device("phone")
    profiles = [phone, with_on_chip(phone, 256 * 1024)]
    records = []
    print(f"{'model':<26} {'kernels':>7} {'naive KiB':>10} {'file KiB':>9} {'ours KiB':>9} {'ratio':>6} {'arena KiB':>9} {'exact':>5} {'search s':>8}")
    with tempfile.TemporaryDirectory(prefix="edgesdk-memory-") as scratch:
        for index, (name, (build, shapes)) in enumerate(builds.items()):
            started = time.perf_counter()
            artifact = edgesdk.deploy(build(), "pc", Path(scratch) / str(index), input_shapes=shapes)
            memory = artifact.manifest.estimate.memory
            assert memory is not None
            record = {
                "model": name,
                "kernels": len(memory.timeline),
                "naive_bytes": memory.naive_bytes,
                "file_order_peak_bytes": memory.default_order_peak_bytes,
                "scheduled_peak_bytes": memory.scheduled_peak_bytes,
                "ratio": round(memory.scheduled_peak_bytes / memory.default_order_peak_bytes, 3),
                "arena_bytes": memory.arena_bytes,
                "exact": memory.ordering_exact,
                "deploy_s": round(time.perf_counter() - started, 2),
            }
            analysis = ModelAnalysis.model_validate_json((artifact.path / "analysis.json").read_text())
            record["search_s"] = analysis.order.seconds if analysis.order else None
            record["tiling"] = tiling_study(analysis, profiles)
            records.append(record)
            print(
                f"{name:<26} {record['kernels']:>7} {memory.naive_bytes / 1024:>10.0f} {memory.default_order_peak_bytes / 1024:>9.0f} "
                f"{memory.scheduled_peak_bytes / 1024:>9.0f} {record['ratio']:>6.2f} {(memory.arena_bytes or 0) / 1024:>9.0f} "
                f"{str(memory.ordering_exact):>5} {record['search_s']:>8.3f}",
                flush=True,
            )
            for device, row in record["tiling"].items():
                print(
                    f"{'':<26} {device}: {row['latency_ms_tiled']:.3f} ms tiled ({row['kernels_tiled']} kernels, "
                    f"{row['offchip_bytes_tiled'] / 2**10:.0f} KiB off chip) vs {row['latency_ms_untiled']:.3f} ms untiled "
                    f"({row['offchip_bytes_untiled'] / 2**10:.0f} KiB)"
                )
        patched = patch_study(Path(scratch))
    large = []
    for kind in ("blocks", "parallel chains"):
        nodes = synthetic(kind)
        result = schedule(nodes)
        large.append(
            {
                "graph": f"synthetic {kind}",
                "nodes": len(nodes),
                "seconds": round(result.seconds, 3),
                "exact": result.exact,
                "ratio": round(result.peak_bytes / result.file_order_peak_bytes, 3),
            }
        )
        print(f"synthetic {kind}: {len(nodes)} nodes ordered in {result.seconds:.2f} s (exact {result.exact}), peak ratio {large[-1]['ratio']:.2f}")
    write_result(args.out, {"benchmark": "memory", "device": "pc", "models": records, "patches": patched, "large_graphs": large})


if __name__ == "__main__":
    main()
