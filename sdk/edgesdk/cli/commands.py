"""The verb commands: deploy, run, verify, profile, calibrate, quantize and compare (thin shells over the Python API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table

import edgesdk
from edgesdk.artifact.directory import Artifact
from edgesdk.artifact.files import REPORT_FILE
from edgesdk.artifact.manifest import EmulationInfo, PartitionInfo, VerificationInfo
from edgesdk.cli.options import (
    AddressOption,
    CalibrationOption,
    EmulateOption,
    ExecutorOption,
    HtmlOption,
    InputShapeOption,
    JsonOption,
    KeyOption,
    NoFallbackOption,
    ProfilesDirOption,
    QuantizeOption,
    RemoteOption,
    TrackerOption,
    UnitOption,
    WideOption,
    WorkersOption,
    input_shapes,
    print_json,
    with_quantize_options,
)
from edgesdk.cli.options import console as out_console
from edgesdk.cli.progress import progress
from edgesdk.cli.tables import Column, print_fields, print_table
from edgesdk.devices.profile import DeviceProfile
from edgesdk.distributed.boards import board_from
from edgesdk.errors import UserInputError
from edgesdk.frontend.tensors import load_npz, save_npz
from edgesdk.plugin.passes import parse_pass_options
from edgesdk.report.advice import fallback_reasons, hints
from edgesdk.simulate.cost_report import byte_size
from edgesdk.simulate.fit import fit_file
from edgesdk.verbs.tune import DEFAULT_TRIALS


def _size(path: Path) -> str:
    return byte_size(path.stat().st_size)


def _verification_text(result: VerificationInfo) -> str:
    psnr = "identical" if result.psnr_db is None else f"PSNR {result.psnr_db:.1f} dB"
    verdict = "passed" if result.passed else "FAILED"
    strays = sum(check.beyond_tolerance for check in result.outputs)
    beyond = f" ({strays} values beyond tolerance)" if strays else ""
    text = f"{verdict} vs {result.reference} ({result.inputs} inputs): max abs err {result.max_abs_err:.3g}{beyond}, cosine {result.cosine:.6f}, {psnr}"
    moved = sum(check.noise_beyond_tolerance or 0 for check in result.outputs)
    if moved:  # the model itself is that sensitive: say so, it is what the check allowed for
        text += f"; onnxruntime itself moves {moved} values beyond tolerance under float32 rounding noise"
    return text


def _summary(artifact: Artifact, profile: DeviceProfile) -> list[tuple[str, str]]:
    """What `deploy` prints: (what, value) lines."""
    manifest = artifact.manifest
    build = manifest.build
    fields: list[tuple[str, str]] = []
    fields.append(("artifact", str(artifact.path)))
    fields.append(("target", _target_text(manifest.target)))
    fields.append(("backend", f"{build.backend} ({build.toolchain})"))
    if manifest.passes:
        fields.append(("passes", ", ".join(f"{choice.name} ({choice.plugin}, {choice.stage})" for choice in manifest.passes)))
    fields.append(("device files", "\n".join(f"{name}  {_size(artifact.path / name)}" for name in build.device_files)))
    units = ", ".join(f"{name} {count}" for name, count in manifest.partition.units.items())
    fields.append(("kernels", f"{build.kernels} compiled; calls per unit: {units}{_partition_text(manifest.partition)}"))
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in build.compile_stages.items())
    fields.append(("compile", "from the cache" if build.cached else f"{build.compile_seconds:.1f} s in TVM" + (f" ({stages})" if stages else "")))
    estimate = manifest.estimate
    if estimate:
        fields.append(("simulated", f"{estimate.latency_ms:.3g} ms, {estimate.energy_mj:.3g} mJ, peak memory {estimate.peak_memory_bytes / 2**20:.2f} MiB"))
    memory = estimate.memory if estimate else None
    if memory is not None:
        arena = f"; the device code allocates {byte_size(memory.arena_bytes)} for them" if memory.arena_bytes is not None else ""
        if memory.device_ram_bytes is not None:
            arena += f", the standalone code {byte_size(memory.device_ram_bytes)} (with the kernels' scratch and the I/O buffers)"
        fields.append(("activations", f"{byte_size(memory.scheduled_peak_bytes)} at their peak in run order{arena}"))
        sizes = artifact.manifest.build.section_sizes
        if sizes is not None:
            fields.append(
                (
                    "objects",
                    f"{byte_size(sizes.text_bytes)} code + weights (flash), {byte_size(sizes.data_bytes + sizes.bss_bytes)} RAM "
                    "(data + bss: the arena, with the kernels' scratch)",
                )
            )
        patched = memory.patches
        if patched is not None:
            fields.append(
                (
                    "patches",
                    f"first stage ({patched.stage_nodes} nodes, up to {patched.cut}) in {patched.grid[0]}x{patched.grid[1]} patches: "
                    f"{byte_size(patched.patched_bytes)} instead of {byte_size(patched.unpatched_bytes)}, "
                    f"for {patched.recompute_macs / max(patched.stage_macs, 1):.1%} more multiply-adds in the stage",
                )
            )
    fields.append(("verification", _verification_text(manifest.verification)))
    accuracy = manifest.quantization.accuracy
    if accuracy is not None:
        fields.append(("accuracy", accuracy.text("calibration samples")))
    elif manifest.quantization.scheme != "none":
        fields.append(("accuracy", "not measured: give --calibration samples to measure it"))
    fields += [("fallback", line) for line in fallback_reasons(manifest.partition)]
    fields += [("hint", line) for line in hints(manifest.partition, profile)]
    fields += [("note", note) for note in build.notes]
    if (artifact.path / REPORT_FILE).is_file():
        fields.append(("report", str(artifact.path / REPORT_FILE)))
    return fields


def _target_text(target: dict) -> str:
    """A target as TVM writes it: ``llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a78``."""
    options = (f"-{key}={','.join(map(str, value)) if isinstance(value, list) else value}" for key, value in target.items() if key != "kind")
    return " ".join([str(target.get("kind", "?")), *options])


def _partition_text(partition: PartitionInfo) -> str:
    """What the partition did besides the preferred units: " (N fallbacks, e.g. ...; M placed past npu for their dtype)", or ""."""
    parts = []
    if partition.fallbacks:
        first = partition.fallbacks[0]
        parts.append(f"{len(partition.fallbacks)} fallbacks, e.g. {first.op} not on {first.from_unit}: {first.reason}")
    if partition.placements:
        units = sorted({placed.from_unit for placed in partition.placements})
        parts.append(f"{len({placed.op for placed in partition.placements})} placed past {', '.join(units)} for their dtype")
    return f" ({'; '.join(parts)})" if parts else ""


def _advise(console: Console, partition: PartitionInfo, profile: DeviceProfile) -> None:
    """The fallbacks by reason, and a hint where the precision chose the unit."""
    for line in fallback_reasons(partition):
        console.print(f"fallback: {line}", highlight=False)
    for line in hints(partition, profile):
        console.print(f"hint: {line}", highlight=False)


def _emulation_text(emulation: EmulationInfo) -> str:
    parts = [f"emulated: {emulation.emulator}"]
    if emulation.instructions is not None:
        simulated = f" (simulated: {emulation.simulated_cycles:,} cycles)" if emulation.simulated_cycles is not None else ""
        parts.append(f"{emulation.instructions:,} instructions{simulated}")
    if emulation.text_bytes is not None and emulation.data_bytes is not None and emulation.bss_bytes is not None:
        runtime = f" ({byte_size(emulation.runtime_ram_bytes)} of it the C library and harness)" if emulation.runtime_ram_bytes is not None else ""
        parts.append(f"firmware {byte_size(emulation.text_bytes)} flash (code + weights), {byte_size(emulation.data_bytes + emulation.bss_bytes)} RAM{runtime}")
    return ", ".join([*parts, f"{emulation.seconds:.2f} s here"])


def deploy_command(
    model: Annotated[Path, typer.Argument(help="The ONNX model file.", show_default=False)],
    device: Annotated[str, typer.Option("--device", "-d", help="Device id (see `edgesdk devices`).", show_default=False)],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Artifact directory [default: build/<model>-<device>, + -<scheme> when quantized].")] = None,
    quantize: QuantizeOption = None,
    calibration: CalibrationOption = None,
    input_shape: InputShapeOption = None,
    inputs: Annotated[Path | None, typer.Option("--inputs", help="Verify on these inputs (.npz, one array per model input) instead of random ones.")] = None,
    profiles_dir: ProfilesDirOption = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Compile again even if an identical build is cached.")] = False,
    standalone: Annotated[
        bool,
        typer.Option("--standalone", help="Also write lib<model>.a + <model>.h: the kernels and a runner without TVM's runtime (the mcu always has one)."),
    ] = False,
    unit: UnitOption = None,
    no_fallback: NoFallbackOption = False,
    passes: Annotated[
        list[str] | None,
        typer.Option(
            "--pass",
            metavar="NAME[=JSON]",
            help="Run a plugin's pass (repeatable), with its config as a JSON object (`edgesdk plugins` lists who offers passes).",
        ),
    ] = None,
    json_output: JsonOption = False,
    *,
    quantize_options: dict[str, Any],  # always given, by with_quantize_options
) -> None:
    """Compile MODEL for a device through TVM, verify it against onnxruntime, write the artifact."""
    shapes = input_shapes(input_shape)
    requested = parse_pass_options(passes or [])
    with progress() as on_stage:
        artifact = edgesdk.deploy(
            model,
            device,
            out,
            input_shapes=shapes,
            quantize=quantize,
            calibration=calibration,
            inputs=inputs,
            **quantize_options,
            profiles_dir=profiles_dir,
            cache=not no_cache,
            standalone=standalone,
            on_stage=on_stage,
            unit=unit,
            fallback=not no_fallback,
            passes=requested,
        )
    if json_output:
        print_json(artifact.manifest.model_dump(mode="json"))
    else:
        manifest = artifact.manifest
        print_fields(f"{manifest.model.name} -> {manifest.device}", _summary(artifact, edgesdk.get_device(manifest.device, profiles_dir)))


def run_command(
    artifact_dir: Annotated[Path, typer.Argument(metavar="ARTIFACT", help="An artifact directory made by `deploy`.", show_default=False)],
    inputs: Annotated[Path, typer.Option("--inputs", help="Inputs (.npz, one array per model input).", show_default=False)],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the outputs to this .npz file.")] = None,
    cast: Annotated[bool, typer.Option("--cast", help="Convert inputs to the model's dtypes even where values could change (e.g. int64 to float32).")] = False,
    emulate: EmulateOption = False,
    remote: RemoteOption = None,
    tracker: TrackerOption = None,
    key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run an artifact's functional simulation on this host, its device code under QEMU (--emulate), or on a board (--remote)."""
    artifact = edgesdk.load_artifact(artifact_dir)
    board = board_from(remote, tracker, key)
    if output is not None and output.is_dir():
        raise UserInputError(f"{output}: is a directory; give a .npz file name")
    if board is not None and emulate:
        raise UserInputError("--emulate and --remote: choose one", hint="--emulate runs the device code here under QEMU, --remote on the board")
    emulation = None
    if board is not None:
        outputs = board.run(artifact, load_npz(inputs), cast=cast)
    elif emulate:
        emulated = artifact.emulate(load_npz(inputs), cast=cast)
        outputs, emulation = emulated.outputs, emulated.info
    else:
        outputs = artifact.run(load_npz(inputs), isolated=True, cast=cast)
    if output is not None:
        save_npz(output, outputs)
    records: list[dict[str, Any]] = [
        {
            "name": name,
            "shape": list(value.shape),
            "dtype": value.dtype.name,
            "min": float(np.min(value)),
            "max": float(np.max(value)),
            "mean": float(np.mean(value)),
        }
        for name, value in outputs.items()
    ]
    if json_output:
        described = emulation.model_dump(mode="json") if emulation else None
        print_json({"artifact": str(artifact_dir), "outputs": records, "file": str(output) if output else None, "emulation": described})
        return
    table = Table("output", "shape", "dtype", "min", "max", "mean", box=box.SIMPLE_HEAD)
    for record in records:
        table.add_row(record["name"], str(record["shape"]), record["dtype"], *(f"{record[k]:.6g}" for k in ("min", "max", "mean")))
    out_console().print(table)
    if emulation is not None:
        out_console().print(_emulation_text(emulation))
    if output is not None:
        out_console().print(f"wrote {output}")


