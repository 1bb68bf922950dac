"""How well the simulator predicts real devices: our figures against Qualcomm AI Hub's published
latencies (benchmarks/data/aihub_perf.csv), with the fitted figures cross-validated.

    .venv/bin/python benchmarks/device_fidelity.py [--devices phone,iot] [--models resnet18,...]
        [--out benchmarks/results/device_fidelity.json]

For every architecture of benchmarks/aihub_models.py (built here as ONNX with seeded weights) and
every precision AI Hub publishes for it (float runs fp16 on the NPU, w8a8 is our int8, w8a16 our
w8a16), the model's kernels are analysed once (cached in the edgesdk cache). Then per device:

- the published figure is the QNN one, else TFLite's, where AI Hub ran every layer on the NPU;
- the MobileNet (v2, v3) and ResNet families (ResNet, ResNeXt, Wide ResNet) are held out: never
  used to fit anything (aihub_models.HELD_OUT);
- the free figures of the profile (``free_figures``: the NPU's launch overhead, tensor
  bandwidth and efficiencies, its fp16 and int16 rates, the CPU<->accelerator synchronisation) are fitted to the other models
  (edgesdk.simulate.profile_fit), leave one model out for the cross-validated errors, then on
  all of them for the figures to ship;
- reported: first-order error (the profile's figures before any fit), cross-validated error,
  held-out error with the full fit, and the profile as shipped; on the phone, the int8-over-fp16
  speed-up of each held-out model, simulated vs published.

The fitted figures are printed and written to the JSON; the profiles' YAML carries them with a
`fit:` record (device_profiles/*.yaml), and this script starts every fit from that record's
first-order values, so running it again reproduces them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_result  # noqa: E402
from aihub_models import HELD_OUT_FAMILIES as HELD_OUT  # noqa: E402
from aihub_models import MODELS  # noqa: E402

from edgesdk.compile.build_cache import cache_root  # noqa: E402
from edgesdk.compile.kernels import ModelAnalysis  # noqa: E402
from edgesdk.compile.lowering import PIPELINE_VERSION  # noqa: E402
from edgesdk.devices.profile import DeviceProfile, figure  # noqa: E402
from edgesdk.devices.registry import get_device  # noqa: E402
from edgesdk.quantization.recipe import recipe  # noqa: E402
from edgesdk.simulate.profile_fit import Case, Figures, Fitter, errors, prepare  # noqa: E402
from edgesdk.verbs.pipeline import analysed, load_precision  # noqa: E402

TABLE = ROOT / "benchmarks" / "data" / "aihub_perf.csv"
CHIPSETS = {"phone": "qualcomm-snapdragon-8gen3", "automotive": "qualcomm-sa8295p", "iot": "qualcomm-qcs6490", "xr-headset": "qualcomm-qcs8450-proxy"}
PRECISIONS = {"float": "fp16", "w8a8": "int8", "w8a16": "w8a16"}  # AI Hub's name -> our --quantize
RUNTIMES = ("qnn_dlc", "tflite")  # the published figure: QNN's, else TFLite's
CALIBRATION_SAMPLES = 16
FIT_HEADING = "# The figures marked `fit:` above, fitted to published real-device latencies."


def published() -> dict[tuple[str, str, str], tuple[float, str]]:
    """(model, chipset, our precision) -> (ms, runtime): AI Hub's all-NPU figure."""
    found: dict[tuple[str, str, str], tuple[float, str]] = {}
    with TABLE.open() as table:
        # Only runs with every layer on the NPU: a partly-CPU run (DenseNet-121 and ViT int8 in
        # TFLite on the QCS6490, 122 and 240 CPU layers, 10x slower) measures another placement.
        rows = [row for row in csv.DictReader(table) if row["layers_npu"] == row["layers_total"] and row["precision"] in PRECISIONS]
    for runtime in reversed(RUNTIMES):  # QNN's row overwrites TFLite's
        for row in rows:
            if row["runtime"] == runtime:
                found[(row["model"], row["chipset"], PRECISIONS[row["precision"]])] = (float(row["inference_time_ms"]), runtime)
    return found


def free_figures(profile: DeviceProfile, precisions: set[str]) -> list[str]:
    """The figures a fit chooses: the NPU's per-op overhead, tensor streaming bandwidth and share of
    peak per op class (per dtype where the profile splits it), its fp16 and int16 rates where those precisions were measured (no vendor
    publishes them), and the synchronisation between CPU and accelerator. Peak int8 rates and DRAM bandwidth stay public."""
    npu = next(name for name, unit in profile.compute_units.items() if unit.kind == "npu")
    unit = profile.compute_units[npu]
    paths = [f"compute_units.{npu}.launch_overhead_s", f"compute_units.{npu}.tensor_bandwidth_bytes_per_s"]
    paths += [f"compute_units.{npu}.efficiency.{op}" for op in unit.efficiency]
    paths += [f"compute_units.{npu}.efficiency_by_dtype.{dtype}.{op}" for dtype, ops in unit.efficiency_by_dtype.items() for op in ops]
    paths += [f"compute_units.{npu}.peak_ops_per_s.{dtype}" for dtype, scheme in (("float16", "fp16"), ("int16", "w8a16")) if scheme in precisions]
    return [*paths, "interconnect.latency_s"]


