"""The plugin's own test: edgesdk finds the device and the overrides take effect."""

import edgesdk


def test_example_board_is_a_device():
    board = edgesdk.get_device("example-board")
    assert board.compute_units["npu"].on_chip_memory_bytes == 1_048_576
    assert board.compute_units["cpu"] == edgesdk.get_device("iot").compute_units["cpu"]
    assert board.source.path.name == "example-board.yaml"