def verify_command(
    artifact_dir: Annotated[Path, typer.Argument(metavar="ARTIFACT", help="An artifact directory made by `deploy`.", show_default=False)],
    emulate: EmulateOption = False,
    json_output: JsonOption = False,
) -> None:
    """Re-check an artifact's file hashes and its numerics against onnxruntime (--emulate: of its device code under QEMU)."""
    artifact = edgesdk.load_artifact(artifact_dir)
    result = artifact.verify(emulate=emulate)
    if json_output:
        print_json({"artifact": str(artifact_dir), "files": len(artifact.manifest.files), "verification": result.model_dump(mode="json")})
    else:
        out_console().print(f"{artifact_dir}: {len(artifact.manifest.files)} files intact; {_verification_text(result)}")
        if result.emulation is not None:
            out_console().print(_emulation_text(result.emulation))


def profile_command(
    source: Annotated[Path, typer.Argument(metavar="MODEL|ARTIFACT", help="An ONNX model, or an artifact directory.", show_default=False)],
    device: Annotated[str | None, typer.Option("--device", "-d", help="Device id [default: the artifact's device].")] = None,
    input_shape: InputShapeOption = None,
    quantize: QuantizeOption = None,
    calibration: CalibrationOption = None,
    unit: UnitOption = None,
    no_fallback: NoFallbackOption = False,
    profiles_dir: ProfilesDirOption = None,
    measure: Annotated[
        bool, typer.Option("--measure", help="Also run it here (devices whose code runs here, e.g. pc), or on the --remote board, and show measured times.")
    ] = False,
    remote: RemoteOption = None,
    tracker: TrackerOption = None,
    key: KeyOption = None,
    html: HtmlOption = None,
    wide: WideOption = False,
    json_output: JsonOption = False,
    *,
    quantize_options: dict[str, Any],  # always given, by with_quantize_options
) -> None:
    """Cost report: the simulated cost of a model on a device, per kernel and in total."""
    shapes = input_shapes(input_shape)
    with progress() as on_stage:
        report = edgesdk.profile(
            source,
            device,
            input_shapes=shapes,
            quantize=quantize,
            calibration=calibration,
            unit=unit,
            fallback=not no_fallback,
            profiles_dir=profiles_dir,
            measure=measure,
            board=board_from(remote, tracker, key),
            html=html,
            on_stage=on_stage,
            **quantize_options,
        )
    if json_output:
        print_json(report.model_dump(mode="json"))
        return
    estimate, measured = report.estimate, report.measured
    per_kernel = measured.per_kernel if measured else []
    columns = [Column("#", numeric=True), Column("kernel", flexible=True), *([Column("class")] if wide else []), Column("unit"), Column("dtype")]
    if wide:
        columns += [Column("MFLOP", numeric=True), Column("on chip"), Column("DRAM\nKiB", numeric=True), Column("spill\nKiB", numeric=True)]
    columns += [Column(name, numeric=True) for name in ("µs", "compute", "memory", "launch", "transfer")]
    columns += [Column("measured\nµs", numeric=True)] if per_kernel else []
    rows = []
    for layer in estimate.per_layer:
        row = [str(layer.index), layer.name, *([layer.op_class] if wide else []), layer.unit, layer.dtype]
        if wide:
            row += [f"{layer.flops / 1e6:.3g}", layer.tiling, f"{layer.bytes / 1024:.1f}", f"{layer.offchip_bytes / 1024:.1f}"]
        row += [f"{ms * 1e3:.1f}" for ms in (layer.latency_ms, layer.compute_ms, layer.memory_ms, layer.launch_ms, layer.transfer_ms)]
        row += [f"{per_kernel[layer.index].measured_ms * 1e3:.1f}"] if per_kernel else []
        rows.append([*row, layer.bound])
    console = out_console()
    print_table(f"{report.model} on {report.device} (simulated, per kernel in µs)", [*columns, Column("bound")], rows, wide=wide, console=console)
    parts = ", ".join(f"{part} {ms:.3g}" for part, ms in estimate.split().items())
    busy = ", ".join(f"{name} {share:.0%}" for name, share in estimate.utilisation.items())
    console.print(
        f"total {estimate.latency_ms:.4g} ms ({parts} ms), {estimate.energy_mj:.4g} mJ, peak memory {estimate.peak_memory_bytes / 2**20:.2f} MiB, "
        f"{estimate.flops / 1e6:.4g} MFLOP; busy: {busy}{_partition_text(report.partition)}"
    )
    _advise(console, report.partition, edgesdk.get_device(report.device, profiles_dir))
    console.print(f"figures: {estimate.figures} ({estimate.figures_source})")
    if estimate.memory is not None:
        memory = estimate.memory
        console.print(
            f"activations: peak {memory.scheduled_peak_bytes / 2**10:.1f} KiB in run order "
            f"({memory.default_order_peak_bytes / 2**10:.1f} KiB in the file's order, "
            f"{memory.naive_bytes / 2**10:.1f} KiB without reuse{'' if memory.ordering_exact else '; order from a bounded search'}), "
            f"{memory.spill_bytes / 2**10:.1f} KiB through DRAM for tiles and spills "
            f"({sum(layer.tiles > 1 for layer in estimate.per_layer)} kernels tiled, {sum(layer.spilled for layer in estimate.per_layer)} spilled)"
        )
    if measured:
        console.print(
            f"measured on {measured.on}: {measured.latency_ms:.4g} ms (median of {measured.repeat} runs); "
            f"predicted/measured = {estimate.latency_ms / measured.latency_ms:.2f}"
        )
    if html:
        console.print(f"report: {html}")


