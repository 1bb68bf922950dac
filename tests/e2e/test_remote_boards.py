"""A pc artifact run, timed and calibrated on a board over TVM RPC: a real RPC server (and a tracker)
started on 127.0.0.1 by the test, as on a board on the desk."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tvm import rpc

import edgesdk
from edgesdk.simulate.fit import fit_file
from edgesdk.testing.models import mlp
from tests.e2e.conftest import free_port, save

pytestmark = pytest.mark.slow


def started(arguments: list[str], port: int, log: Path) -> subprocess.Popen:
    """``python -m tvm.exec.<arguments>``, once it listens on ``port``."""
    # Its own process group: a server forks a process per session, and stopping it must stop those.
    process = subprocess.Popen([sys.executable, "-m", *arguments], stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"{arguments[0]} exited: {log.read_text()}")
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"{arguments[0]} did not listen on {port}")


def server(port: int, log: Path, *extra: str) -> subprocess.Popen:
    return started(["tvm.exec.rpc_server", "--host", "127.0.0.1", f"--port={port}", f"--port-end={port + 1}", *extra], port, log)


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """An RPC server on 127.0.0.1, and a tracker with a second server registered under the key pc."""
    logs = tmp_path_factory.mktemp("rpc")
    direct, tracker_port, tracked = free_port(), free_port(), free_port()
    processes = [server(direct, logs / "server.log")]
    tracker = ["tvm.exec.rpc_tracker", "--host", "127.0.0.1", f"--port={tracker_port}", f"--port-end={tracker_port + 1}"]
    processes.append(started(tracker, tracker_port, logs / "tracker.log"))
    processes.append(server(tracked, logs / "tracked.log", f"--tracker=127.0.0.1:{tracker_port}", "--key=pc"))
    for _ in range(100):  # registered once the tracker lists the key
        if "pc" in rpc.connect_tracker("127.0.0.1", tracker_port).summary().get("queue_info", {}):
            break
        time.sleep(0.2)
    yield {"remote": f"127.0.0.1:{direct}", "tracker": f"127.0.0.1:{tracker_port}"}
    for process in processes:
        stop(process)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pc")
    return edgesdk.deploy(save(mlp(), directory / "mlp.onnx"), "pc", directory / "mlp-pc", input_shapes={"features": [4, 64]})


@pytest.fixture
def inputs(tmp_path) -> Path:
    path = tmp_path / "in.npz"
    np.savez(path, features=np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32))
    return path


@pytest.mark.parametrize("how", ["remote", "tracker"])
def test_a_remote_run_gives_the_local_outputs(board, artifact, inputs, run_cli, tmp_path, how):
    where = ["--remote", board["remote"]] if how == "remote" else ["--tracker", board["tracker"], "--key", "pc"]
    code, _, err = run_cli("run", str(artifact.path), "--inputs", str(inputs), "-o", str(tmp_path / "board.npz"), *where)
    assert code == 0, err
    code, _, err = run_cli("run", str(artifact.path), "--inputs", str(inputs), "-o", str(tmp_path / "here.npz"))
    assert code == 0, err
    remote, local = np.load(tmp_path / "board.npz"), np.load(tmp_path / "here.npz")
    assert set(remote.files) == set(local.files) == {"logits"}
    assert np.array_equal(remote["logits"], local["logits"])  # the same library on the same ISA


def test_profile_on_a_board_measures_and_keeps_the_times_in_the_manifest(board, artifact, run_cli):
    before = len(edgesdk.load_artifact(artifact.path).manifest.measured)
    code, out, err = run_cli("profile", str(artifact.path), "--remote", board["remote"], "--json")
    assert code == 0, err
    measured = json.loads(out)["measured"]
    assert measured["on"] == f"RPC server {board['remote']}" and measured["latency_ms"] > 0
    kernels = artifact.analysis.kernels
    assert [kernel["name"] for kernel in measured["per_kernel"]] == [kernel.name for kernel in kernels]
    # Each kernel alone, plus its share of the VM's dispatch: together they are the whole run.
    assert sum(kernel["measured_ms"] for kernel in measured["per_kernel"]) >= 0.99 * measured["latency_ms"]
    kept = edgesdk.load_artifact(artifact.path)
    assert len(kept.manifest.measured) == before + 1 and kept.manifest.measured[-1].latency_ms == measured["latency_ms"]
    assert kept.verify().passed  # the files are untouched: only the manifest's measurements grew


def test_calibrate_on_a_board_fits_the_device(board, monkeypatch, tmp_path, run_cli):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))  # the session's pc fit stays as it is
    code, out, err = run_cli("calibrate", "--device", "pc", "--remote", board["remote"], "--repeat", "3", "--json")
    assert code == 0, err
    fit = json.loads(out)
    assert fit["host"] == f"RPC server {board['remote']}" and fit["device"] == "pc"
    assert len(fit["samples"]) > 100 and all(sample["measured_ms"] > 0 for sample in fit["samples"])
    assert 0 < fit["launch_overhead_s"] < 1e-3 and set(fit["efficiency"]) >= {"conv", "matmul"}
    assert json.loads(fit_file("pc").read_text())["host"] == fit["host"]


def test_bad_addresses_and_keys_are_one_line(board, artifact, inputs, run_cli):
    for arguments, expected in [
        (["--remote", f"127.0.0.1:{free_port()}"], "cannot connect (connection refused)"),
        (["--remote", "nohost"], "--remote nohost: not HOST:PORT"),
        (["--tracker", board["tracker"], "--key", "phone"], "--key phone: no board registered under it"),
        (["--tracker", board["tracker"]], "--tracker needs --key"),
    ]:
        code, out, err = run_cli("run", str(artifact.path), "--inputs", str(inputs), *arguments)
        assert code == 2 and out == "" and expected in err.splitlines()[0] and "Traceback" not in err, err


def test_a_server_that_dies_mid_run_is_one_line_and_the_artifact_is_kept(artifact, tmp_path):
    port = free_port()
    process = server(port, tmp_path / "server.log")
    manifest = (artifact.path / "manifest.json").read_bytes()
    command = [sys.executable, "-m", "edgesdk", "profile", str(artifact.path), "--remote", f"127.0.0.1:{port}"]
    profiling = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while "connected from" not in (tmp_path / "server.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # uploading, then timing
    stop(process)
    out, err = profiling.communicate(timeout=120)
    assert profiling.returncode == 1, err
    (line, hint) = err.strip().splitlines()
    assert line.startswith(f"error: RPC server 127.0.0.1:{port}: ") and "the board stopped answering" in line
    assert hint.startswith("hint: ") and "Traceback" not in err and out == ""
    assert (artifact.path / "manifest.json").read_bytes() == manifest
