"""PC: the x86-64 host class edgesdk runs on; its artifacts run natively."""

from edgesdk import hookimpl
from edgesdk_plugins import profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("pc")]
