"""The bad-input corpus: every case is one command a user could type with something wrong in it.
Each must exit 2 with one `error:` line (and at most one `hint:` line) on stderr, print no
traceback, and leave every file as it was: nothing created, changed or removed.

A case is (id, setup, expected): ``setup(d)`` writes what the case needs into the scratch
directory ``d`` and returns the command's arguments; ``expected`` is a piece of the error line.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgesdk.testing.models import mlp

SHAPE = ["--input-shape", "features=1,64"]
ZEROS = np.zeros((1, 64), np.float32)


def _mlp(d: Path) -> str:
    path = d / "mlp.onnx"
    if not path.exists():
        onnx.save(mlp(), path)
    return str(path)


def _bytes(d: Path, data: bytes, name: str = "model.onnx") -> str:
    (d / name).write_bytes(data)
    return str(d / name)


def _model(d: Path, nodes, inputs, outputs, initializers=(), opset: int = 17, name: str = "model.onnx", check: bool = False) -> str:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, d / name)
    return str(d / name)


def _tensor(name: str, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _relu(d: Path, **kwargs) -> str:
    return _model(d, [helper.make_node("Relu", ["x"], ["y"])], [_tensor("x", [1, 4])], [_tensor("y", [1, 4])], **kwargs)


def _float_mod(d: Path) -> str:
    """Python's (fmod=0) Mod of floats, which onnxruntime runs only from opset 28."""
    mod = helper.make_node("Mod", ["x", "y"], ["z"], fmod=0)
    return _model(d, [mod], [_tensor("x", [1, 4]), _tensor("y", [1, 4])], [_tensor("z", [1, 4])], opset=17)


def _old_tile(d: Path) -> str:
    tile = helper.make_node("Tile", ["x", "tiles", "axis"], ["y"])
    return _model(d, [tile], [_tensor("x", [1, 4]), _tensor("tiles", [1]), _tensor("axis", [1])], [_tensor("y", [1, 8])], opset=5)


def _npz(d: Path, name: str, **arrays) -> str:
    np.savez(d / name, **arrays)
    return str(d / name)


def _pickled_npz(d: Path, name: str, key: str) -> str:
    """An .npz whose member is a pickled object array: never loaded (no pickle from users)."""
    np.savez(d / name, **{key: np.array([{"a": 1}, None], dtype=object)})
    return str(d / name)


def _profile(d: Path, text: str) -> str:
    directory = d / "profiles"
    directory.mkdir(exist_ok=True)
    (directory / "mine.yaml").write_text(text)
    return str(directory)


def _mlp_calibration(d: Path, **arrays) -> list[str]:
    return ["deploy", _mlp(d), "--device", "pc", *SHAPE, "--quantize", "int8", "--calibration", _npz(d, "cal.npz", **arrays), "-o", str(d / "out")]


Case = tuple[str, Callable[[Path], list[str]], str]