def calibrate_command(
    device: Annotated[str, typer.Option("--device", "-d", help="A device whose code runs on this host.")] = "pc",
    repeat: Annotated[int, typer.Option("--repeat", min=3, help="Timed runs per micro-benchmark.")] = 30,
    remote: RemoteOption = None,
    tracker: TrackerOption = None,
    key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Fit the device's cost model (efficiency per op class, launch overhead) to micro-benchmarks measured on this host or on a board (--remote)."""
    with progress() as on_stage:
        result = edgesdk.calibrate(device, repeat=repeat, board=board_from(remote, tracker, key), on_stage=on_stage)
    if json_output:
        print_json(result.model_dump(mode="json"))
        return
    table = Table("op class", "efficiency (share of peak)", box=box.SIMPLE_HEAD, title=f"{device}: fitted on {result.host}", title_justify="left")
    for op_class, value in result.efficiency.items():
        table.add_row(op_class, f"{value:.4f}")
    console = out_console()
    console.print(table)
    console.print(f"launch overhead {result.launch_overhead_s * 1e6:.2f} us; {len(result.samples)} kernels measured; stored in {fit_file(device)}")


def quantize_command(
    model: Annotated[Path, typer.Argument(help="The ONNX model file.", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="The quantized model to write (*.onnx); its encodings go beside it.", show_default=False)],
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            help="Sample inputs (.npz: per input, N samples stacked on a new first axis): int8/w4a8 calibrate on them, "
            "and the drop is measured on them. Weight-only schemes need none.",
        ),
    ] = None,
    scheme: Annotated[str, typer.Option("--scheme", help="Quantization scheme: int8, w4a8, w8a16, w4a16 or vq.")] = "int8",
    input_shape: InputShapeOption = None,
    analyze: Annotated[bool, typer.Option("--analyze", help="Measure every conv/matmul layer's sensitivity.")] = False,
    max_drop: Annotated[
        float | None, typer.Option("--max-drop", help="Keep the most sensitive layers in float until the drop (points) is at most this.")
    ] = None,
    json_output: JsonOption = False,
    *,
    quantize_options: dict[str, Any],  # always given, by with_quantize_options
) -> None:
    """Quantize a model to an ONNX model onnxruntime runs (+ encodings JSON), optionally mixed precision."""
    shapes = input_shapes(input_shape)
    with progress() as on_stage:
        report = edgesdk.quantize(
            model,
            calibration,
            out,
            scheme=scheme,
            input_shapes=shapes,
            analyze=analyze,
            max_drop=max_drop,
            on_stage=on_stage,
            **quantize_options,
        )
    if json_output:
        print_json(report.model_dump(mode="json"))
        return
    console = out_console()
    if report.sensitivity:
        table = Table("layer", "drop alone (pt)", box=box.SIMPLE_HEAD, title="sensitivity: each layer quantized alone", title_justify="left")
        for layer in report.sensitivity:
            table.add_row(layer.node, f"{layer.drop_pt:.2f}")
        console.print(table)
    kept = f"; kept in float: {', '.join(report.float_layers)}" if report.float_layers else ""
    how = f"{report.range_method} ranges" if report.range_method else f"groups of {report.group_size}" if report.group_size else "per channel"
    measured = f"{report.samples} samples, drop {report.drop_pt:.2f} pt vs float" if report.drop_pt is not None else "accuracy not measured: no --calibration"
    console.print(f"{report.output}: {report.scheme} ({how}; {measured}){kept}")
    if report.accuracy is not None:
        console.print(f"accuracy: {report.accuracy.text('calibration samples')}")
    console.print(f"encodings: {report.encodings}")
    if report.max_drop_met is False:
        raise typer.Exit(1)


