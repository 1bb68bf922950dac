"""edgesdk's built-in device plugins.

Each module is one device family, registered through the ``edgesdk`` entry-point group exactly as
a third-party plugin would be. A module is data and choices: it points at its profile YAML (in the
``edgesdk_device_profiles`` package) and registers the backend that builds for it.
"""

from importlib.resources import files
from importlib.resources.abc import Traversable

from edgesdk.plugin import Backend, ZigCC


def profile_file(device_id: str) -> Traversable:
    """The shipped YAML profile for a built-in device id."""
    return files("edgesdk_device_profiles") / f"{device_id}.yaml"


def linux_aarch64_backend(name: str, description: str) -> Backend:
    """An AArch64 Linux/Android shared library, cross-linked with zig cc (no system toolchain)."""
    return Backend(name=name, description=description, toolchain=ZigCC(target="aarch64-linux-gnu"))
