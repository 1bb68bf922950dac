"""IoT: a QCS6490-class edge gateway (RB3 Gen 2 class; aarch64)."""

from edgesdk.plugin import hookimpl
from edgesdk_plugins import linux_aarch64_backend, profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("iot")]


@hookimpl
def edgesdk_backends():
    return [linux_aarch64_backend("iot", "AArch64 shared library for the iot CPU cluster; host build simulates")]
