"""XR headset: a Snapdragon XR2 Gen 2-class standalone headset (Quest 3 class; aarch64)."""

from edgesdk import hookimpl
from edgesdk_plugins import profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("xr-headset")]
