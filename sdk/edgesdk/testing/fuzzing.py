"""Fuzz targets: what a user hands edgesdk (model bytes, model fields, profile YAML, npz files),
mutated, and the entry points that read them. A target returns ``accepted`` or ``rejected`` (an
``EdgeSDKError``: one clear line) for every input; anything else it raises is a bug, which
``outcome`` reports as ``uncaught``. ``run_target`` drives them with hypothesis (a test extra,
imported only there); ``benchmarks/fuzz.py`` runs thousands of cases, the tests a few.
"""

from __future__ import annotations

import collections
import io
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgesdk.errors import EdgeSDKError

# One edit of a byte string: (kind, position as a share of the length, bytes to insert or xor).
Edit = tuple[str, float, bytes]
EDITS = ("flip", "insert", "delete", "truncate", "duplicate")
SEED = 20261127
OPS = ["Relu", "Conv", "Gemm", "Reshape", "Foo", "", "Loop", "LSTM", "Resize", "Softmax", "If", "Attention"]


def mutate(data: bytes, edits: Sequence[Edit]) -> bytes:
    """``data`` after ``edits``, each at a position given as a share of the current length."""
    buffer = bytearray(data)
    for kind, where, payload in edits:
        at = min(int(where * len(buffer)), max(len(buffer) - 1, 0))
        if kind == "flip" and buffer:
            for offset, byte in enumerate(payload):
                if at + offset < len(buffer):
                    buffer[at + offset] ^= byte or 0xFF
        elif kind == "insert":
            buffer[at:at] = payload
        elif kind == "delete":
            del buffer[at : at + len(payload)]
        elif kind == "truncate":
            del buffer[at:]
        elif kind == "duplicate":
            buffer[at:at] = buffer[at : at + 16 * len(payload)]
    return bytes(buffer)


def outcome(target: Callable[[], object]) -> str:
    """``accepted``, ``rejected`` (a clean edgesdk error) or ``uncaught: Type: message``."""
    try:
        target()
    except EdgeSDKError:
        return "rejected"
    except Exception as exc:  # noqa: BLE001 - exactly what fuzzing looks for
        return f"uncaught: {type(exc).__name__}: {str(exc).strip()[:200]}"
    return "accepted"


def seed_model() -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    from edgesdk.testing.models import tiny_cnn

    return tiny_cnn(), {"image": [1, 3, 32, 32]}


def load_model_bytes(data: bytes, shapes: dict[str, list[int]]) -> Callable[[], object]:
    """Read ``data`` as a model file, as `edgesdk deploy` does before compiling."""

    def run() -> object:
        from edgesdk.frontend.model import load_model

        with tempfile.TemporaryDirectory(prefix="edgesdk-fuzz-") as scratch:
            path = Path(scratch) / "model.onnx"
            path.write_bytes(data)
            return load_model(path, shapes)

    return run


def load_model_proto(proto: onnx.ModelProto, shapes: dict[str, list[int]]) -> Callable[[], object]:
    def run() -> object:
        from edgesdk.frontend.model import load_model

        return load_model(proto, shapes)

    return run


def seed_profile() -> str:
    """The phone's profile under an id of its own (a user's profile may not reuse a built-in id)."""
    from importlib.resources import files

    text = (files("edgesdk_device_profiles") / "phone.yaml").read_text(encoding="utf-8")
    return text.replace("\nid: phone\n", "\nid: fuzzed-phone\n", 1)


def load_profile_text(text: str) -> Callable[[], object]:
    """Read ``text`` as a user's profile file, as `--profiles-dir` does, and look its device up."""

    def run() -> object:
        from edgesdk.devices.registry import load_profiles

        with tempfile.TemporaryDirectory(prefix="edgesdk-fuzz-") as scratch:
            (Path(scratch) / "fuzzed.yaml").write_text(text, encoding="utf-8", errors="surrogateescape")
            return load_profiles(scratch)

    return run


def seed_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, image=np.zeros((1, 3, 32, 32), np.float32), scale=np.arange(4, dtype=np.int64))
    return buffer.getvalue()


def load_npz_bytes(data: bytes) -> Callable[[], object]:
    """Read ``data`` as an inputs file and check it against a model's inputs, as `run` does."""

    def run() -> object:
        from edgesdk.frontend.model import TensorSpec
        from edgesdk.frontend.tensors import check_inputs, load_npz

        with tempfile.TemporaryDirectory(prefix="edgesdk-fuzz-") as scratch:
            path = Path(scratch) / "inputs.npz"
            path.write_bytes(data)
            arrays = load_npz(path)
            return check_inputs({"image": arrays.get("image", np.zeros(0))}, [TensorSpec("image", (1, 3, 32, 32), "float32")], str(path))

    return run


