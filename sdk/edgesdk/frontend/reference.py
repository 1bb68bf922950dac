"""The reference numerics: onnxruntime on the CPU, as every check and accuracy figure runs it."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


def reference_runner(model_bytes: bytes) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """A function from inputs to onnxruntime's outputs (CPU provider, basic optimizations only,
    like the prepared model)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda inputs: dict(zip(names, session.run(names, dict(inputs)), strict=False))


def reference_outputs(model_bytes: bytes, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return reference_runner(model_bytes)(inputs)


def reference_name() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__}"
