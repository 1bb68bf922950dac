"""`manifest.json`: what an artifact directory holds and how it was made (the stable contract).

Extend it only by adding fields; bump `SCHEMA_VERSION` when a reader must know the difference.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgesdk.plugin.passes import PassChoice
from edgesdk.quantization.accuracy import Accuracy
from edgesdk.quantization.layer_error import LayerError
from edgesdk.simulate.cost_report import Estimate, Fallback, LayerCost, PartitionInfo, Placement
from edgesdk.simulate.measure import Measurement
from edgesdk.training.origin import TrainingOrigin

__all__ = ["Estimate", "Fallback", "LayerCost", "PartitionInfo", "Placement"]  # parts of the manifest, defined by the simulator

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


class TensorInfo(_Record):
    """A model input or output as compiled: static shape, numpy dtype name."""

    name: str
    shape: list[int]
    dtype: str
    scale: float | None = Field(None, description="An integer input or output the model (de)quantizes: real = scale * (q - zero_point).")
    zero_point: int | None = None


class ModelInfo(_Record):
    """The model the artifact was made from."""

    name: str = Field(description="The model file's stem (or the graph name of an in-memory model).")
    sha256: str = Field(description="SHA-256 of the model file the user gave.")
    prepared_sha256: str = Field(description="SHA-256 of the prepared model (static shapes, folded) that was compiled.")
    opset: int = Field(description="The model's standard ONNX opset.")
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    bound_inputs: dict[str, list] = Field(
        default_factory=dict,
        description="Inputs that set a shape (a Reshape's shape, a Slice's starts), fixed at deploy to these values (from `--inputs`): "
        "the artifact computes that case only, and `run` takes such an input only with this value.",
    )
    trained: TrainingOrigin | None = Field(None, description="Set when the model came from `edgesdk qat`: how it was trained (ONNX metadata `edgesdk.qat`).")


class QuantizedLayer(_Record):
    """A convolution or matmul kernel and the precision it runs at."""

    name: str
    op_class: str
    weight_dtype: str = Field(description="How its weights are stored: int4 is packed two per byte.")
    compute_dtype: str = Field(description="What its multiplications take: int8 for an integer kernel.")


class QuantizationInfo(_Record):
    """The precision the model was compiled at (edgesdk.quantization.recipe)."""

    scheme: str = Field(
        description="`none`: the model keeps its precision; `fp16`: half precision; `int8`: W8A8 integer kernels; "
        "`w8a16`/`w4a16`: int8/int4 weights, group-wise, with float16 activations; `w4a8`: int4 weights, int8 activations; "
        "`vq`: codebook indices, float16 activations."
    )
    range_method: str | None = Field(None, description="How activation ranges were calibrated (`minmax`, `percentile`, `mse`).")
    group_size: int | None = Field(None, description="Group-wise schemes: weights per scale along the reduction axis (null: per output channel).")
    equalize: bool = Field(False, description="Cross-layer equalization was applied before quantizing.")
    bias_correction: bool = Field(False, description="Biases were corrected for the mean shift of quantization, on the calibration samples.")
    vq_dim: int | None = Field(None, description="vq: weights per codebook vector.")
    vq_bits: int | None = Field(None, description="vq: bits per index (codebooks of 2**vq_bits vectors per layer).")
    adaround_seconds: float | None = Field(None, description="AdaRound's time budget, when weights were re-rounded by it.")
    weight_bytes: int = Field(0, description="Bytes of the compiled model's weights as the artifact stores them (`params.npz`: packed int4, float16 scales).")
    float_weight_bytes: int = Field(0, description="Bytes of the weights at the model's own precision.")
    layers: list[QuantizedLayer] = Field(default_factory=list, description="Every convolution and matmul kernel.")
    accuracy: Accuracy | None = Field(None, description="Agreement of the compiled model with the float model on the `--calibration` samples, when given.")
    layer_errors: list[LayerError] = Field(
        default_factory=list,
        description="Per convolution and matmul of the quantized ONNX model: its stored size and, on the calibration samples, "
        "its output's SQNR against the float model (cumulative: every layer before it is quantized too).",
    )


class OutputCheck(_Record):
    """One output compared with the reference."""

    name: str
    max_abs_err: float
    tolerance: float = Field(description="The largest max_abs_err that passes.")
    cosine: float
    psnr_db: float | None = Field(description="Peak signal-to-noise ratio; null when the outputs are identical.")
    beyond_tolerance: int = Field(
        0,
        description="Elements whose error exceeds the tolerance "
        "(quantized schemes pass with up to 0.1% of them while cosine >= 0.999, or twice the reference's own noise: see edgesdk.frontend.agreement).",
    )
    noise_beyond_tolerance: int | None = Field(
        None,
        description="Reduced precision: elements beyond the tolerance when onnxruntime itself runs with every float32 conv/matmul result perturbed "
        "by float32 summation noise (worst of 3 draws; edgesdk.frontend.noise). Null when not measured.",
    )
    noise_cosine: float | None = Field(None, description="The cosine of those perturbed runs against the reference (worst of the draws).")
    passed: bool


class EmulationInfo(_Record):
    """The device's own code run on its instruction set under an emulator (`verify --emulate`)."""

    emulator: str = Field(description="The emulator, its version and the board, e.g. `QEMU emulator version 7.2.22 (mps2-an500, cortex-m7)`.")
    instructions: int | None = Field(description="Instructions the model's entry point executed (mcu: QEMU -icount; not cycles); null where not counted.")
    simulated_cycles: int | None = Field(None, description="The simulator's latency for the same model in cycles (`estimate.cycles`), to set beside them.")
    text_bytes: int | None = Field(description="Firmware code and constants (flash), from arm-none-eabi-size, harness included; null: not firmware.")
    data_bytes: int | None
    bss_bytes: int | None = Field(description="Zero-initialised RAM: the arena (tensors and the kernels' scratch), the I/O buffers, the C library's.")
    runtime_ram_bytes: int | None = Field(
        None,
        description="RAM (data + bss) of the firmware that is not the model's: the C library and the harness, measured on the same "
        "firmware linked around a model that does nothing. data + bss is this plus `estimate.memory.device_ram_bytes` and the runner's "
        "few tables. Null: not firmware.",
    )
    seconds: float = Field(description="Wall time of the emulated run on this host.")