MODEL_FILES: list[Case] = [
    ("empty file", lambda d: ["deploy", _bytes(d, b""), "-d", "pc"], "not an ONNX model"),
    ("random bytes", lambda d: ["deploy", _bytes(d, np.random.default_rng(0).bytes(4096)), "-d", "pc"], "not an ONNX model"),
    ("truncated model", lambda d: ["deploy", _bytes(d, mlp().SerializeToString()[:700]), "-d", "pc", *SHAPE], "not an ONNX model"),
    ("a text file", lambda d: ["deploy", _bytes(d, b"hello, I am not a model\n", "notes.onnx"), "-d", "pc"], "not an ONNX model"),
    ("a PNG named .onnx", lambda d: ["deploy", _bytes(d, b"\x89PNG\r\n\x1a\n" + bytes(64)), "-d", "pc"], "not an ONNX model"),
    ("a directory as the model", lambda d: ["deploy", str(d), "-d", "pc"], "not an ONNX model"),
    ("no such file", lambda d: ["deploy", str(d / "absent.onnx"), "-d", "pc"], "no such model file"),
    ("a graph without nodes", lambda d: _model_args(d, _model(d, [], [_tensor("x", [1])], [_tensor("x", [1])])), "no graph nodes"),
    ("unknown operator", lambda d: _model_args(d, _op(d, "FooBar")), "FooBar"),
    ("unknown domain", lambda d: _model_args(d, _op(d, "Foo", domain="com.acme")), "com.acme.Foo"),
    ("a model onnxruntime cannot run", lambda d: _model_args(d, _float_mod(d)), "onnxruntime, the reference every build is checked against, cannot run"),
    ("opset too new", lambda d: _model_args(d, _relu(d, opset=99)), "opset 99"),
    # Older than opset 7 is converted (onnx's version converter), which has no adapter for Tile 1 -> 6.
    ("opset too old to convert", lambda d: _model_args(d, _old_tile(d)), "opset 5"),
    ("missing initializer", lambda d: _model_args(d, _missing_initializer(d)), "invalid ONNX model"),
    ("a cycle", lambda d: _model_args(d, _cycle(d)), "invalid ONNX model"),
    ("duplicate outputs", lambda d: _model_args(d, _duplicate_outputs(d)), "invalid ONNX model"),
    ("terabytes of activations", lambda d: _model_args(d, _unary(d, "Relu", ["a", "b"]), "--input-shape", "x=1000000,1000000"), "TiB"),
    ("string input", lambda d: _model_args(d, _unary(d, "Identity", [2], TensorProto.STRING)), "string"),
    ("external data file missing", lambda d: _model_args(d, _external(d)), "external data"),
    ("shape input without a value", lambda d: _model_args(d, _reshape_by_input(d)), "sets a shape"),
    ("an operator TVM cannot lower, off pc", lambda d: ["deploy", _det(d), "-d", "phone", "-o", str(d / "out")], "unsupported on phone: Det ("),
]  # fmt: skip


def _det(d: Path) -> str:
    return _model(d, [helper.make_node("Det", ["x"], ["y"])], [_tensor("x", [2, 3, 3])], [_tensor("y", [2])])


def _unary(d: Path, op_type: str, shape, dtype=TensorProto.FLOAT) -> str:
    return _model(d, [helper.make_node(op_type, ["x"], ["y"])], [_tensor("x", shape, dtype)], [_tensor("y", shape, dtype)])


def _model_args(d: Path, model: str, *extra: str) -> list[str]:
    return ["deploy", model, "-d", "pc", "-o", str(d / "out"), *extra]


def _op(d: Path, op_type: str, domain: str = "") -> str:
    graph = helper.make_graph([helper.make_node(op_type, ["x"], ["y"], domain=domain)], "g", [_tensor("x", [1, 4])], [_tensor("y", [1, 4])])
    imports = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=imports), d / "model.onnx")
    return str(d / "model.onnx")


def _missing_initializer(d: Path) -> str:
    return _model(d, [helper.make_node("Add", ["x", "w"], ["y"])], [_tensor("x", [1, 4])], [_tensor("y", [1, 4])])


def _cycle(d: Path) -> str:
    nodes = [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])]
    return _model(d, nodes, [_tensor("x", [1, 4])], [_tensor("b", [1, 4])])


def _duplicate_outputs(d: Path) -> str:
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])]
    return _model(d, nodes, [_tensor("x", [1, 4])], [_tensor("y", [1, 4])])


def _external(d: Path) -> str:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 4], np.ones(4, np.float32).tobytes(), raw=True)
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    weight.external_data.add(key="location", value="weights.bin")
    return _model(d, [helper.make_node("Add", ["x", "w"], ["y"])], [_tensor("x", [1, 4])], [_tensor("y", [1, 4])], [weight])


def _reshape_by_input(d: Path) -> str:
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    return _model(d, nodes, [_tensor("x", [2, 3]), _tensor("shape", [2], TensorProto.INT64)], [_tensor("y", [3, 2])])


