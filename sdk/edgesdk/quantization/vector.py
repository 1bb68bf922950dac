"""Vector quantization (``--quantize vq``): each weight as indices into a k-means codebook.

A conv or Gemm weight, seen as ``rows`` output channels x ``depth`` reduction elements (as in
edgesdk.quantization.weight_only), is cut into vectors of ``dim`` consecutive weights along the
depth. k-means (k-means++ seeding, Lloyd iterations, seeded) finds a codebook of ``2**bits``
float16 vectors per layer; each vector is stored as the index of its nearest entry (``bits`` per
index: 4 or 8), i.e. ``bits / dim`` bits per weight plus the codebook. Activations are float16.

In ONNX: ``Cast(indices) -> Gather(codebook) -> Reshape (rows, depth) [-> Reshape to the conv
weight]``, which onnxruntime runs; the lowering keeps the indices packed and looks the codebook
up inside the kernel's reduction loop (edgesdk.compile.packed_kernels). Layers whose depth
is not a multiple of ``dim`` stay float16.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgesdk.frontend.model import Model
from edgesdk.quantization.half import to_float16
from edgesdk.quantization.ptq import named_nodes
from edgesdk.quantization.weight_only import at_blocked_opset, is_transposed, weights_of

ITERATIONS = 25
CHUNK = 4096  # vectors per distance block (memory: CHUNK x codebook size)
# k-means runs on a seeded sample of at most this many vectors per codebook entry (faiss's
# default): more points move the centroids no further but cost linearly.
POINTS_PER_ENTRY = 256
SEEDING_POINTS_PER_ENTRY = 32  # k-means++ picks its seeds among fewer: the Lloyd steps then move them


@dataclasses.dataclass
class VectorQuantizedWeight:
    name: str
    indices: np.ndarray  # (rows, depth // dim), integers < 2**bits
    codebook: np.ndarray  # (2**bits, dim) float16
    bits: int

    def dequantized(self) -> np.ndarray:
        return self.codebook.astype(np.float32)[self.indices].reshape(self.indices.shape[0], -1)


def _nearest(vectors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    found = np.empty(len(vectors), np.int64)
    squared = (codebook**2).sum(axis=1)
    for start in range(0, len(vectors), CHUNK):
        block = vectors[start : start + CHUNK]
        found[start : start + CHUNK] = np.argmin(squared[None, :] - 2 * block @ codebook.T, axis=1)
    return found


def kmeans(vectors: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(codebook (k, dim), assignment) of ``vectors`` (n, dim): scikit-learn's k-means (k-means++
    seeding, Lloyd steps) on a seeded sample, then every vector to its nearest entry."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    everything = vectors.astype(np.float64)
    unique = np.unique(everything, axis=0)
    if len(unique) <= k:  # every vector gets its own entry: exact
        codebook = np.zeros((k, everything.shape[1]))
        codebook[: len(unique)] = unique
        return codebook, _nearest(everything, codebook)
    rng = np.random.default_rng(seed)
    sample = _subset(everything, POINTS_PER_ENTRY * k, k, rng)
    # Plain k-means++ (one candidate per pick) among fewer points: scikit-learn's greedy default
    # tries 2 + log(k) candidates per pick, and that seeding cost several times the Lloyd steps.
    # In float64, where scikit-learn's distances take no blockwise upcast.
    seeds, _ = kmeans_plusplus(_subset(sample, SEEDING_POINTS_PER_ENTRY * k, k, rng), k, n_local_trials=1, random_state=seed)
    # float32 steps lose nothing: the codebook is stored as float16.
    fitted = KMeans(n_clusters=k, init=seeds.astype(np.float32), n_init=1, max_iter=ITERATIONS, random_state=seed).fit(sample.astype(np.float32))
    codebook = fitted.cluster_centers_.astype(np.float64)
    return codebook, _nearest(everything, codebook)


def _subset(points: np.ndarray, size: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` of ``points``, or all of them when that leaves k-means no more than ``k``
    distinct points."""
    if len(points) <= size:
        return points
    chosen = points[np.sort(rng.choice(len(points), size, replace=False))]
    return chosen if len(np.unique(chosen, axis=0)) > k else points


def quantize_rows(name: str, weights: np.ndarray, dim: int, bits: int) -> VectorQuantizedWeight:
    rows, depth = weights.shape
    vectors = weights.reshape(-1, dim)
    codebook, assignment = kmeans(vectors, 2**bits)
    codebook = codebook.astype(np.float16)
    # Indices against the float16 codebook actually stored.
    assignment = _nearest(vectors.astype(np.float64), codebook.astype(np.float64))
    return VectorQuantizedWeight(name, assignment.reshape(rows, depth // dim), codebook, bits)


def quantize_vq(model: Model, dim: int, bits: int, *, only=None, keep_float=()) -> Model:
    """``model`` with float16 activations and its conv/matmul weights vector-quantized."""
    named = named_nodes(model.proto)
    weights = {}
    for name, (node, array) in weights_of(named).items():
        rows = array.reshape(array.shape[0], -1) if is_transposed(node) else array.T
        if node.name in keep_float or (only is not None and node.name not in only) or rows.shape[1] % dim:
            continue
        weights[name] = (quantize_rows(name, rows, dim, bits), list(array.shape), is_transposed(node))
    half = to_float16(dataclasses.replace(model, proto=named))
    proto = at_blocked_opset(half.proto)
    graph = proto.graph
    for name, (weight, shape, transposed) in weights.items():
        graph.initializer.remove(next(init for init in graph.initializer if init.name == name))
        nodes, initializers = _lookup_nodes(weight, shape, transposed)
        graph.initializer.extend(initializers)
        for index, node in enumerate(nodes):
            graph.node.insert(index, node)
    notes = [*model.notes, f"vector-quantized weights ({len(weights)} layers, {dim} weights per {bits}-bit index), float16 activations"]
    return dataclasses.replace(model, proto=proto, notes=notes)


def _lookup_nodes(weight: VectorQuantizedWeight, shape: list[int], transposed: bool):
    name = weight.name
    rows, vectors = weight.indices.shape
    depth = vectors * weight.codebook.shape[1]
    stored_type = TensorProto.UINT4 if weight.bits == 4 else TensorProto.UINT8
    indices = helper.make_tensor(f"{name}_indices", stored_type, [rows, vectors], weight.indices.ravel().tolist())
    codebook = numpy_helper.from_array(weight.codebook, f"{name}_codebook")
    flat = numpy_helper.from_array(np.array([rows, depth], np.int64), f"{name}_rows")
    initializers = [indices, codebook, flat]
    nodes = [
        helper.make_node("Cast", [indices.name], [f"{name}_index"], to=TensorProto.INT32, name=f"{name}_Cast"),
        helper.make_node("Gather", [codebook.name, f"{name}_index"], [f"{name}_vectors"], axis=0, name=f"{name}_Gather"),
        helper.make_node("Reshape", [f"{name}_vectors", flat.name], [name if len(shape) == 2 and transposed else f"{name}_flat"], name=f"{name}_Reshape"),
    ]
    if not transposed:  # a MatMul's (depth, rows) weight
        nodes.append(helper.make_node("Transpose", [f"{name}_flat"], [name], perm=[1, 0], name=f"{name}_Transpose"))
    if len(shape) != 2:
        target = numpy_helper.from_array(np.array(shape, np.int64), f"{name}_shape")
        initializers.append(target)
        nodes.append(helper.make_node("Reshape", [f"{name}_flat", target.name], [name], name=f"{name}_ReshapeConv"))
    return nodes, initializers
