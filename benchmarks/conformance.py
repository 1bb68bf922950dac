"""The ONNX backend node suite through `edgesdk.deploy(..., DEVICE)` + `Artifact.run`, against each
case's own expected outputs and tolerances (edgesdk.testing.conformance).

    .venv/bin/python benchmarks/conformance.py [--device pc] [--sample N --seed S] [--ops A,B]
        [--failed-from benchmarks/results/conformance.json] [--out benchmarks/results/conformance.json]

Writes per-op counts, the pass rate over runnable cases (onnxruntime runs them and agrees with
the expected outputs; cases with string, sequence or optional values are counted apart), the share
lowered entirely through TVM, and the reason for every failure. ``--failed-from`` re-runs only the
cases a previous run did not pass and merges the results into it. The whole suite takes about an
hour on 2 cores (each case is a TVM compile).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_result  # noqa: E402

from edgesdk.testing.conformance import CaseResult, node_cases, run_cases  # noqa: E402

COUNTED = ("pass", "mismatch", "error", "crash")


def summary(results: list[CaseResult]) -> dict:
    outcomes = collections.Counter(result.outcome for result in results)
    runnable = sum(outcomes[name] for name in COUNTED)
    per_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for result in results:
        per_op[result.op][result.outcome] += 1
    return {
        "cases": len(results),
        "outcomes": dict(outcomes),
        "runnable": runnable,
        "pass_rate": round(outcomes["pass"] / runnable, 4) if runnable else None,
        "through_tvm_only": sum(result.outcome == "pass" and not result.onnxruntime_partition for result in results),
        "tvm_only_rate": round(sum(result.outcome == "pass" and not result.onnxruntime_partition for result in results) / runnable, 4) if runnable else None,
        "per_op": {op: dict(counts) for op, counts in sorted(per_op.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="pc")
    parser.add_argument("--sample", type=int, help="Run a seeded sample of this many cases.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ops", help="Only cases of these operators (comma-separated).")
    parser.add_argument("--failed-from", type=Path, help="Re-run the cases this earlier result did not pass through TVM alone; merge into it.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "conformance.json")
    args = parser.parse_args()

    cases = node_cases()
    earlier: dict[str, dict] = {}
    if args.failed_from:
        earlier = {row["name"]: row for row in json.loads(args.failed_from.read_text())["results"]}
        tvm_only = {name for name, row in earlier.items() if row.get("outcome") == "pass" and not row.get("onnxruntime_partition")}
        cases = [case for case in cases if case.name not in tvm_only]
    if args.ops:
        wanted = set(args.ops.split(","))
        from edgesdk.testing.conformance import op_of

        cases = [case for case in cases if op_of(case.model) in wanted]
    if args.sample:
        cases = random.Random(args.seed).sample(cases, min(args.sample, len(cases)))
    started = time.monotonic()
    done = collections.Counter()

    def progress(result: CaseResult) -> None:
        done[result.outcome] += 1
        if result.outcome in ("mismatch", "error", "crash"):
            print(f"{result.outcome:8} {result.name}: {result.reason[:160]}", flush=True)
        if sum(done.values()) % 50 == 0:
            print(f"-- {sum(done.values())}/{len(cases)} {dict(done)} {time.monotonic() - started:.0f} s", flush=True)

    results = run_cases(cases, args.device, workers=args.workers, on_result=progress)
    rows = {**earlier, **{result.name: result.as_json() for result in results}}
    merged = [CaseResult(**row) for row in rows.values()]
    result = {
        "device": args.device,
        "seconds": round(time.monotonic() - started, 1),
        "selection": {"sample": args.sample, "seed": args.seed, "ops": args.ops, "failed_from": str(args.failed_from) if args.failed_from else None},
        **summary(merged),
        "results": sorted(rows.values(), key=lambda row: row["name"]),
    }
    write_result(args.out, result)
    print(json.dumps({key: result[key] for key in ("cases", "outcomes", "runnable", "pass_rate", "tvm_only_rate")}))


if __name__ == "__main__":
    main()
