"""Phone: a Snapdragon 8 Gen 3-class handset (Hexagon NPU, Adreno GPU, Kryo CPU; aarch64)."""

from edgesdk import hookimpl
from edgesdk_plugins import profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("phone")]
