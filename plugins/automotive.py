"""Automotive: a Snapdragon SA8295P-class digital-cockpit SoC (aarch64)."""

from edgesdk import hookimpl
from edgesdk_plugins import profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("automotive")]