def edits():
    """The hypothesis strategy of up to four byte edits."""
    from hypothesis import strategies as st

    return st.lists(st.tuples(st.sampled_from(EDITS), st.floats(0, 1, allow_nan=False), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)


def mutate_fields(proto: onnx.ModelProto, data) -> onnx.ModelProto:
    """One to three protobuf field edits: dims, types, op types, attributes, names, opsets, weights."""
    from hypothesis import strategies as st

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    graph = proto.graph
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["dim", "dtype", "op", "attribute", "name", "opset", "weight", "drop", "duplicate"]))
        if kind == "dim":
            values = [*graph.input, *graph.output, *graph.value_info]
            dims = [dim for value in values for dim in value.type.tensor_type.shape.dim]
            if dims:
                dim = data.draw(st.sampled_from(dims))
                if data.draw(st.booleans()):
                    dim.dim_value = data.draw(st.integers(-4, 2**45))
                else:
                    dim.dim_param = data.draw(st.text(max_size=4))
        elif kind == "dtype":
            tensors = [*graph.initializer]
            values = [*graph.input, *graph.output]
            if tensors and data.draw(st.booleans()):
                data.draw(st.sampled_from(tensors)).data_type = data.draw(st.integers(0, 30))
            elif values:
                data.draw(st.sampled_from(values)).type.tensor_type.elem_type = data.draw(st.integers(0, 30))
        elif kind == "op" and graph.node:
            node = data.draw(st.sampled_from(list(graph.node)))
            node.op_type = data.draw(st.sampled_from(OPS) | st.text(max_size=6))
        elif kind == "attribute":
            attributes = [attribute for node in graph.node for attribute in node.attribute]
            if attributes:
                attribute = data.draw(st.sampled_from(attributes))
                if attribute.ints:
                    attribute.ints[data.draw(st.integers(0, len(attribute.ints) - 1))] = data.draw(st.integers(-(2**40), 2**40))
                elif attribute.type == onnx.AttributeProto.INT:
                    attribute.i = data.draw(st.integers(-(2**40), 2**40))
                elif attribute.type == onnx.AttributeProto.FLOAT:
                    attribute.f = data.draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
        elif kind == "name" and graph.node:
            node = data.draw(st.sampled_from(list(graph.node)))
            if node.input:
                node.input[data.draw(st.integers(0, len(node.input) - 1))] = data.draw(
                    st.sampled_from(["", "x", "image", node.output[0]]) | st.text(max_size=5)
                )
        elif kind == "opset" and proto.opset_import:
            proto.opset_import[0].version = data.draw(st.integers(-2, 40))
        elif kind == "weight" and graph.initializer:
            tensor = data.draw(st.sampled_from(list(graph.initializer)))
            if tensor.raw_data:
                tensor.raw_data = tensor.raw_data[: data.draw(st.integers(0, len(tensor.raw_data)))]
            else:
                tensor.dims.append(data.draw(st.integers(0, 3)))
        elif kind == "drop" and graph.node:
            del graph.node[data.draw(st.integers(0, len(graph.node) - 1))]
        elif kind == "duplicate" and graph.node:
            graph.node.append(graph.node[data.draw(st.integers(0, len(graph.node) - 1))])
    return proto


def run_target(cases: int, make: Callable[[Any], Callable[[], object]], seed_value: int = SEED) -> dict:
    """``cases`` inputs that ``make`` draws from hypothesis (derandomized, ``seed_value``), each
    read by the target it returns: counts of accepted, rejected and uncaught, and examples of
    uncaught ones."""
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    counts: collections.Counter = collections.Counter()
    uncaught: list[str] = []

    @seed(seed_value)
    @settings(max_examples=cases, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(st.data())
    def case(data) -> None:
        result = outcome(make(data))
        counts[result.split(":")[0]] += 1
        if result.startswith("uncaught") and len(uncaught) < 20:
            uncaught.append(result)

    started = time.monotonic()
    case()
    tally = {kind: counts[kind] for kind in ("accepted", "rejected", "uncaught")}
    return {"seconds": round(time.monotonic() - started, 1), "cases": sum(counts.values()), **tally, "uncaught_examples": uncaught}


def targets() -> dict[str, Callable[[Any], Callable[[], object]]]:
    """Each target: from a hypothesis ``data`` object, the read of one mutated input."""
    model, shapes = seed_model()
    model_bytes = model.SerializeToString()
    profile = seed_profile().encode()
    npz = seed_npz()
    return {
        "onnx_bytes": lambda data: load_model_bytes(mutate(model_bytes, data.draw(edits())), shapes),
        "onnx_fields": lambda data: load_model_proto(mutate_fields(model, data), shapes),
        "profile_yaml": lambda data: load_profile_text(mutate(profile, data.draw(edits())).decode("utf-8", "surrogateescape")),
        "npz_bytes": lambda data: load_npz_bytes(mutate(npz, data.draw(edits()))),
    }
