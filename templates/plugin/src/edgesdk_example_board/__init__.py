"""edgesdk plugin: the example-board device, a QCS6490-class gateway with a smaller NPU memory."""

from importlib.resources import files

from edgesdk.plugin import hookimpl

__version__ = "0.1.0"


@hookimpl
def edgesdk_device_profiles():
    """Contribute the profiles shipped in this package."""
    return [files(__package__) / "example-board.yaml"]
