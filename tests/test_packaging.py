"""Packaging: every package is listed in pyproject.toml, and the wheel works on its own.

The fast tests read pyproject.toml and walk the four source trees. The slow ones build an sdist and
a wheel from a copy of the source tree, check that both hold every file, install the wheel
(not editable, runtime dependencies only) into a fresh virtual environment and run the installed
`edgesdk` from outside the source tree with a clean environment: `--version`, `devices`,
`plugins` and a deploy to `pc` and to `mcu`, timed.

Run the slow ones with `-s` (or `-rP`) to see the wheel size and the install and deploy times.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import BUILTIN_DEVICES

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]

# Top-level package -> its source tree (pyproject's [tool.setuptools.package-dir]).
SOURCE_TREES = {
    "edgesdk": "sdk/edgesdk",
    "edgesdk_plugins": "plugins",
    "edgesdk_device_profiles": "device_profiles",
    "edgesdk_templates": "templates",
}

# What never goes into a distribution: byte code and tool caches anywhere, and at the top of the
# tree the virtualenv, VCS data and build outputs.
SKIPPED_ANYWHERE = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIPPED_AT_ROOT = {".git", ".venv", "build", "dist"}

# Subprocess time limits, far above what they take (see the printed timings).
INSTALL_TIMEOUT = 900
COMMAND_TIMEOUT = 300


def _packages_on_disk(name: str, directory: Path) -> list[str]:
    """Importable packages under `directory`: a chain of directories that each have __init__.py.

    This is what Python (and setuptools' discovery) counts as a subpackage. A directory without
    __init__.py, or whose name is no identifier (a template's `{{ module }}`), is data, and so is
    everything below it.
    """
    if not (directory / "__init__.py").is_file():
        return []
    found = [name]
    for child in sorted(directory.iterdir()):
        if child.is_dir() and child.name.isidentifier() and child.name not in SKIPPED_ANYWHERE:
            found += _packages_on_disk(f"{name}.{child.name}", child)
    return found


def test_every_package_is_listed():
    assert SETUPTOOLS["package-dir"] == SOURCE_TREES, "the source trees moved: update SOURCE_TREES here"
    listed = set(SETUPTOOLS["packages"])
    on_disk = [package for name, tree in SOURCE_TREES.items() for package in _packages_on_disk(name, ROOT / tree)]
    assert {"edgesdk", "edgesdk.cli", "edgesdk_plugins", "edgesdk_device_profiles", "edgesdk_templates"} <= set(on_disk)
    missing = [package for package in on_disk if package not in listed]
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_exists():
    for package in SETUPTOOLS["packages"]:
        top, *rest = package.split(".")
        directory = ROOT / SOURCE_TREES[top] / Path(*rest)
        assert (directory / "__init__.py").is_file(), f"pyproject.toml lists {package}, but {directory} has no __init__.py"


# --- the slow part: build, install, run -------------------------------------------------------


def _skip(directory: str, names: list[str]) -> set[str]:
    skipped = {name for name in names if name in SKIPPED_ANYWHERE or name.endswith((".pyc", ".egg-info"))}
    if Path(directory) == ROOT:
        skipped |= SKIPPED_AT_ROOT & set(names)
    return skipped


def _tree_files(source: Path) -> dict[str, str]:
    """Every file the distributions must carry: wheel path -> path in the source tree."""
    files = {}
    for package, tree in SOURCE_TREES.items():
        for path in sorted((source / tree).rglob("*")):
            relative = path.relative_to(source / tree)
            if path.is_file() and not (set(relative.parts) & SKIPPED_ANYWHERE) and path.suffix != ".pyc":
                files[f"{package}/{relative.as_posix()}"] = path.relative_to(source).as_posix()
    return files


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that points Python at this checkout or its venv."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "EDGESDK_", "PYTEST_")) and key not in {"VIRTUAL_ENV", "CONDA_PREFIX", "PIP_USER"}
    }
    path = [entry for entry in env.get("PATH", os.defpath).split(os.pathsep) if entry and not Path(entry).resolve().is_relative_to(ROOT)]
    env["PATH"] = os.pathsep.join(path)
    env.update(extra)
    return env


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(arg) for arg in args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _build_isolation_flags() -> list[str]:
    """--no-isolation when this interpreter already has the exact build-system requirements."""
    for requirement in PYPROJECT["build-system"]["requires"]:
        name, _, version = requirement.partition("==")
        try:
            if not version or metadata.version(name.strip()) != version.strip():
                return []
        except metadata.PackageNotFoundError:
            return []
    return ["--no-isolation"]


@pytest.fixture(scope="module")
def distributions(tmp_path_factory) -> dict:
    """An sdist of a clean copy of the source tree, and the wheel `build` makes from that sdist."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    # A copy, so build outputs (build/lib keeps deleted modules) never reach the wheel, and the
    # checkout is left alone.
    shutil.copytree(ROOT, source, ignore=_skip, symlinks=True)
    expected = _tree_files(source)
    flags = _build_isolation_flags()
    started = time.perf_counter()
    done = _run([sys.executable, "-m", "build", *flags, "--outdir", base / "dist", source], cwd=base, env=_clean_env(), timeout=INSTALL_TIMEOUT)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, f"python -m build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    (wheel,) = (base / "dist").glob("*.whl")
    (sdist,) = (base / "dist").glob("*.tar.gz")
    return {"base": base, "wheel": wheel, "sdist": sdist, "expected": expected, "build_seconds": seconds, "isolation": not flags}


@pytest.fixture(scope="module")
def installed(distributions) -> dict:
    """A fresh venv with the wheel pip-installed (not editable): its dependencies resolved by pip."""
    base = distributions["base"]
    venv = base / "venv"
    started = time.perf_counter()
    done = _run([sys.executable, "-m", "venv", venv], cwd=base, env=_clean_env(), timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    # No extras: the runtime dependencies only. pip reuses what it has cached.
    done = _run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", distributions["wheel"]],
        cwd=base,
        env=_clean_env(),
        timeout=INSTALL_TIMEOUT,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 0, f"pip install failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    outside = base / "outside"  # the working directory: nowhere near the source tree
    outside.mkdir()
    env = _clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{_clean_env()['PATH']}", EDGESDK_CACHE_DIR=str(base / "edgesdk-cache"))
    return {"venv": venv, "python": python, "edgesdk": venv / "bin" / "edgesdk", "cwd": outside, "env": env, "install_seconds": seconds}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _edgesdk(installed: dict, *args: str) -> subprocess.CompletedProcess:
    return _run([installed["edgesdk"], *args], cwd=installed["cwd"], env=installed["env"], timeout=COMMAND_TIMEOUT)


# Run by the installed interpreter: where the packages come from, how edgesdk was installed, and
# every distribution in the venv.
PROBE = """
import importlib.metadata, json
import edgesdk, edgesdk_device_profiles, edgesdk_plugins, edgesdk_templates
print(json.dumps({
    "files": [module.__file__ for module in (edgesdk, edgesdk_plugins, edgesdk_device_profiles, edgesdk_templates)],
    "direct_url": importlib.metadata.distribution("edgesdk").read_text("direct_url.json"),
    "dists": sorted(dist.metadata["Name"] for dist in importlib.metadata.distributions()),
}))
"""


def _tiny_model(path: Path) -> Path:
    """Conv-ReLU-GlobalAveragePool-Flatten-MatMul on a [N, 3, 16, 16] input with a dynamic batch."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) / 5).astype(np.float32), "conv_w"),
        numpy_helper.from_array((0.1 * rng.standard_normal(8)).astype(np.float32), "conv_b"),
        numpy_helper.from_array((rng.standard_normal((8, 4)) / 3).astype(np.float32), "fc_w"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc_w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.mark.slow
def test_sdist_and_wheel_hold_every_file(distributions):
    expected = distributions["expected"]
    with zipfile.ZipFile(distributions["wheel"]) as wheel:
        names = set(wheel.namelist())
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points = wheel.read(entry_points).decode()
    missing = sorted(set(expected) - names)
    assert not missing, f"the wheel lacks {missing} (pyproject.toml: [tool.setuptools] packages / package-data)"
    for package in SETUPTOOLS["packages"]:
        assert f"{package.replace('.', '/')}/__init__.py" in names
    assert {f"edgesdk_device_profiles/{device}.yaml" for device in BUILTIN_DEVICES} <= names

    # Every entry point names a module the wheel ships.
    for line in entry_points.splitlines():
        if "=" in line:
            module = line.split("=", 1)[1].strip().split(":")[0].replace(".", "/")
            assert {f"{module}.py", f"{module}/__init__.py"} & names, f"entry point {line.strip()!r}: the wheel has no {module}.py"

    with tarfile.open(distributions["sdist"]) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    missing = sorted({"pyproject.toml", "README.md", *expected.values()} - members)
    assert not missing, f"the sdist lacks {missing}"


@pytest.mark.slow
def test_wheel_installs_and_deploys_on_its_own(distributions, installed, tmp_path):
    wheel_size = distributions["wheel"].stat().st_size
    env, cwd = installed["env"], installed["cwd"]

    # Installed for real: not editable, and the source tree is nowhere on the path.
    done = _run([installed["python"], "-c", PROBE], cwd=cwd, env=env, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    facts["dists"] = [_normalized(name) for name in facts["dists"]]
    site = installed["venv"] / "lib"
    for file in facts["files"]:
        assert Path(file).is_relative_to(site) and not Path(file).is_relative_to(ROOT), file
    assert facts["direct_url"] is None or '"editable": true' not in facts["direct_url"]
    # Runtime dependencies only: nothing of the test extra (torch above all) came along.
    # (setuptools comes with every venv python makes, whatever the test extra pins.)
    test_extra = {_normalized(requirement.split("==")[0]) for requirement in PYPROJECT["project"]["optional-dependencies"]["test"]} - {"setuptools"}
    assert not test_extra & set(facts["dists"]), f"the runtime install pulled in test-only packages: {sorted(test_extra & set(facts['dists']))}"
    assert "edgesdk" in facts["dists"]

    done = _edgesdk(installed, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"edgesdk {PYPROJECT['project']['version']} (apache-tvm "), done.stdout

    done = _edgesdk(installed, "devices", "--json")
    assert done.returncode == 0, done.stderr
    assert set(BUILTIN_DEVICES) <= {device["id"] for device in json.loads(done.stdout)}

    model = _tiny_model(tmp_path / "tiny.onnx")
    deploy_seconds = {}
    for device in ("pc", "mcu"):
        out = tmp_path / f"tiny-{device}"
        started = time.perf_counter()
        done = _edgesdk(installed, "deploy", str(model), "--device", device, "--input-shape", "x=1,3,16,16", "-o", str(out), "--json")
        deploy_seconds[device] = time.perf_counter() - started
        assert done.returncode == 0, f"deploy to {device}: {done.stderr}"
        manifest = json.loads(done.stdout)
        assert manifest == json.loads((out / "manifest.json").read_text())
        assert manifest["device"] == device and manifest["verification"]["passed"] is True, manifest["verification"]
        assert manifest["build"]["cached"] is False  # compiled by the installed wheel, not found in a cache
        for file in manifest["build"]["device_files"]:
            assert (out / file).is_file(), file

    summary = (
        f"wheel {distributions['wheel'].name}: {wheel_size / 1024:.0f} KiB; "
        f"build {distributions['build_seconds']:.1f} s ({'isolated' if distributions['isolation'] else '--no-isolation'}); "
        f"venv + pip install {installed['install_seconds']:.1f} s; "
        + "; ".join(f"deploy {device} {seconds:.1f} s" for device, seconds in deploy_seconds.items())
    )
    print(f"\npackaging: {summary}")

    # The installed wheel scaffolds a plugin from its packaged templates; named in EDGESDK_PLUGINS,
    # the new device is listed and a model deploys to it.
    done = _edgesdk(installed, "new", "plugin", "acme-npu", "-o", str(tmp_path / "acme-npu"))
    assert done.returncode == 0, done.stderr
    source = tmp_path / "acme-npu" / "src"
    assert (source / "edgesdk_acme_npu" / "acme-npu.yaml").is_file() and (tmp_path / "acme-npu" / "pyproject.toml").is_file()
    with_plugin = {**installed, "env": {**env, "PYTHONPATH": str(source), "EDGESDK_PLUGINS": "edgesdk_acme_npu"}}
    done = _edgesdk(with_plugin, "devices", "--json")
    assert done.returncode == 0, done.stderr
    assert "acme-npu" in {device["id"] for device in json.loads(done.stdout)}
    done = _edgesdk(with_plugin, "deploy", str(model), "--device", "acme-npu", "--input-shape", "x=1,3,16,16", "-o", str(tmp_path / "tiny-acme"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verification"]["passed"] is True


@pytest.mark.slow
def test_installed_wheel_loads_every_plugin(installed):
    """Every entry point of the `edgesdk` group imports with the runtime dependencies alone."""
    done = _edgesdk(installed, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    plugins = {plugin["name"]: plugin for plugin in json.loads(done.stdout)}
    assert set(BUILTIN_DEVICES) <= set(plugins)
    failed = {name: plugin["error"] for name, plugin in plugins.items() if plugin["error"]}
    assert not failed, f"plugins that fail to load from the installed wheel: {failed}"
