"""Qualcomm AI Hub's published real-device latencies as one table (benchmarks/data/aihub_perf.csv).

    .venv/bin/python benchmarks/aihub_table.py GIT_DIR [--out benchmarks/data/aihub_perf.csv]

GIT_DIR is a git directory of github.com/quic/ai-hub-models (a clone, or the snapshot the tool
library's `fetch github:quic/ai-hub-models` brings). Every `qai_hub_models/models/*/perf.yaml` at
its HEAD is read (`precisions.<precision>.components.<component>.performance_metrics.<device>.
<runtime>`), each device mapped to its chipset by `qai_hub_models/devices_and_chipsets.yaml`, and
one row written per entry on the chipsets our built-in profiles stand for (phone: Snapdragon 8
Gen 3; automotive: SA8295P; iot: QCS6490; xr-headset: the QCS8450 proxy AI Hub uses for the XR2
Gen 2). Entries without a per-inference latency (LLMs: tokens per second) are left out. The
latency is in milliseconds as published; layer counts the yaml omits are 0. See
benchmarks/data/README_aihub.md.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHIPSETS = ("qualcomm-snapdragon-8gen3", "qualcomm-sa8295p", "qualcomm-qcs6490", "qualcomm-qcs8450-proxy")
COLUMNS = [
    "model",
    "component",
    "device",
    "chipset",
    "runtime",
    "precision",
    "inference_time_ms",
    "peak_memory_mb_min",
    "peak_memory_mb_max",
    "primary_compute_unit",
    "layers_npu",
    "layers_gpu",
    "layers_cpu",
    "layers_total",
    "source_path",
    "source_commit",
]


def _show(git_dir: Path, path: str) -> str:
    return subprocess.run(["git", "-C", str(git_dir), "show", f"HEAD:{path}"], capture_output=True, text=True, check=True).stdout


def rows(git_dir: Path) -> list[dict]:
    """The table's rows from the snapshot at ``git_dir``'s HEAD, sorted."""
    git = ["git", "-C", str(git_dir)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    listing = subprocess.run([*git, "ls-tree", "-r", "--name-only", "HEAD"], capture_output=True, text=True, check=True).stdout.split()
    chipset_of = {name: device["chipset"] for name, device in yaml.safe_load(_show(git_dir, "qai_hub_models/devices_and_chipsets.yaml"))["devices"].items()}
    table = []
    for path in (name for name in listing if name.startswith("qai_hub_models/models/") and name.endswith("/perf.yaml")):
        model = path.split("/")[2]
        for precision, by_precision in (yaml.safe_load(_show(git_dir, path)).get("precisions") or {}).items():
            for component, by_component in (by_precision.get("components") or {}).items():
                for device, by_device in (by_component.get("performance_metrics") or {}).items():
                    chipset = chipset_of.get(device)
                    if chipset not in CHIPSETS:
                        continue
                    for runtime, entry in by_device.items():
                        if entry.get("inference_time_milliseconds") is None:
                            continue  # an LLM: tokens per second, no per-inference latency
                        memory, layers = entry.get("estimated_peak_memory_range_mb") or {}, entry.get("layer_counts") or {}
                        table.append(
                            {
                                "model": model,
                                "component": component,
                                "device": device,
                                "chipset": chipset,
                                "runtime": runtime,
                                "precision": by_component.get("precision") or precision,
                                "inference_time_ms": entry["inference_time_milliseconds"],
                                "peak_memory_mb_min": memory.get("min", ""),
                                "peak_memory_mb_max": memory.get("max", ""),
                                "primary_compute_unit": entry.get("primary_compute_unit") or "",
                                **{f"layers_{unit}": layers.get(unit, 0) for unit in ("npu", "gpu", "cpu", "total")},
                                "source_path": path,
                                "source_commit": commit,
                            }
                        )
    return sorted(table, key=lambda row: (row["model"], row["component"], row["chipset"], row["runtime"], row["precision"], row["device"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("git_dir", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/data/aihub_perf.csv")
    args = parser.parse_args()
    table = rows(args.git_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    print(f"wrote {args.out}: {len(table)} rows, {len({row['model'] for row in table})} models")


if __name__ == "__main__":
    main()
