"""A short run of every fuzz target (benchmarks/fuzz.py runs thousands): no input may raise
anything but a clean edgesdk error."""

import pytest

from edgesdk.testing import fuzzing


def test_mutations_edit_where_they_say():
    assert fuzzing.mutate(b"abcdef", [("truncate", 0.5, b"x")]) == b"abc"
    assert fuzzing.mutate(b"abcdef", [("insert", 0.0, b"XY")]) == b"XYabcdef"
    assert fuzzing.mutate(b"abcdef", [("delete", 0.5, b"..")]) == b"abcf"
    assert fuzzing.mutate(b"ab", [("flip", 0.0, b"\x01")]) == b"`b"
    assert fuzzing.outcome(lambda: 1) == "accepted" and fuzzing.outcome(lambda: [][1]).startswith("uncaught: IndexError")


@pytest.mark.parametrize("name", ["onnx_bytes", "onnx_fields", "profile_yaml", "npz_bytes"])
def test_a_short_fuzz_run_raises_nothing_uncaught(name):
    result = fuzzing.run_target(40, fuzzing.targets()[name])
    assert result["cases"] == 40 and result["uncaught"] == 0, result["uncaught_examples"]
    assert result["rejected"] > 0  # the mutations do reach the checks
