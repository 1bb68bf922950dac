"""Automotive: a Snapdragon SA8295P-class digital-cockpit SoC (aarch64)."""

from edgesdk.plugin import hookimpl
from edgesdk_plugins import linux_aarch64_backend, profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("automotive")]


@hookimpl
def edgesdk_backends():
    return [linux_aarch64_backend("automotive", "AArch64 shared library for the automotive CPU cluster; host build simulates")]
