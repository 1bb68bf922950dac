"""Templates: the scaffolds of `edgesdk new`, served through the same hook a plugin's are.

The template directories ship in the ``edgesdk_templates`` package; each is a copier template.
"""

from importlib.resources import files

from edgesdk.plugin import Template, hookimpl


@hookimpl
def edgesdk_templates():
    root = files("edgesdk_templates")
    return [
        Template(name="app", kind="app", description="A project that deploys one ONNX model to several devices and verifies it on each", path=root / "app"),
        Template(
            name="plugin", kind="plugin", description="A pip-installable plugin that adds a device: its profile, its backend and tests", path=root / "plugin"
        ),
    ]
