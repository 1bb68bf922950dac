"""Size and render time of the HTML reports, on models from 15 to a few hundred kernels.

    .venv/bin/python benchmarks/report.py [--models mobilenet_v2,resnet50,...] [--out benchmarks/results/report.json]

Each model of benchmarks/aihub_models.py is analysed at fp16 (cached in the edgesdk cache, as
device_fidelity.py does), simulated on the phone and rendered as the report `profile --html`
writes; the bundled example's deploy report is measured as `make demo` writes it. Render time is
the median of 5, beside the time of the simulation it reports (partition + cost model, measured in
the same run); size against the 1 MB a report in every artifact may take.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import median_ms, write_result  # noqa: E402
from device_fidelity import analysis_of  # noqa: E402

import edgesdk  # noqa: E402
from edgesdk.artifact.manifest import Manifest  # noqa: E402
from edgesdk.compile.kernels import ModelAnalysis  # noqa: E402
from edgesdk.devices.profile import DeviceProfile  # noqa: E402
from edgesdk.report.html import cost_html  # noqa: E402
from edgesdk.simulate.cost_model import simulate  # noqa: E402
from edgesdk.simulate.partition import partition  # noqa: E402
from edgesdk.verbs.pipeline import read_analysis  # noqa: E402

LIMIT = 1_000_000
REPEAT = 5


def measured(name: str, analysis: ModelAnalysis, profile: DeviceProfile, manifest: Manifest | None = None) -> dict:
    """Render ``name``'s report on ``profile`` (with the deploy's ``manifest``): its size, and
    render time beside the time of the simulation it reports."""
    placed = partition(analysis, profile)
    estimate = manifest.estimate if manifest is not None and manifest.estimate is not None else simulate(analysis, placed, profile)

    def render() -> str:
        return cost_html(name, profile, estimate, placed.info(), manifest=manifest)

    size = len(render().encode())
    render_ms = median_ms(render, REPEAT)
    simulate_ms = median_ms(lambda: simulate(analysis, partition(analysis, profile), profile), REPEAT)
    print(f"{name:<14} {len(analysis.kernels):>4} kernels {size / 1024:7.1f} KiB ({size / LIMIT:4.0%} of 1 MB)  render {render_ms:6.1f} ms", end="")
    print(f" = {render_ms / simulate_ms:5.1f}x the simulation")
    return {"model": name, "kernels": len(analysis.kernels), "bytes": size, "render_ms": round(render_ms, 1), "simulate_ms": round(simulate_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet50,inception_v3,densenet121,vit")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "report.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "examples"))
    from make_example import hand_tracker  # the bundled example of `make demo`

    with tempfile.TemporaryDirectory() as scratch:
        example = Path(scratch) / "hand_tracker.onnx"
        example.write_bytes(hand_tracker().SerializeToString())
        artifact = edgesdk.deploy(example, "xr-headset", Path(scratch) / "a", input_shapes={"frames": [1, 3, 96, 96]})
        rows = [
            {
                **measured("hand_tracker", read_analysis(artifact.path), edgesdk.get_device("xr-headset"), artifact.manifest),
                "artifact_report_bytes": (artifact.path / "report.html").stat().st_size,
            }
        ]
    rows += [measured(name, analysis_of(name, "fp16"), edgesdk.get_device("phone")) for name in args.models.split(",")]
    write_result(args.out, {"limit_bytes": LIMIT, "reports": rows})


if __name__ == "__main__":
    main()
