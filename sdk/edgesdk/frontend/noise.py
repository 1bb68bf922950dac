"""The reference's own rounding noise: how far a model's outputs move when every convolution and
matmul result is off by what float summation order leaves in it.

A quantized graph rounds each activation to an integer step; a value on a step boundary goes
either way under any change in summation order, and a deep quantized model can amplify those
flips (PP-OCRv4 det at w4a8: a relative error of 1e-6 in every conv moves ~0.6% of its
probabilities by more than 0.05). Two correct implementations, onnxruntime and a compiled kernel
that sums in another order, then disagree far beyond any tolerance on a few outputs. So
verification of a reduced-precision deploy measures the reference against itself: each
float32 Conv/MatMul/Gemm output is multiplied by ``1 + NOISE_SCALE x N(0, 1)`` per element
(about the error float32 summation leaves in a dot product of a few hundred terms), over
``NOISE_DRAWS`` seeded draws. A smooth model barely moves; a chaotic one shows how much no
implementation can promise (edgesdk.frontend.agreement). float16 layers are left alone: they are
checked with float16's wider tolerance already.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, shape_inference

from edgesdk.frontend.reference import reference_runner

NOISE_SCALE = 2.0**-20  # 16 float32 rounding units (2**-24): sqrt(256) of them for a 256-term dot product
NOISE_DRAWS = 3
PERTURBED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
_PREFIX = "edgesdk_noise_"


def perturbable(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    """``proto`` with each float32 Conv/MatMul/Gemm output multiplied by a new graph input, and those
    inputs' shapes (a shape that shape inference cannot tell becomes one factor per layer)."""
    inferred = shape_inference.infer_shapes(proto)
    known = {value.name: value.type.tensor_type for value in [*inferred.graph.value_info, *inferred.graph.output]}
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    graph = copy.graph
    nodes: list[onnx.NodeProto] = []
    factors: dict[str, tuple[int, ...]] = {}
    for node in graph.node:
        nodes.append(node)
        tensor = known.get(node.output[0]) if node.op_type in PERTURBED_OPS and not node.domain else None
        if tensor is None or tensor.elem_type != onnx.TensorProto.FLOAT:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        shape = tuple(dims) if dims and all(dims) else ()
        name, raw = f"{_PREFIX}{len(factors)}", f"{node.output[0]}__{_PREFIX}raw"
        nodes.append(helper.make_node("Mul", [raw, name], [node.output[0]], name=f"{name}_mul"))
        node.output[0] = raw
        graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(shape)))
        factors[name] = shape
    del graph.node[:]
    graph.node.extend(nodes)
    return copy, factors


def noise_outputs(proto: onnx.ModelProto, inputs: Mapping[str, np.ndarray], draws: int = NOISE_DRAWS, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """onnxruntime's outputs on ``inputs`` under ``draws`` seeded perturbations (empty when the
    model has nothing to perturb)."""
    model, factors = perturbable(proto)
    if not factors:
        return []
    run = reference_runner(model.SerializeToString())
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(draws):
        noise = {name: (1 + NOISE_SCALE * rng.standard_normal(shape)).astype(np.float32) for name, shape in factors.items()}
        results.append(run({**inputs, **noise}))
    return results
