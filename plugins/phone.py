"""Phone: a Snapdragon 8 Gen 3-class handset (Hexagon NPU, Adreno GPU, Kryo CPU; aarch64)."""

from edgesdk.plugin import hookimpl
from edgesdk_plugins import linux_aarch64_backend, profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("phone")]


@hookimpl
def edgesdk_backends():
    return [linux_aarch64_backend("phone", "AArch64 shared library for the phone CPU cluster; host build simulates")]