def compare_command(
    model: Annotated[Path, typer.Argument(help="The ONNX model file.", show_default=False)],
    devices: Annotated[str, typer.Option("--devices", help="all, or device ids separated by commas.")] = "all",
    quantize: Annotated[
        str | None, typer.Option("--quantize", help="Precisions to compare, separated by commas (e.g. none,int8,w4a16; auto: each device's recipe).")
    ] = None,
    calibration: CalibrationOption = None,
    eval_data: Annotated[
        Path | None,
        typer.Option("--eval", help="Held-out inputs (.npz, stacked like --calibration): report each precision's agreement with the float model on them."),
    ] = None,
    input_shape: InputShapeOption = None,
    profiles_dir: ProfilesDirOption = None,
    html: HtmlOption = None,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    wide: WideOption = False,
    json_output: JsonOption = False,
    *,
    quantize_options: dict[str, Any],  # always given, by with_quantize_options
) -> None:
    """Simulated cost of one model on many devices, at one or more precisions, and their accuracy."""
    shapes = input_shapes(input_shape)
    with progress() as on_stage:
        report = edgesdk.compare(
            model,
            devices,
            quantize=quantize,
            calibration=calibration,
            input_shapes=shapes,
            profiles_dir=profiles_dir,
            eval_data=eval_data,
            html=html,
            on_stage=on_stage,
            executor=executor,
            address=address,
            workers=workers,
            **quantize_options,
        )
    if json_output:
        print_json(report.model_dump(mode="json"))
        return
    calibrated, held_out = any(row.accuracy for row in report.rows), any(row.eval_accuracy for row in report.rows)
    # By default one agreement column: on the held-out --eval inputs where given, else on the calibration samples.
    agreements = [("calibration", "accuracy")] * calibrated + [("--eval", "eval_accuracy")] * held_out
    agreements = agreements if wide else agreements[-1:]
    columns = [Column("device"), Column("precision"), Column("ms", numeric=True), Column("speed-\nup", numeric=True), Column("mJ", numeric=True)]
    columns += [Column("peak\nMiB", numeric=True), Column("weights\nKiB", numeric=True), *(Column(f"vs float\n({what})") for what, _ in agreements)]
    columns += [Column("fall-\nbacks", numeric=True), Column("kernels\nper unit")] if wide else [Column("kernels\nper unit", flexible=True)]
    rows = []
    for row in report.rows:
        cells = [row.device, row.scheme, f"{row.latency_ms:.3g}", f"{row.speedup:.2f}x", f"{row.energy_mj:.3g}", f"{row.peak_memory_bytes / 2**20:.2f}"]
        cells += [f"{row.weight_bytes / 1024:.1f}", *((getattr(row, field).short() if getattr(row, field) else "-") for _, field in agreements)]
        units = ", ".join(f"{unit} {count}" for unit, count in row.units.items())
        cells += [str(row.fallbacks), units] if wide else [units + (f" ({row.fallbacks} fell back)" if row.fallbacks else "")]
        rows.append(cells)
    print_table(f"{report.model} (simulated; speed-up vs the first precision)", columns, rows, wide=wide)
    if html:
        out_console().print(f"report: {html}")