OPTIONS: list[Case] = [
    ("dynamic dims without --input-shape", lambda d: ["deploy", _mlp(d), "-d", "pc"], "dynamic dimensions"),
    ("--input-shape without dims", lambda d: ["deploy", _mlp(d), "-d", "pc", "--input-shape", "features"], "expected NAME=D1,D2"),
    ("--input-shape with letters", lambda d: ["deploy", _mlp(d), "-d", "pc", "--input-shape", "features=a,b"], "expected NAME=D1,D2"),
    ("--input-shape negative", lambda d: ["deploy", _mlp(d), "-d", "pc", "--input-shape", "features=1,-64"], "expected NAME=D1,D2"),
    ("--input-shape without a name", lambda d: ["deploy", _mlp(d), "-d", "pc", "--input-shape", "=1,64"], "--input-shape"),
    ("--input-shape unknown input", lambda d: ["deploy", _mlp(d), "-d", "pc", "--input-shape", "feature=1,64"], "names no input"),
    ("--input-shape wrong rank", lambda d: ["deploy", _mlp(d), "-d", "pc", "--input-shape", "features=1,64,1"], "expected 2 dims of size >= 0"),
    ("--input-shape against a fixed dim", lambda d: ["deploy", _mlp(d), "-d", "pc", "--input-shape", "features=1,63"], "contradicts"),
    ("--input-shape of terabytes", lambda d: ["deploy", _mlp(d), "-d", "pc", "--input-shape", "features=100000000000,64"], "TiB"),
    ("unknown device", lambda d: ["deploy", _mlp(d), "-d", "toaster", *SHAPE], "unknown device 'toaster'"),
    ("unknown scheme", lambda d: ["deploy", _mlp(d), "-d", "pc", *SHAPE, "--quantize", "int3"], "unknown scheme"),
    ("unknown unit", lambda d: ["deploy", _mlp(d), "-d", "phone", *SHAPE, "--unit", "tpu"], "tpu"),
    ("--group-size 0", lambda d: ["deploy", _mlp(d), "-d", "pc", *SHAPE, "--quantize", "w4a16", "--group-size", "0"], "--group-size 0"),
    ("--vq-bits 9", lambda d: ["deploy", _mlp(d), "-d", "pc", *SHAPE, "--quantize", "vq", "--vq-bits", "9"], "--vq-bits 9"),
    ("--range-method unknown", lambda d: _mlp_calibration(d, features=np.zeros((4, 64), np.float32)) + ["--range-method", "median"], "--range-method median"),
    ("unknown pass", lambda d: ["deploy", _mlp(d), "-d", "pc", *SHAPE, "--pass", "nope"], "nope"),
    ("pass config not JSON", lambda d: ["deploy", _mlp(d), "-d", "pc", *SHAPE, "--pass", "nope={oops"], "nope"),
    ("unknown template", lambda d: ["new", "nope", "thing", "-o", str(d / "new")], "nope"),
    ("plugin name not an identifier", lambda d: ["new", "plugin", "1 bad name", "-o", str(d / "new")], "1 bad name"),
    ("--data without =", lambda d: ["new", "plugin", "acme-npu", "--data", "vendor", "-o", str(d / "new")], "--data"),
]  # fmt: skip

DATA_FILES: list[Case] = [
    ("calibration with a pickled object array", lambda d: _mlp_calibration_file(d, _pickled_npz(d, "cal.npz", "features")), "object"),
    ("calibration not an npz", lambda d: _mlp_calibration_file(d, _bytes(d, b"PK\x03\x04 broken zip", "cal.npz")), "cal.npz"),
    ("calibration a pickle file", lambda d: _mlp_calibration_file(d, _bytes(d, pickle.dumps({"features": 1}), "cal.npz")), "cal.npz"),
    ("calibration missing the input", lambda d: _mlp_calibration(d, other=np.zeros((4, 64), np.float32)), "features"),
    ("calibration of the wrong shape", lambda d: _mlp_calibration(d, features=np.zeros((4, 63), np.float32)), "features"),
    ("calibration of strings", lambda d: _mlp_calibration(d, features=np.array([["a"] * 64] * 4)), "features"),
    ("calibration with a non-array member", lambda d: _mlp_calibration_file(d, _zip_with(d, "cal.npz", "notes.txt", b"hi")), "cal.npz"),
    ("calibration file missing", lambda d: _mlp_calibration_file(d, str(d / "absent.npz")), "no such file"),
    ("inputs with a pickled array", lambda d: _with_inputs(d, _pickled_npz(d, "in.npz", "features")), "object"),
    ("inputs naming another input", lambda d: _with_inputs(d, _npz(d, "in.npz", x=np.zeros((1, 64), np.float32))), "inputs do not match"),
    ("inputs of the wrong shape", lambda d: _with_inputs(d, _npz(d, "in.npz", features=np.zeros((2, 64), np.float32))), "has shape [2, 64]"),
    ("inputs of strings", lambda d: _with_inputs(d, _npz(d, "in.npz", features=np.array([["a"] * 64]))), "features"),
    ("inputs file missing", lambda d: _with_inputs(d, str(d / "absent.npz")), "no such file"),
]  # fmt: skip


