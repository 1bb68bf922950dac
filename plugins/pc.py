"""PC: the x86-64 host class edgesdk runs on; its artifacts run natively."""

from edgesdk.plugin import Backend, ZigCC, hookimpl
from edgesdk_plugins import profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("pc")]


@hookimpl
def edgesdk_backends():
    # The same kind of library as the host simulation build, so on an x86-64 Linux host the
    # device artifact itself is what `run` and `verify` execute; beside onnxruntime, which runs
    # the nodes TVM cannot lower.
    return [
        Backend(
            name="pc",
            description="x86-64 Linux shared library, runs natively",
            toolchain=ZigCC(target="x86_64-linux-gnu"),
            onnxruntime_fallback=True,
        )
    ]
