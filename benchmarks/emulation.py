"""The mcu's own code under QEMU against the simulator: instructions, RAM and flash per model.

    .venv/bin/python benchmarks/emulation.py [--out benchmarks/results/emulation.json]

Each model is deployed to the mcu in float32 and in int8 (calibrated on 16 random samples) and
run as Cortex-M7 firmware under qemu-system-arm (`Artifact.verify(emulate=True)`, the board
mps2-an500). Per model: whether the outputs match onnxruntime, the instructions the entry point
executed (QEMU -icount) against the simulator's latency times the profile's clock (the simulated
cycles; instructions are not cycles: a Cortex-M7 issues up to two per cycle and stalls on memory,
so the ratio says how far the simulator's idea of the work is from the code that runs), and the
firmware's RAM (arm-none-eabi-size data + bss) against the plan: the runner's arena (tensors and
the kernels' scratch) and I/O buffers, plus the C library and harness (measured on the same
firmware around an empty model). Flash (text) against the weights.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_result  # noqa: E402

import edgesdk  # noqa: E402
from edgesdk.testing import models  # noqa: E402

MODELS = {
    "tiny_cnn": (models.tiny_cnn, {"image": [1, 3, 32, 32]}),
    "mlp": (models.mlp, {"features": [1, 64]}),
    "transformer_block": (models.transformer_block, {"tokens": [1, 16, 64]}),
    "depthwise_net": (models.depthwise_net, {"image": [1, 3, 96, 96]}),
    "branchy_net": (models.branchy_net, {"image": [1, 3, 64, 64]}),
    "mcu_stem_net": (models.mcu_stem_net, {"image": [1, 3, 128, 128]}),
}
CALIBRATION_SAMPLES = 16


def measure(name: str, precision: str, out: Path) -> dict:
    build, shapes = MODELS[name]
    options: dict = {}
    if precision == "int8":
        rng = np.random.default_rng(0)
        samples = {key: rng.standard_normal((CALIBRATION_SAMPLES, *dims[1:])).astype(np.float32) for key, dims in shapes.items()}
        options = {"quantize": "int8", "calibration": samples}
    try:
        artifact = edgesdk.deploy(build(), "mcu", out, input_shapes=shapes, **options)
        result = artifact.verify(emulate=True)
    except edgesdk.EdgeSDKError as exc:
        print(f"{name:18} {precision:7} error: {exc}", flush=True)
        return {"model": name, "precision": precision, "error": str(exc)}
    emulation, estimate = result.emulation, artifact.manifest.estimate
    assert emulation is not None and estimate is not None and estimate.memory is not None
    assert emulation.instructions is not None and emulation.runtime_ram_bytes is not None and estimate.memory.device_ram_bytes is not None
    assert emulation.simulated_cycles is not None and estimate.cycles == emulation.simulated_cycles
    cycles = emulation.simulated_cycles
    ram = (emulation.data_bytes or 0) + (emulation.bss_bytes or 0)
    planned = estimate.memory.device_ram_bytes + emulation.runtime_ram_bytes
    row = {
        "model": name,
        "precision": precision,
        "passed": result.passed,
        "max_abs_err": result.max_abs_err,
        "instructions": emulation.instructions,
        "simulated_latency_ms": estimate.latency_ms,
        "simulated_cycles": cycles,
        "instructions_per_simulated_cycle": round(emulation.instructions / cycles, 3),
        "firmware_ram_bytes": ram,
        "planned_ram_bytes": planned,
        "ram_vs_plan": round(ram / planned - 1, 4),
        "device_ram_bytes": estimate.memory.device_ram_bytes,
        "runtime_ram_bytes": emulation.runtime_ram_bytes,
        "tensor_arena_bytes": estimate.memory.arena_bytes,
        "scheduled_peak_bytes": estimate.memory.scheduled_peak_bytes,
        "patches": None if estimate.memory.patches is None else "x".join(map(str, estimate.memory.patches.grid)),
        "firmware_text_bytes": emulation.text_bytes,
        "weight_bytes": estimate.weight_bytes,
        "emulation_seconds": emulation.seconds,
    }
    print(
        f"{name:18} {precision:7} {'ok' if result.passed else 'FAIL':4} {emulation.instructions / 1e6:8.2f} M instr"
        f" / {cycles / 1e6:8.2f} M sim. cycles = {row['instructions_per_simulated_cycle']:6.2f}"
        f"   RAM {ram / 1024:8.1f} KiB vs plan {planned / 1024:8.1f} KiB ({row['ram_vs_plan']:+.1%})",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/emulation.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgesdk-bench-emulation-") as scratch:
        for name in MODELS:
            for precision in ("float32", "int8"):
                rows.append(measure(name, precision, Path(scratch) / f"{name}-{precision}"))
    measured = [row for row in rows if "error" not in row]
    ratios = [row["instructions_per_simulated_cycle"] for row in measured]
    summary = {
        "runs": len(rows),
        "matched_onnxruntime": sum(row["passed"] for row in measured),
        "instructions_per_simulated_cycle_geomean": round(math.exp(sum(map(math.log, ratios)) / len(ratios)), 3) if ratios else None,
        "worst_ram_vs_plan": max((abs(row["ram_vs_plan"]) for row in measured), default=None),
    }
    print(summary)
    write_result(args.out, {"benchmark": "emulation", "device": "mcu", "summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