def _with_inputs(d: Path, inputs: str) -> list[str]:
    return ["deploy", _mlp(d), "-d", "pc", *SHAPE, "--inputs", inputs, "-o", str(d / "out")]


def _mlp_calibration_file(d: Path, calibration: str) -> list[str]:
    return ["deploy", _mlp(d), "-d", "pc", *SHAPE, "--quantize", "int8", "--calibration", calibration, "-o", str(d / "out")]


def _zip_with(d: Path, name: str, member: str, data: bytes) -> str:
    with zipfile.ZipFile(d / name, "w") as archive:
        archive.writestr(member, data)
    return str(d / name)


OUTPUTS_AND_PROFILES: list[Case] = [
    ("output is an existing file", lambda d: ["deploy", _mlp(d), "-d", "pc", *SHAPE, "-o", _bytes(d, b"keep me", "out")], "out"),
    ("output is a non-empty directory", lambda d: ["deploy", _mlp(d), "-d", "pc", *SHAPE, "-o", _full_dir(d)], "full"),
    ("output under a file", lambda d: ["deploy", _mlp(d), "-d", "pc", *SHAPE, "-o", str(Path(_bytes(d, b"x", "plain")) / "out")], "plain"),
    ("output not writable", lambda d: ["deploy", _mlp(d), "-d", "pc", *SHAPE, "-o", "/proc/edgesdk-out"], "/proc/edgesdk-out"),
    ("quantize output exists", lambda d: ["quantize", _mlp(d), "--scheme", "w4a16", *SHAPE, "-o", _bytes(d, b"keep", "q.onnx")], "q.onnx"),
    ("quantize output not .onnx", lambda d: ["quantize", _mlp(d), "--scheme", "w4a16", *SHAPE, "-o", str(d / "q.txt")], "q.txt"),
    ("profile --html over a file", lambda d: ["profile", _mlp(d), "-d", "pc", *SHAPE, "--html", _bytes(d, b"keep", "r.html")], "r.html"),
    ("compare with no device", lambda d: ["compare", _mlp(d), "--devices", ",", *SHAPE], "--devices"),
    ("profile YAML not YAML", lambda d: _with_profile(d, "id: [unclosed\n"), "mine.yaml"),
    ("profile YAML with a python tag", lambda d: _with_profile(d, "!!python/object/apply:os.system ['true']\n"), "mine.yaml"),
    ("profile YAML missing fields", lambda d: _with_profile(d, "id: mine\n"), "mine.yaml"),
    ("profile YAML a list", lambda d: _with_profile(d, "- 1\n- 2\n"), "mine.yaml"),
    ("--profiles-dir missing", lambda d: ["deploy", _mlp(d), "-d", "pc", *SHAPE, "--profiles-dir", str(d / "none")], "none"),
    ("calibrate a device whose code does not run here", lambda d: ["calibrate", "--device", "phone"], "does not run on this host"),
    ("tune with no trials", lambda d: ["tune", _mlp(d), *SHAPE, "--trials", "0"], "--trials"),
    ("compare a broken artifact", lambda d: ["compare", _fake_artifact(d), "--devices", "pc"], "not a valid edgesdk manifest"),
]  # fmt: skip


def _with_profile(d: Path, text: str) -> list[str]:
    return ["deploy", _mlp(d), "-d", "pc", *SHAPE, "--profiles-dir", _profile(d, text), "-o", str(d / "out")]


def _full_dir(d: Path) -> str:
    (d / "full").mkdir()
    (d / "full" / "mine.txt").write_text("keep")
    return str(d / "full")


def _fake_artifact(d: Path) -> str:
    (d / "art").mkdir()
    (d / "art" / "manifest.json").write_text("{}")
    return str(d / "art")


