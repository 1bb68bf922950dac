"""edgesdk: take one trained model and deploy it to many kinds of devices through Apache TVM.

The public Python API; the ``edgesdk`` command line is a thin shell over it.
"""

from edgesdk.artifact import Artifact, load_artifact
from edgesdk.comparing import CompareReport, compare
from edgesdk.deploy import deploy
from edgesdk.device_registry import devices, get_device
from edgesdk.errors import (
    CheckFailed,
    EdgeSDKError,
    ProfileError,
    UnknownDeviceError,
    UserInputError,
)
from edgesdk.extensions import Backend, Pass, Template
from edgesdk.hookspecs import hookimpl
from edgesdk.manifest import Manifest
from edgesdk.model import Model, TensorSpec, load_model
from edgesdk.plugin_manager import PluginInfo, plugins
from edgesdk.profiles import (
    ComputeUnit,
    DeviceProfile,
    Interconnect,
    Memory,
    QuantizationRecipe,
)
from edgesdk.profiling import ProfileReport, profile
from edgesdk.quantization.tool import QuantizeReport, quantize
from edgesdk.toolchains import GCC, ZigCC
from edgesdk.versions import edgesdk_version

__version__ = edgesdk_version()

__all__ = [
    "Artifact",
    "CompareReport",
    "compare",
    "Manifest",
    "Model",
    "TensorSpec",
    "deploy",
    "load_artifact",
    "load_model",
    "Backend",
    "CheckFailed",
    "ComputeUnit",
    "DeviceProfile",
    "EdgeSDKError",
    "GCC",
    "Interconnect",
    "Memory",
    "Pass",
    "PluginInfo",
    "ProfileReport",
    "ProfileError",
    "QuantizationRecipe",
    "Template",
    "UnknownDeviceError",
    "UserInputError",
    "ZigCC",
    "__version__",
    "devices",
    "get_device",
    "hookimpl",
    "plugins",
    "profile",
    "quantize",
    "QuantizeReport",
]
