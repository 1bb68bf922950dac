"""edgesdk's built-in device plugins.

Each module is one device family, registered through the ``edgesdk`` entry-point group exactly as
a third-party plugin would be. A module is data and choices: it points at its profile YAML (in the
``edgesdk_device_profiles`` package) and, as the SDK grows, names its lowering choices.
"""

from importlib.resources import files
from importlib.resources.abc import Traversable


def profile_file(device_id: str) -> Traversable:
    """The shipped YAML profile for a built-in device id."""
    return files("edgesdk_device_profiles") / f"{device_id}.yaml"