ARTIFACTS: list[Case] = [
    ("run a non-artifact directory", lambda d: ["run", _full_dir(d), "--inputs", _npz(d, "in.npz", features=ZEROS)], "not an edgesdk artifact"),
    ("run a missing artifact", lambda d: ["run", str(d / "absent"), "--inputs", _npz(d, "in.npz", features=ZEROS)], "no such artifact"),
    ("verify a non-artifact directory", lambda d: ["verify", _full_dir(d)], "not an edgesdk artifact"),
    ("verify a file", lambda d: ["verify", _bytes(d, b"x", "file")], "file"),
    ("run a broken manifest", lambda d: ["run", _fake_artifact(d), "--inputs", _npz(d, "in.npz", x=np.zeros(1))], "manifest"),
]  # fmt: skip

CASES = MODEL_FILES + OPTIONS + DATA_FILES + OUTPUTS_AND_PROFILES + ARTIFACTS


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content (directories: '/')."""
    return {str(path.relative_to(root)): "/" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(root.rglob("*"))}


def assert_one_clean_error(code: int, out: str, err: str, expected: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert "Traceback" not in err and out == "", err
    assert len(lines) in (1, 2) and lines[0].startswith("error: ") and all(line.startswith("hint: ") for line in lines[1:]), err
    assert expected in lines[0], lines[0]


def test_the_corpus_is_large_and_its_ids_unique():
    assert len(CASES) >= 60 and len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("case_id", "setup", "expected"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_error_line_and_changes_nothing(run_cli, tmp_path, case_id, setup, expected):
    args = setup(tmp_path)
    before = snapshot(tmp_path)
    code, out, err = run_cli(*args)
    assert_one_clean_error(code, out, err, expected)
    assert snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """An mlp deployed to pc once for the `run` cases (a private cache: no fixture sets one at this scope)."""
    import edgesdk

    path = tmp_path_factory.mktemp("artifact") / "mlp-pc"
    edgesdk.deploy(mlp(), "pc", path, input_shapes={"features": [1, 64]}, cache=False)
    return path


RUN_CASES: list[tuple[str, Callable[[Path], str], str]] = [
    ("run: another input's name", lambda d: _npz(d, "in.npz", x=ZEROS), "inputs do not match"),
    ("run: a missing input", lambda d: _npz(d, "in.npz"), "missing features"),
    ("run: the wrong shape", lambda d: _npz(d, "in.npz", features=np.zeros((2, 64), np.float32)), "has shape [2, 64]"),
    ("run: strings", lambda d: _npz(d, "in.npz", features=np.array([["a"] * 64])), "features"),
    ("run: a pickled array", lambda d: _pickled_npz(d, "in.npz", "features"), "object"),
    ("run: not an npz", lambda d: _bytes(d, b"garbage", "in.npz"), "in.npz"),
    ("run: inputs missing", lambda d: str(d / "absent.npz"), "no such file"),
]


@pytest.mark.parametrize(("case_id", "inputs", "expected"), RUN_CASES, ids=[case[0] for case in RUN_CASES])
def test_run_refuses_bad_inputs_and_changes_nothing(run_cli, tmp_path, artifact, case_id, inputs, expected):
    args = ["run", str(artifact), "--inputs", inputs(tmp_path), "-o", str(tmp_path / "out.npz")]
    before = snapshot(tmp_path), snapshot(artifact)
    code, out, err = run_cli(*args)
    assert_one_clean_error(code, out, err, expected)
    assert (snapshot(tmp_path), snapshot(artifact)) == before


def test_a_plugin_raising_in_a_hook_is_one_error_line(run_cli, make_plugin, tmp_path):
    """A plugin whose pass raises when it runs: the deploy stops with one line naming it. (A
    plugin that raises while being loaded is skipped with a warning instead, so that one broken
    plugin does not stop deploys to every other device: tests/plugin.)"""
    make_plugin(
        """
        from edgesdk.plugin import Pass, hookimpl

        class Broken(Pass):
            name = "broken"
            stage = "onnx"

            def run(self, module, config):
                raise RuntimeError("the vendor SDK is not installed")

        @hookimpl
        def edgesdk_passes():
            return [Broken()]
        """
    )
    onnx.save(mlp(), tmp_path / "mlp.onnx")
    before = snapshot(tmp_path)
    code, out, err = run_cli("deploy", str(tmp_path / "mlp.onnx"), "-d", "pc", *SHAPE, "--pass", "broken", "-o", str(tmp_path / "out"))
    assert_one_clean_error(code, out, err, "the vendor SDK is not installed")
    assert snapshot(tmp_path) == before
