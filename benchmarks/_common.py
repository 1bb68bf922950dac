"""What the benchmark scripts share: timing and writing their JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort

import edgesdk


def median_ms(function: Callable[[], object], repeat: int) -> float:
    """Median wall time in milliseconds over ``repeat`` calls, after one warm-up call."""
    function()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def write_result(path: Path, result: dict) -> None:
    """Write ``result`` as JSON with the machine and versions it was measured with."""
    result = {
        **result,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"edgesdk": edgesdk.__version__, "onnxruntime": ort.__version__},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
