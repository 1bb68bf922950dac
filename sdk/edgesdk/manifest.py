"""`manifest.json`: what an artifact directory holds and how it was made (the stable contract).

Extend it only by adding fields; bump `SCHEMA_VERSION` when a reader must know the difference.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


class TensorInfo(_Record):
    name: str
    shape: list[int]
    dtype: str


class ModelInfo(_Record):
    name: str
    sha256: str = Field(description="SHA-256 of the model file the user gave.")
    prepared_sha256: str = Field(description="SHA-256 of the prepared model (static shapes, folded) that was compiled.")
    opset: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


class QuantizationInfo(_Record):
    scheme: str = Field(description="`none`: the model keeps its precision.")


class Fallback(_Record):
    op: str
    from_unit: str
    to_unit: str
    reason: str


class PartitionInfo(_Record):
    units: dict[str, int] = Field(description="Kernels assigned to each compute unit.")
    fallbacks: list[Fallback] = Field(default_factory=list)


class OutputCheck(_Record):
    name: str
    max_abs_err: float
    tolerance: float = Field(description="The largest max_abs_err that passes.")
    cosine: float
    psnr_db: float | None = Field(description="Peak signal-to-noise ratio; null when the outputs are identical.")
    passed: bool


class VerificationInfo(_Record):
    reference: str = Field(description="What the outputs were compared with, e.g. `onnxruntime 1.32.0`.")
    inputs: Literal["random", "user"]
    max_abs_err: float
    cosine: float
    psnr_db: float | None
    passed: bool
    outputs: list[OutputCheck]


class BuildInfo(_Record):
    backend: str
    toolchain: str = Field(description="What linked or compiled the device artifact.")
    device_files: list[str] = Field(description="The artifact files that go to the device.")
    simulation_library: str = Field(description="The host library `run` and `verify` execute.")
    kernels: int = Field(description="Compiled kernels (TIR functions) in the device module.")
    cache_key: str
    cached: bool = Field(description="Whether the builds came from the compile cache.")
    compile_seconds: float = Field(description="Time spent in the TVM worker (0 when cached).")
    notes: list[str] = Field(default_factory=list, description="What the build could not do here, and why.")


class Manifest(_Record):
    schema_version: int = SCHEMA_VERSION
    edgesdk_version: str
    tvm_version: str
    created_utc: str
    device: str = Field(description="Device profile id.")
    target: dict[str, Any] = Field(description="TVM target (JSON) of the device build.")
    model: ModelInfo
    quantization: QuantizationInfo
    files: dict[str, str] = Field(description="Every other file of the artifact: relative path -> SHA-256.")
    partition: PartitionInfo
    estimate: dict[str, Any] | None = Field(
        None, description="Simulated cost on the device; filled by the device simulator."
    )
    verification: VerificationInfo
    build: BuildInfo
