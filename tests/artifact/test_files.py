import json

import pytest

from edgesdk.artifact.files import check_destination, hash_tree, place, read_manifest, staging_dir
from edgesdk.compile.build_cache import BuildCache, cache_key
from edgesdk.errors import UserInputError


def test_refuses_a_directory_that_is_not_an_artifact(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserInputError, match="is not an edgesdk artifact; refusing"):
        check_destination(tmp_path / "mine")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="is not a directory"):
        check_destination(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty")
    check_destination(tmp_path / "new")


def test_an_invalid_manifest_is_reported(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(UserInputError, match="not a valid edgesdk manifest"):
        read_manifest(tmp_path)


def test_place_renames_a_staged_directory_into_place(tmp_path):
    out = tmp_path / "out"
    staged = staging_dir(out)
    assert staged.parent == tmp_path and staged.name.startswith(".out.partial-")
    (staged / "a.txt").write_text("new")
    place(staged, out)
    assert (out / "a.txt").read_text() == "new" and not staged.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_hash_tree_skips_the_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_bytes(b"abc")
    assert hash_tree(tmp_path) == {"sub/f": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}


def test_build_cache_entries_are_renamed_into_place(tmp_path):
    cache = BuildCache(tmp_path)
    key = cache_key({"model": "abc", "target": {"kind": "llvm"}})
    assert key == cache_key({"target": {"kind": "llvm"}, "model": "abc"})  # canonical JSON
    assert cache.get("builds", key) is None
    staged = cache.staging()
    (staged / "lib.so").write_bytes(b"x")
    entry = cache.put("builds", key, staged)
    assert cache.get("builds", key) == entry and (entry / "lib.so").read_bytes() == b"x"
    second = cache.staging()
    assert cache.put("builds", key, second) == entry and not second.exists()  # a racing writer loses quietly
    assert BuildCache(tmp_path, enabled=False).get("builds", key) is None


def test_a_target_runs_here_only_with_this_cpus_isa_and_features():
    from edgesdk import get_device
    from edgesdk.compile.targets import host_target, runs_here
    from edgesdk.frontend.model import load_model
    from edgesdk.quantization.half import to_float16
    from edgesdk.testing.models import mlp

    model = load_model(mlp(), {"features": [1, 64]})
    host = host_target(model)
    assert runs_here(host) and runs_here(host_target(to_float16(model)))  # F16C only where this CPU has it
    if all(runs_here({**host, "mattr": [feature]}) for feature in ("+avx2", "+fma", "+f16c")):
        assert host == get_device("pc").target  # spelled like the pc target: one cache entry for both
    assert not runs_here({**host, "mattr": [*host.get("mattr", []), "+a-feature-no-cpu-has"]})
    assert not runs_here({"kind": "llvm", "mtriple": "riscv64-linux-gnu"}) and not runs_here({"kind": "c"})
