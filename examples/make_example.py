"""Build the bundled example model, deterministically and offline: `python examples/make_example.py OUT.onnx`.

`hand_tracker`: a small mobile CNN of the kind an XR headset runs on its cameras: a strided stem,
three depthwise-separable blocks with residual adds, global pooling, then two heads, 21 3-D hand
keypoints and a hand-presence score. The batch dim is dynamic and the keypoint reshape is computed
in-graph (Shape -> Gather -> Concat -> Reshape), as exporters write it, so a deploy has to bind
the input shape (`--input-shape frames=1,3,96,96`) and fold that subgraph. Weights are seeded
random: the example shows the pipeline, not accuracy.
"""

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgesdk.testing.models import GraphBuilder


def hand_tracker(seed: int = 7) -> onnx.ModelProto:
    g = GraphBuilder(seed)

    def conv_bn_relu(x: str, cin: int, cout: int, kernel: int, stride: int = 1, group: int = 1) -> str:
        weight = g.weight((cout, cin // group, kernel, kernel), cin // group * kernel * kernel)
        pad = kernel // 2
        conv = g.op("Conv", [x, weight], pads=[pad] * 4, strides=[stride] * 2, group=group)
        return g.op("Relu", [g.batch_norm(conv, cout)])

    x, current = conv_bn_relu("frames", 3, 24, 3, stride=2), 24  # 48x48
    for channels, stride in ((32, 2), (32, 1), (48, 2)):  # 24x24, 24x24, 12x12
        depthwise = conv_bn_relu(x, current, current, 3, stride=stride, group=current)
        y = conv_bn_relu(depthwise, current, channels, 1)
        x = g.op("Add", [x, y]) if stride == 1 and current == channels else y
        current = channels
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    features = g.op("Relu", [g.op("Gemm", [pooled, g.weight((64, 48), 48), g.const(np.zeros(64, np.float32))], transB=1)])
    flat = g.op("Gemm", [features, g.weight((63, 64), 64), g.const(np.zeros(63, np.float32))], transB=1)
    batch = g.op("Gather", [g.op("Shape", ["frames"]), g.const(np.array([0], np.int64), "idx")], axis=0)
    shape = g.op("Concat", [batch, g.const(np.array([21, 3], np.int64), "dims")], axis=0)
    keypoints = g.op("Reshape", [flat, shape], "keypoints")
    presence = g.op("Sigmoid", [g.op("Gemm", [features, g.weight((1, 64), 64), g.const(np.zeros(1, np.float32))], transB=1)], "presence")
    return g.model(
        "hand_tracker",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", 3, 96, 96])],
        [
            helper.make_tensor_value_info(keypoints, TensorProto.FLOAT, ["batch", 21, 3]),
            helper.make_tensor_value_info(presence, TensorProto.FLOAT, ["batch", 1]),
        ],
    )


def frames(count: int, seed: int) -> np.ndarray:
    """``count`` camera-like frames [count, 3, 96, 96]: smooth gradients and blobs with sensor
    noise, normalised as the model takes them (calibration and held-out samples for the demo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:96, 0:96] / 95.0
    images = []
    for _ in range(count):
        angle, cx, cy, radius = rng.uniform(0, np.pi), *rng.uniform(0.2, 0.8, 2), rng.uniform(0.1, 0.3)
        gradient = np.cos(angle) * x + np.sin(angle) * y
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
        channels = [rng.uniform(0.2, 0.8) * gradient + rng.uniform(0.3, 1.0) * blob for _ in range(3)]
        images.append(np.stack(channels) + rng.normal(0, 0.02, (3, 96, 96)))
    batch = np.asarray(images, np.float32)
    return (batch - 0.45) / 0.25


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the hand_tracker example model, and beside it 32 calibration and 32 held-out frames (.npz).")
    parser.add_argument("out", type=Path, help="where to write it (.onnx)")
    out = parser.parse_args().out
    onnx.save(hand_tracker(), out)
    np.savez(out.with_suffix(".calibration.npz"), frames=frames(32, seed=1))
    np.savez(out.with_suffix(".eval.npz"), frames=frames(32, seed=2))
