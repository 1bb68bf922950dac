"""IoT: a QCS6490-class edge gateway (RB3 Gen 2 class; aarch64)."""

from edgesdk import hookimpl
from edgesdk_plugins import profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("iot")]
