"""Faults while deploying: a kill at any moment, two deploys to one place, a damaged cache entry,
a full disk. Whatever happens, the destination holds a complete artifact or nothing, and the
error is one line. (A segfault or a hang in TVM: tests/e2e/test_artifact_cli.py.)"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

import edgesdk
from edgesdk.artifact.files import destination_lock
from edgesdk.compile.build_cache import DIGEST_FILE, cache_root
from edgesdk.testing.models import tiny_cnn

pytestmark = pytest.mark.slow
SHAPE = ["--input-shape", "image=1,3,32,32"]


@pytest.fixture
def cnn_file(tmp_path) -> Path:
    path = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(), path)
    return path


def _complete_or_absent(destination: Path) -> str:
    if not destination.exists():
        return "absent"
    artifact = edgesdk.load_artifact(destination)
    artifact.check_files()  # every file the manifest names, with its hash, and no other
    return "complete"


def _leftovers(parent: Path) -> list[str]:
    return sorted(path.name for path in parent.iterdir() if path.name.startswith("."))


def test_kill_9_at_any_moment_leaves_a_complete_artifact_or_nothing(cnn_file, tmp_path):
    command = [sys.executable, "-m", "edgesdk", "deploy", str(cnn_file), "-d", "pc", *SHAPE]
    # The first deploy fills the compile cache; the second is timed, and the kills are spread
    # evenly over that time (in a seeded order): loading, verifying, writing, renaming.
    subprocess.run([*command, "-o", str(tmp_path / "cold")], check=True, capture_output=True)
    started = time.monotonic()
    subprocess.run([*command, "-o", str(tmp_path / "warm")], check=True, capture_output=True)
    duration = time.monotonic() - started
    moments = [duration * (index + 0.5) / 20 for index in range(20)]
    random.Random(19).shuffle(moments)
    outcomes = []
    for attempt, moment in enumerate(moments):
        # Even attempts write a new destination, odd ones replace the artifact the one before made.
        destination = tmp_path / f"out{attempt // 2}"
        child = subprocess.Popen([*command, "-o", str(destination)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(moment)
        os.killpg(child.pid, signal.SIGKILL)  # the deploy and any TVM worker of it
        child.wait()
        outcomes.append(_complete_or_absent(destination))
    assert set(outcomes) == {"absent", "complete"}  # kills before and after the rename, nothing between
    # A deploy that finishes cleans up what the killed ones left beside its destination.
    for number in range(10):
        assert subprocess.run([*command, "-o", str(tmp_path / f"out{number}")], capture_output=True).returncode == 0
    assert _leftovers(tmp_path) == []


def test_a_second_deploy_to_the_same_place_fails_while_the_first_writes(run_cli, cnn_file, tmp_path):
    destination = tmp_path / "a"
    with destination_lock(destination):  # as a deploy in another process holds it
        code, out, err = run_cli("deploy", str(cnn_file), "-d", "pc", *SHAPE, "-o", str(destination))
        assert (code, out) == (2, "")
        assert err.splitlines()[0] == f"error: {destination}: another deploy is writing it now"
        assert not destination.exists()
    code, _, err = run_cli("deploy", str(cnn_file), "-d", "pc", *SHAPE, "-o", str(destination))
    assert code == 0, err
    assert not list((cache_root() / "locks").glob("*.lock"))  # released and removed


def test_two_deploys_at_once_one_writes_the_other_waits_for_nothing(cnn_file, tmp_path):
    """Real processes racing for one destination: never two artifacts mixed, never a traceback."""
    command = [sys.executable, "-m", "edgesdk", "deploy", str(cnn_file), "-d", "pc", *SHAPE, "-o", str(tmp_path / "a")]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(child.wait(), child.stderr.read()) for child in children]
    assert all(code in (0, 2) for code, _ in results) and any(code == 0 for code, _ in results)
    for code, err in results:
        assert "Traceback" not in err
        if code == 2:
            assert "another deploy is writing it now" in err
    assert _complete_or_absent(tmp_path / "a") == "complete"


def test_a_damaged_cache_entry_is_detected_and_built_again(run_cli, cnn_file, tmp_path):
    code, out, _ = run_cli("deploy", str(cnn_file), "-d", "pc", *SHAPE, "-o", str(tmp_path / "a"), "--json")
    assert code == 0
    key = json.loads(out)["build"]["cache_key"]
    entry = next(cache_root().glob(f"*/{key[:2]}/{key}"))
    library = next(path for path in entry.rglob("*.so"))
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: a disk error
    library.write_bytes(bytes(data))
    code, out, err = run_cli("deploy", str(cnn_file), "-d", "pc", *SHAPE, "-o", str(tmp_path / "b"), "--json")
    assert code == 0, err
    assert json.loads(out)["build"]["cached"] is False and "was damaged" in err
    assert json.loads(out)["verification"]["passed"] is True
    assert (entry / DIGEST_FILE).is_file()  # built again, and recorded again


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only): too small for an artifact."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("mounting a tmpfs failed; CI runs as root")
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_error_line_and_leaves_nothing(run_cli, cnn_file, small_disk):
    code, out, err = run_cli("deploy", str(cnn_file), "-d", "pc", *SHAPE, "-o", str(small_disk / "out"))
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert lines[0] == f"error: {small_disk / 'out'}: cannot write the artifact: No space left on device" and len(lines) == 2
    assert list(small_disk.iterdir()) == []
