"""The reference numerics: onnxruntime on the CPU, as every check and accuracy figure runs it."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from edgesdk.errors import UserInputError


def reference_runner(model_bytes: bytes) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """A function from inputs to onnxruntime's outputs (CPU provider, basic optimizations only,
    like the prepared model)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors share no base class worth naming
        raise _refused("load", exc) from None
    names = [output.name for output in session.get_outputs()]

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return dict(zip(names, session.run(names, dict(inputs)), strict=False))
        except Exception as exc:  # noqa: BLE001 - as above
            raise _refused("run", exc) from None

    return run


def _refused(what: str, error: Exception) -> UserInputError:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return UserInputError(
        f"onnxruntime, the reference every build is checked against, cannot {what} the model: {(lines[-1] if lines else type(error).__name__)[:300]}",
        hint="edgesdk takes models onnxruntime runs; check the model's opset and operators",
    )


def reference_outputs(model_bytes: bytes, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return reference_runner(model_bytes)(inputs)


def reference_name() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__}"
