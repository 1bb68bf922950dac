"""XR headset: a Snapdragon XR2 Gen 2-class standalone headset (Quest 3 class; aarch64)."""

from edgesdk.plugin import hookimpl
from edgesdk_plugins import linux_aarch64_backend, profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("xr-headset")]


@hookimpl
def edgesdk_backends():
    return [linux_aarch64_backend("xr-headset", "AArch64 shared library for the xr-headset CPU cluster; host build simulates")]