class VerificationInfo(_Record):
    """The compiled model's outputs against onnxruntime's on the same inputs (worst over outputs)."""

    reference: str = Field(description="What the outputs were compared with, e.g. `onnxruntime 1.32.0`.")
    inputs: Literal["random", "user", "calibration"] = Field(description="Random inputs, the user's (`--inputs`), or the first `--calibration` sample.")
    max_abs_err: float
    cosine: float
    psnr_db: float | None
    passed: bool
    outputs: list[OutputCheck]
    emulation: EmulationInfo | None = Field(None, description="Set when the outputs checked came from the device code under an emulator.")


class SectionSizes(_Record):
    """The device objects' sections (the mcu: `arm-none-eabi-size` of the kernels and the runner)."""

    text_bytes: int = Field(description="Code and constants, the weights included: what goes to flash.")
    data_bytes: int = Field(description="Initialised data: flash for its image, RAM when running.")
    bss_bytes: int = Field(description="Zero-initialised RAM: the runner's arena (the tensors between kernels and the kernels' scratch).")


class BuildInfo(_Record):
    """How the device files and the host simulation were built."""

    backend: str
    toolchain: str = Field(description="What linked or compiled the device artifact.")
    device_files: list[str] = Field(
        description="The artifact files that go to the device: the TVM runtime module and the weights its `main` takes, "
        "and the standalone code (library or sources, header) where there is some."
    )
    simulation_library: str = Field(description="The host library `run` and `verify` execute.")
    kernels_library: str | None = Field(
        None,
        description="The device's kernels alone, as a plain shared library, not needed to run the model: "
        "`profile --remote --measure` times each kernel with it on a board. Null for C builds (the mcu).",
    )
    kernels: int = Field(description="Compiled kernels (TIR functions) in the device module.")
    cache_key: str
    cached: bool = Field(description="Whether the builds came from the compile cache.")
    compile_seconds: float = Field(description="Time spent in the TVM workers, wall clock (0 when cached).")
    compile_stages: dict[str, float] = Field(
        default_factory=dict,
        description="Seconds per stage in the TVM workers: `import`, `analyze`, `build device`, `build host`, `run` (empty when cached). "
        "The device and host builds run in two workers at once when the machine has two cores, each importing the model: "
        "the stages then add up to more than `compile_seconds`.",
    )
    tuned_kernels: list[str] = Field(
        default_factory=list,
        description="Kernels of the device module built with a schedule from the target's tuning database (`edgesdk tune`); the rest use the schedule rules.",
    )
    notes: list[str] = Field(default_factory=list, description="What the build could not do here, and why.")
    section_sizes: SectionSizes | None = Field(None, description="Sizes of the device objects, where the toolchain measures them (the mcu).")
    undefined_symbols: list[str] | None = Field(
        None,
        description="What the standalone device code (the mcu's objects, or the library of `--standalone`) needs from outside when linked: "
        "C library and libm functions. Null without standalone code.",
    )


class Manifest(_Record):
    """`manifest.json`: what an artifact directory holds and how it was made."""

    schema_version: int = Field(SCHEMA_VERSION, description="Version of this layout.")
    edgesdk_version: str = Field(description="edgesdk that made the artifact.")
    tvm_version: str = Field(description="Apache TVM that compiled it.")
    created_utc: str = Field(description="When, as ISO 8601 UTC.")
    device: str = Field(description="Device profile id.")
    target: dict[str, Any] = Field(description="TVM target (JSON) of the device build.")
    model: ModelInfo
    quantization: QuantizationInfo
    passes: list[PassChoice] = Field(default_factory=list, description="Plugin passes run, in order (`--pass`): name, plugin, stage and validated config.")
    files: dict[str, str] = Field(description="Every other file of the artifact: relative path -> SHA-256.")
    partition: PartitionInfo
    estimate: Estimate | None = Field(None, description="Simulated cost on the device (docs/simulator.md).")
    measured: list[Measurement] = Field(
        default_factory=list,
        description="Latencies measured since the deploy (`profile ARTIFACT --measure`, on this host or a board with `--remote`), oldest first, "
        "beside the simulated `estimate`.",
    )
    verification: VerificationInfo
    build: BuildInfo