def analysis_of(name: str, precision: str) -> ModelAnalysis:
    """The kernels of AI Hub model ``name`` at ``precision``, cached in the edgesdk cache."""
    model = MODELS[name]()
    digest = hashlib.sha256(model.SerializeToString()).hexdigest()[:16]
    path = cache_root() / "device-fidelity" / f"{name}-{precision}-{digest}-p{PIPELINE_VERSION}.json"
    if path.is_file():
        return ModelAnalysis.model_validate_json(path.read_text())
    (spec,) = model.graph.input
    shape = [dim.dim_value for dim in spec.type.tensor_type.shape.dim]
    calibration = {spec.name: np.random.default_rng(0).standard_normal((CALIBRATION_SAMPLES, *shape[1:])).astype(np.float32)}
    chosen = recipe(precision, calibration if precision != "fp16" else None, get_device("phone"))
    analysis, _ = analysed(load_precision(model, None, chosen, calibration if precision != "fp16" else None), timeout_s=3600)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(analysis.model_dump_json())
    return analysis


def rounded(values: dict) -> dict:
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in values.items()}


def device_report(device: str, table: dict, analyses: dict[tuple[str, str], ModelAnalysis]) -> dict:
    profile = get_device(device)
    figures = Figures(profile)
    cases: list[Case] = [
        prepare(name, precision, table[(name, CHIPSETS[device], precision)][0], analysis, figures)
        for (name, precision), analysis in analyses.items()
        if (name, CHIPSETS[device], precision) in table
    ]
    fitting = [case for case in cases if case.model not in HELD_OUT]
    held = [case for case in cases if case.model in HELD_OUT]
    paths = free_figures(profile, {case.precision for case in fitting})
    first_order = {path: (profile.fit.first_order.get(path) if profile.fit else None) or float(figure(profile, path)) for path in paths}
    fitter = Fitter(figures, paths, first_order)
    started = time.perf_counter()
    cross = fitter.cross_validate(fitting, on_fold=lambda model: print(f"  {device}: leave out {model}", flush=True))
    fitted = fitter.fit(fitting)
    print(f"  {device}: fits took {time.perf_counter() - started:.0f} s")

    def measured(group: list[Case]) -> list[float]:
        return [case.measured_ms for case in group]

    rows = []
    full = fitter.predict(cases, fitted)
    order = fitter.predict(cases, first_order)
    shipped = fitter.predict(cases, {})
    for index, case in enumerate(cases):
        row = {"model": case.model, "precision": case.precision, "held_out": case.model in HELD_OUT, "published_ms": case.measured_ms}
        row["runtime"] = table[(case.model, CHIPSETS[device], case.precision)][1]
        row |= {"first_order_ms": order[index], "fitted_ms": full[index], "shipped_ms": shipped[index]}
        if case in fitting:
            row["cross_validated_ms"] = cross[fitting.index(case)]
        rows.append(rounded(row))
    speedups = []
    by_key = {(case.model, case.precision): index for index, case in enumerate(cases)}
    for name in sorted({case.model for case in held}):
        if (name, "fp16") in by_key and (name, "int8") in by_key:
            fp16, int8 = by_key[(name, "fp16")], by_key[(name, "int8")]
            published_ratio = cases[fp16].measured_ms / cases[int8].measured_ms
            simulated_ratio = full[fp16] / full[int8]
            error = simulated_ratio / published_ratio - 1
            speedups.append(rounded({"model": name, "published": published_ratio, "simulated": simulated_ratio, "error": error}))
    fit_index = [cases.index(case) for case in fitting]
    held_index = [cases.index(case) for case in held]
    return {
        "chipset": CHIPSETS[device],
        "models_fitted": sorted({case.model for case in fitting}),
        "models_held_out": sorted({case.model for case in held}),
        "fitted_figures": {path: {"first_order": first_order[path], "fitted": value} for path, value in fitted.items()},
        "errors": {
            "first_order": rounded(errors([order[i] for i in range(len(cases))], measured(cases))),
            "cross_validated": rounded(errors(cross, measured(fitting))),
            "fitted_in_sample": rounded(errors([full[i] for i in fit_index], measured(fitting))),
            "held_out": rounded(errors([full[i] for i in held_index], measured(held))),
            "shipped_held_out": rounded(errors([shipped[i] for i in held_index], measured(held))),
        },
        "int8_over_fp16_held_out": speedups,
        "cases": rows,
    }


