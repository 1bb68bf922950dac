"""The kinds of object plugins contribute besides device profiles.

Each is a small interface: a name plus the data or the one method the core needs. The core does
the shared work (TVM lowering, the pass pipeline, rendering); plugins supply choices.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import tvm

    from edgesdk.profiles import DeviceProfile


class Backend(abc.ABC):
    """Lowers models for the devices it serves; a device plugin's choices for its target.

    A subclass sets ``name`` and says which profiles it serves; the lowering routine itself is
    the core's, so a backend stays a small file of data and choices.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def serves(self, profile: DeviceProfile) -> bool:
        """Whether this backend can lower models for ``profile``."""


class Pass(abc.ABC):
    """A graph transformation configured by a pydantic model (``config_model``)."""

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    @abc.abstractmethod
    def run(self, module: tvm.IRModule, config: BaseModel) -> tvm.IRModule:
        """Return the transformed module; never mutate the one given."""


class Template(BaseModel):
    """A directory scaffold for ``edgesdk new``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    kind: Literal["app", "plugin"]
    description: str
    path: Path
