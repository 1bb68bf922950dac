"""Fuzzing what users hand edgesdk, with hypothesis (fixed seed): mutated ONNX bytes, mutated
ONNX protobuf fields, mutated profile YAML, mutated npz files (edgesdk.testing.fuzzing).

    .venv/bin/python benchmarks/fuzz.py [--cases 2600] [--out benchmarks/results/fuzz.json]

``--cases`` per target (four targets). Every case must be accepted or rejected with an edgesdk
error (one line, exit 2 on the CLI); an uncaught exception is a bug and is listed with the input
that raised it. Nothing here is timed against a reference: the counts are the result.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_result  # noqa: E402

from edgesdk.testing import fuzzing  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2600, help="Cases per target.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.json")
    args = parser.parse_args()
    started = time.monotonic()
    results = {}
    for name, make in fuzzing.targets().items():
        results[name] = fuzzing.run_target(args.cases, make)
        print(f"{name}: {results[name]}", flush=True)
    total = {kind: sum(result[kind] for result in results.values()) for kind in ("cases", "accepted", "rejected", "uncaught")}
    write_result(args.out, {"seed": fuzzing.SEED, "seconds": round(time.monotonic() - started, 1), "total": total, "targets": results})
    print(total)


if __name__ == "__main__":
    main()