def tune_command(
    model: Annotated[Path, typer.Argument(help="The ONNX model file.", show_default=False)],
    device: Annotated[str, typer.Option("--device", "-d", help="A device whose code runs on this host.")] = "pc",
    trials: Annotated[int, typer.Option("--trials", min=1, help="MetaSchedule candidates measured per kernel.")] = DEFAULT_TRIALS,
    budget_s: Annotated[float | None, typer.Option("--budget-s", help="Start no kernel after this many seconds; run again to resume.")] = None,
    input_shape: InputShapeOption = None,
    quantize: QuantizeOption = None,
    calibration: CalibrationOption = None,
    profiles_dir: ProfilesDirOption = None,
    json_output: JsonOption = False,
    *,
    quantize_options: dict[str, Any],  # always given, by with_quantize_options
) -> None:
    """Tune the model's conv/matmul kernels with MetaSchedule on this host; later deploys use the winners."""
    with progress() as on_stage:
        report = edgesdk.tune(
            model, device, input_shapes=input_shapes(input_shape), trials=trials, budget_s=budget_s, quantize=quantize,
            calibration=calibration, profiles_dir=profiles_dir, on_stage=on_stage, **quantize_options,
        )  # fmt: skip
    if json_output:
        print_json(report.model_dump(mode="json"))
        return
    table = Table(
        "MACs", "rules ms", "tuned ms", "speed-up", "builds use", box=box.SIMPLE_HEAD, title=f"{report.model} on {report.device}", title_justify="left"
    )
    table.add_column("kernel", overflow="fold")  # last and whole: the names `profile` shows
    for kernel in report.kernels:
        tuned = "-" if kernel.tuned_ms is None else f"{kernel.tuned_ms:.4f}"
        speedup = "-" if kernel.tuned_ms is None else f"{kernel.rules_ms / kernel.tuned_ms:.2f}x"
        table.add_row(f"{kernel.macs:,}", f"{kernel.rules_ms:.4f}", tuned, speedup, kernel.chosen, kernel.kernel)
    console = out_console()
    console.print(table)
    left = f"; {report.untuned} kernels left by the budget: run again to resume" if report.untuned else ""
    if report.model_ms:
        before, after = report.model_ms
        verdict = "kept" if any(kernel.chosen == "tuned" for kernel in report.kernels) else "not kept: the model was not faster"
        console.print(f"the whole model: {before:.3f} ms as builds made it, {after:.3f} ms with the new schedules ({verdict})")
    console.print(
        f"{len(report.kernels)} kernels, {report.trials} trials each, {report.seconds:.0f} s: "
        f"kernels alone {report.rules_ms:.3f} ms with the rules -> {report.best_ms:.3f} ms as builds use them{left}; database {report.database}"
    )


def register(app: typer.Typer) -> None:
    app.command("deploy")(with_quantize_options(deploy_command))
    app.command("profile")(with_quantize_options(profile_command))
    app.command("calibrate")(calibrate_command)
    app.command("quantize")(with_quantize_options(quantize_command))
    app.command("compare")(with_quantize_options(compare_command))
    app.command("tune")(with_quantize_options(tune_command))
    app.command("run")(run_command)
    app.command("verify")(verify_command)