def write_fitted(path: Path, report: dict) -> None:
    """Write the fitted figures into the profile YAML at ``path`` in place (each line keeps its
    comment after ``# fit:``) and its ``fit:`` record, replacing an earlier one."""
    fitted = {figure_path: values["fitted"] for figure_path, values in report["fitted_figures"].items()}
    errors_cv = report["errors"]["cross_validated"]
    note = f"fit: AI Hub {report['chipset']} (the fit record below)"
    lines, keys = path.read_text().splitlines(), []
    for number, line in enumerate(lines):
        if line.startswith(("fit:", FIT_HEADING)):
            del lines[number:]
            break
        if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        keys[depth:] = [line.split(":", 1)[0].strip()]
        dotted = ".".join(keys)
        if dotted in fitted:
            comment = line.split("#", 1)[1] if "#" in line else ""
            first = comment.split("first order: ", 1)[1] if "first order: " in comment else ("" if comment.strip().startswith("fit") else comment.strip())
            moved = abs(fitted[dotted] / report["fitted_figures"][dotted]["first_order"] - 1) > 0.01
            said = note if moved else f"fit: AI Hub {report['chipset']} left it at first order (the data do not determine it)"
            lines[number] = f"{'  ' * depth}{keys[-1]}: {fitted[dotted]:.4g}  # {said}" + (f"; first order: {first}" if first else "")
    record = {
        "source": f"Qualcomm AI Hub published latencies on the NPU ({report['chipset']}; QNN, else TFLite), quic/ai-hub-models 52c080d, "
        "benchmarks/data/aihub_perf.csv; architectures rebuilt in benchmarks/aihub_models.py",
        "method": "least squares on log latency with a weak pull toward first order, leave-one-model-out cross-validated (benchmarks/device_fidelity.py)",
        "models": report["models_fitted"],
        "held_out": report["models_held_out"],
        "first_order": {figure_path: values["first_order"] for figure_path, values in report["fitted_figures"].items()},
        "cross_validated_median_error": round(errors_cv["median_error"], 3),
        "cross_validated_within_2x": round(errors_cv["within_2x"], 3),
    }
    text = "\n".join(lines).rstrip() + f"\n{FIT_HEADING}\n"
    path.write_text(text + yaml.safe_dump({"fit": record}, sort_keys=False, width=120))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default=",".join(CHIPSETS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "device_fidelity.json")
    parser.add_argument("--write-profiles", action="store_true", help="write the fitted figures into device_profiles/<device>.yaml")
    args = parser.parse_args()
    devices, names = args.devices.split(","), args.models.split(",")
    table = published()
    chipsets = {CHIPSETS[device] for device in devices}
    wanted = sorted({(model, precision) for (model, chipset, precision) in table if model in names and chipset in chipsets})
    analyses: dict[tuple[str, str], ModelAnalysis] = {}
    for count, (name, precision) in enumerate(wanted, 1):
        started = time.perf_counter()
        analyses[(name, precision)] = analysis_of(name, precision)
        kernels = len(analyses[(name, precision)].kernels)
        print(f"[{count}/{len(wanted)}] {name} {precision}: {kernels} kernels, {time.perf_counter() - started:.0f} s", flush=True)
    reports = {device: device_report(device, table, analyses) for device in devices}
    print(f"\n{'device':<11} {'cases':>5} {'first-order':>12} {'LOMO median':>12} {'LOMO <2x':>9} {'held-out median':>16} {'held-out <2x':>13}")
    for device, report in reports.items():
        e = report["errors"]
        print(
            f"{device:<11} {e['cross_validated']['cases']:>5} {e['first_order'].get('median_error', 0):>12.1%} {e['cross_validated']['median_error']:>12.1%}"
            f" {e['cross_validated']['within_2x']:>9.0%} {e['held_out'].get('median_error', 0):>16.1%} {e['held_out'].get('within_2x', 0):>13.0%}"
        )
    for device, report in reports.items():
        for speedup in report["int8_over_fp16_held_out"]:
            published_ratio, simulated = speedup["published"], speedup["simulated"]
            print(f"{device} {speedup['model']}: int8 over fp16 published {published_ratio:.2f}x, simulated {simulated:.2f}x ({speedup['error']:+.0%})")
        print(f"{device} fitted: " + ", ".join(f"{p.split('.', 1)[1]}={v['fitted']:.4g}" for p, v in report["fitted_figures"].items()))
    summary = {d: {k: r["errors"][k] for k in ("cross_validated", "held_out")} for d, r in reports.items()}
    print("median over devices of LOMO median error:", round(statistics.median(s["cross_validated"]["median_error"] for s in summary.values()), 3))
    write_result(args.out, {"source": str(TABLE.relative_to(ROOT)), "devices": reports})
    for device, report in reports.items() if args.write_profiles else ():
        write_fitted(ROOT / "device_profiles" / f"{device}.yaml", report)
        get_device(device)  # still a valid profile
        print(f"wrote the fitted figures into device_profiles/{device}.yaml")


if __name__ == "__main__":
    main()
