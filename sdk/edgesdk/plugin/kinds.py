"""The kinds of object plugins contribute besides device profiles.

Each is a small interface: a name plus the data or the one method the core needs. The core does
the shared work (TVM lowering, the pass pipeline, rendering); plugins supply choices.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgesdk.plugin.toolchains import Toolchain

if TYPE_CHECKING:
    import onnx
    import tvm

    from edgesdk.devices.profile import DeviceProfile


class Backend(BaseModel):
    """How models are built for the devices whose profile names this backend: data, not code.

    The lowering routine is the core's (TVM import, fusion, build); a backend only chooses what
    the device receives (``emit``) and the toolchain that makes it. A profile names its backend in
    its ``backend`` field (by default the profile id; ``extends`` inherits it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    emit: Literal["shared_library", "c_source"] = Field(
        "shared_library",
        description="`shared_library`: a TVM runtime library (kernels + VM program) for the target; "
        "`c_source`: the kernels as C (TVM's `c` target), plus an object when the toolchain is here.",
    )
    toolchain: Toolchain = Field(description="Links the shared library, or compiles the C source.")
    onnxruntime_fallback: bool = Field(
        False,
        description="Whether a node TVM cannot lower may run on onnxruntime, called from the compiled code (the artifact then needs "
        "onnxruntime where it runs: only for devices whose library runs on the host that deploys). Without it, such a node is an error.",
    )

    def serves(self, profile: DeviceProfile) -> bool:
        """Whether this backend builds for ``profile``."""
        return profile.backend_name == self.name


class NoConfig(BaseModel):
    """The configuration of a pass that takes none."""

    model_config = ConfigDict(extra="forbid")


class Pass(abc.ABC):
    """A graph transformation a deploy runs when asked (``--pass NAME[=JSON]``), configured by a
    pydantic model (``config_model``), at its ``stage``:

    - ``onnx``: on the loaded float model (an ``onnx.ModelProto``, static shapes bound), before
      quantization; the result is checked and becomes the numerics reference;
    - ``relax``: on the imported Relax module (a ``tvm.IRModule``), in the TVM worker, before
      lowering; the compiled result is verified against onnxruntime like any other, so the pass
      must keep the model's meaning.

    A pass without options keeps the default ``config_model`` (``NoConfig``: no field).
    """

    name: ClassVar[str]
    stage: ClassVar[Literal["onnx", "relax"]]
    config_model: ClassVar[type[BaseModel]] = NoConfig

    @abc.abstractmethod
    def run(self, module: onnx.ModelProto | tvm.IRModule, config: BaseModel) -> onnx.ModelProto | tvm.IRModule:
        """Return the transformed module; never mutate the one given."""


class Template(BaseModel):
    """A directory scaffold for ``edgesdk new``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    kind: Literal["app", "plugin"]
    description: str
    path: Path
