"""What a plugin author imports: ``from edgesdk.plugin import hookimpl, Backend, ...``.

The hooks are in ``edgesdk.plugin.hookspecs``; the kinds of object they return are re-exported
here: device profiles (``DeviceProfile`` and its parts), backends with their toolchains, passes and
templates. Built-in plugins import from this module only, as third-party ones should.
"""

from edgesdk.devices.profile import ComputeUnit, DeviceProfile, Interconnect, Memory, QuantizationRecipe
from edgesdk.plugin.hookspecs import hookimpl
from edgesdk.plugin.kinds import Backend, Pass, Template
from edgesdk.plugin.toolchains import GCC, Toolchain, ZigCC

__all__ = [
    "Backend",
    "ComputeUnit",
    "DeviceProfile",
    "GCC",
    "Interconnect",
    "Memory",
    "Pass",
    "QuantizationRecipe",
    "Template",
    "Toolchain",
    "ZigCC",
    "hookimpl",
]
