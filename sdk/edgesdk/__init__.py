"""edgesdk: take one trained model and deploy it to many kinds of devices through Apache TVM.

The public Python API; the ``edgesdk`` command line is a thin shell over it. Plugin authors import
from ``edgesdk.plugin``.
"""

from edgesdk.artifact.directory import Artifact, load_artifact
from edgesdk.artifact.manifest import Manifest
from edgesdk.devices.profile import ComputeUnit, DeviceProfile, Interconnect, Memory, QuantizationRecipe
from edgesdk.devices.registry import devices, get_device
from edgesdk.errors import CheckFailed, EdgeSDKError, ProfileError, UnknownDeviceError, UserInputError
from edgesdk.frontend.model import Model, TensorSpec, load_model
from edgesdk.plugin.hookspecs import hookimpl
from edgesdk.plugin.kinds import Backend, Pass, Template
from edgesdk.plugin.manager import PluginInfo, plugins
from edgesdk.plugin.toolchains import GCC, ZigCC
from edgesdk.simulate.fit import CostFit
from edgesdk.verbs.calibrate import calibrate
from edgesdk.verbs.compare import CompareReport, compare
from edgesdk.verbs.deploy import deploy
from edgesdk.verbs.doctor import DoctorReport, doctor
from edgesdk.verbs.new import new
from edgesdk.verbs.profile import CostReport, profile
from edgesdk.verbs.qat import QatReport, qat
from edgesdk.verbs.quantize import QuantizeReport, quantize
from edgesdk.verbs.tune import TuneReport, tune
from edgesdk.versions import edgesdk_version

__version__ = edgesdk_version()

__all__ = [
    "Artifact",
    "Backend",
    "CheckFailed",
    "CompareReport",
    "ComputeUnit",
    "CostFit",
    "CostReport",
    "DeviceProfile",
    "DoctorReport",
    "EdgeSDKError",
    "GCC",
    "Interconnect",
    "Manifest",
    "Memory",
    "Model",
    "Pass",
    "PluginInfo",
    "ProfileError",
    "QatReport",
    "QuantizationRecipe",
    "QuantizeReport",
    "Template",
    "TensorSpec",
    "TuneReport",
    "UnknownDeviceError",
    "UserInputError",
    "ZigCC",
    "__version__",
    "calibrate",
    "compare",
    "deploy",
    "devices",
    "doctor",
    "get_device",
    "hookimpl",
    "load_artifact",
    "load_model",
    "new",
    "plugins",
    "profile",
    "qat",
    "quantize",
    "tune",
]
