"""QAT's parts: the ONNX graph run in torch, the quantizers' gradients, the export back into the model."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgesdk.errors import UserInputError
from edgesdk.frontend.reference import reference_outputs
from edgesdk.training.export import exported
from edgesdk.training.graph_module import GraphModule
from edgesdk.training.origin import TrainingOrigin, training_origin
from edgesdk.training.quantizers import Grid, LowRankWeightQuantizer, WeightQuantizer, fake_quantize, round_ste, scaled_gradient
from edgesdk.training.trainer import task_loss, train


def _initializer(name, rng, *shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def many_ops_model() -> onnx.ModelProto:
    """A float model touching the operators a CNN and a transformer export to."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 0, 1, 2], strides=[1, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], pads=[0, 0, 1, 1], strides=[2, 2]),
        helper.make_node("Shape", ["p1"], ["s1"]),
        helper.make_node("Gather", ["s1", "one"], ["channels"], axis=0),
        helper.make_node("Concat", ["one_one", "channels", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["p1", "target"], ["seq"]),  # (1, C, L)
        helper.make_node("Transpose", ["seq"], ["tokens"], perm=[0, 2, 1]),  # (1, L, C)
        helper.make_node("LayerNormalization", ["tokens", "gamma", "beta"], ["normed"], axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["normed", "wq"], ["q"]),
        helper.make_node("Split", ["q", "halves"], ["q1", "q2"], axis=2),
        helper.make_node("Transpose", ["q2"], ["q2_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q1", "q2_t"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["attention"], axis=-1),
        helper.make_node("MatMul", ["attention", "q1"], ["mixed"]),
        helper.make_node("Erf", ["mixed"], ["erf"]),
        helper.make_node("Slice", ["erf", "starts", "ends", "axes", "steps"], ["sliced"]),
        helper.make_node("ReduceMean", ["sliced"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("Gemm", ["pooled", "w2", "b2"], ["logits"], transB=1),
    ]
    initializers = [
        _initializer("w1", rng, 4, 2, 3, 3),
        _initializer("b1", rng, 4),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "one_one"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        _initializer("gamma", rng, 4),
        _initializer("beta", rng, 4),
        _initializer("wq", rng, 4, 6),
        numpy_helper.from_array(np.array([3, 3], np.int64), "halves"),
        numpy_helper.from_array(np.array([-1], np.int64), "starts"),
        numpy_helper.from_array(np.array([-1000], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array([-2], np.int64), "steps"),
        _initializer("w2", rng, 5, 3),
        _initializer("b2", rng, 5),
    ]
    graph = helper.make_graph(
        nodes,
        "many_ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 9, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_graph_runs_in_torch_as_onnxruntime_runs_it():
    proto = many_ops_model()
    onnx.checker.check_model(proto)
    module = GraphModule(proto)
    samples = np.random.default_rng(1).standard_normal((3, 1, 2, 9, 12)).astype(np.float32)
    with torch.no_grad():
        ours = module({"x": torch.from_numpy(samples)})[0].numpy()
    for sample, got in zip(samples, ours, strict=True):
        np.testing.assert_allclose(got, reference_outputs(proto.SerializeToString(), {"x": sample})["logits"], rtol=1e-4, atol=1e-5)


def test_an_operator_it_cannot_train_is_named():
    graph = helper.make_graph(
        [helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["picked"])],
        "g",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4, 4]), helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 4])],
        [helper.make_tensor_value_info("picked", TensorProto.INT64, [1, 3])],
    )
    with pytest.raises(UserInputError, match="qat: cannot train operator.*NonMaxSuppression"):
        GraphModule(helper.make_model(graph))


@pytest.mark.parametrize(
    ("shape", "scale_shape", "axis", "block"),
    [((6, 5), (), 1, 0), ((6, 5, 3, 3), (6,), 0, 0), ((4, 10), (4, 3), 1, 4), ((10, 4), (3, 4), 0, 4)],
)
def test_reduce_is_the_adjoint_of_expand(shape, scale_shape, axis, block):
    """sum(expand(s) * v) == sum(s * reduce(v)): the scale's gradient sums over its own weights
    (per tensor, per channel, and blocks whose last one is short)."""
    grid = Grid(shape, scale_shape, axis, block, -8, 7)
    rng = np.random.default_rng(0)
    scale, values = torch.tensor(rng.random(scale_shape)), torch.tensor(rng.standard_normal(shape))
    assert torch.allclose((grid.expand(scale) * values).sum(), (scale * grid.reduce(values)).sum())
    expanded = torch.broadcast_to(grid.expand(torch.arange(float(np.prod(scale_shape))).reshape(scale_shape)), shape)
    if block:  # weight i along the axis uses block i // block's scale
        index = [slice(None)] * len(shape)
        index[axis] = slice(block, 2 * block)
        assert torch.all(expanded[tuple(index)] == torch.arange(float(np.prod(scale_shape))).reshape(scale_shape).select(axis, 1).unsqueeze(axis))


def _lowrank_reference(frozen, a, b, scale, grid):
    """LR-QAT's weight written with autograd (the STE as a detached residual): what the hand-written backward must match."""
    integers = torch.clamp(round_ste(frozen.float() + (a @ b).reshape(grid.shape)), grid.low, grid.high)
    return integers * grid.expand(scale)


def test_the_low_rank_backward_matches_autograd_of_the_same_formula():
    grid = Grid((8, 12), (8, 3), 1, 4, -8, 7)
    generator = torch.Generator().manual_seed(0)
    frozen = torch.randint(-8, 8, (8, 12), generator=generator).to(torch.int8)
    quantizer = LowRankWeightQuantizer(frozen, torch.rand(8, 3, generator=generator) + 0.1, grid, False, 3, generator)
    with torch.no_grad():
        quantizer.b.copy_(torch.randn(3, 12, generator=generator) * 2)  # some weights leave the grid: clipped
    upstream = torch.randn(8, 12, generator=generator)
    (quantizer() * upstream).sum().backward()
    ours = [quantizer.a.grad.clone(), quantizer.b.grad.clone(), quantizer.log_scale.grad.clone()]
    quantizer.zero_grad()
    scale = torch.exp(quantizer.log_scale)
    reference = _lowrank_reference(quantizer.frozen, quantizer.a, quantizer.b, scaled_gradient(scale, quantizer.gradient_factor), grid)
    assert torch.equal(reference.detach(), quantizer().detach())
    (reference * upstream).sum().backward()
    for mine, theirs in zip(ours, [quantizer.a.grad, quantizer.b.grad, quantizer.log_scale.grad], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_quantizers_start_at_the_ptq_integers():
    grid = Grid((4, 6), (4,), 0, 0, -128, 127)
    integers = torch.randint(-127, 128, (4, 6), generator=torch.Generator().manual_seed(0)).float()
    scale = torch.tensor([0.01, 0.02, 0.5, 3.0])
    full = WeightQuantizer(integers * scale[:, None], scale, grid, False)
    low = LowRankWeightQuantizer(integers.to(torch.int8), scale, grid, False, 2, torch.Generator().manual_seed(0))
    assert torch.equal(full.integers(), integers) and torch.equal(low.integers(), integers)
    torch.testing.assert_close(full(), integers * scale[:, None])
    torch.testing.assert_close(low(), integers * scale[:, None])


def test_losses():
    logits = torch.tensor([[[2.0, 0.0, -1.0]], [[0.0, 3.0, 0.0]]])  # (N=2, 1, C=3)
    assert task_loss("ce", logits, torch.tensor([0, 1])) < 0.2
    assert task_loss("distill", logits, logits.clone()).abs() < 1e-6  # KL of a distribution with itself
    assert task_loss("mse", logits, logits + 1) == pytest.approx(1.0)
    with pytest.raises(UserInputError, match="--labels"):
        task_loss("ce", logits, torch.tensor([[0, 1], [1, 2]]))


def qdq_model(tmp_path) -> onnx.ModelProto:
    """many_ops_model's CNN half quantized by edgesdk (int8 QDQ)."""
    import edgesdk

    rng = np.random.default_rng(2)
    calibration = {"x": rng.standard_normal((32, 2, 9, 12)).astype(np.float32)}
    edgesdk.quantize(many_ops_model(), calibration, tmp_path / "q.onnx", scheme="int8")
    return onnx.load(tmp_path / "q.onnx")


def _origin() -> TrainingOrigin:
    return TrainingOrigin(
        method="qat", scheme="int8", loss="mse", epochs=1, best_epoch=1, learning_rate=1e-3, batch_size=4, seed=0, samples=8, validation_samples=2,
        trainable_parameters=1, loss_before=1.0, loss_after=0.5,
    )  # fmt: skip


@pytest.mark.parametrize("rank", [None, 2])
def test_an_untrained_export_computes_what_ptq_computes(tmp_path, rank):
    proto = qdq_model(tmp_path)
    written = exported(GraphModule(proto, rank=rank), _origin())
    before = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    after = {init.name: numpy_helper.to_array(init) for init in written.graph.initializer}
    assert before.keys() == after.keys() and [n.op_type for n in proto.graph.node] == [n.op_type for n in written.graph.node]
    for name, value in before.items():
        if value.dtype in (np.int8, np.uint8):  # weights' integers, zero points: unchanged
            assert np.array_equal(value, after[name]), name
        else:
            np.testing.assert_allclose(after[name], value, rtol=1e-5, err_msg=name)
    sample = {"x": np.random.default_rng(3).standard_normal((1, 2, 9, 12)).astype(np.float32)}
    np.testing.assert_allclose(
        reference_outputs(written.SerializeToString(), sample)["logits"], reference_outputs(proto.SerializeToString(), sample)["logits"], rtol=1e-4, atol=1e-5
    )
    assert training_origin(written) == _origin()


def test_training_lowers_the_loss_keeps_the_best_epoch_and_is_seeded(tmp_path):
    proto = qdq_model(tmp_path)
    rng = np.random.default_rng(4)
    inputs = {"x": rng.standard_normal((64, 1, 2, 9, 12)).astype(np.float32)}
    targets = rng.standard_normal((64, 1, 5)).astype(np.float32)
    runs = []
    for _ in range(2):
        module = GraphModule(proto, rank=2, seed=7)
        result = train(module, inputs, targets, (inputs, targets), loss="mse", epochs=3, lr=1e-2, batch_size=16, seed=7)
        runs.append((result, exported(module, _origin()).SerializeToString()))
    (result, first), (again, second) = runs
    assert result.losses[result.best_epoch] == min(result.losses) < result.losses[0]
    assert result.peak_memory_bytes > 0 and result.trainable_parameters < sum(p.numel() for p in GraphModule(proto).trainable())
    assert first == second and result.losses == again.losses  # the same seed, the same model


def test_a_damaged_training_record_is_ignored(caplog):
    proto = many_ops_model()
    proto.metadata_props.append(onnx.StringStringEntryProto(key="edgesdk.qat", value="{not json"))
    assert training_origin(proto) is None
    assert "not edgesdk's record" in caplog.text


def test_the_fused_activation_quantizer_has_the_gradients_of_its_formula():
    """Under vmap too, as the graph runs: x's gradient passes inside the range only, the scale's is LSQ's."""
    x = (torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3).requires_grad_()
    scale, zero = torch.tensor(0.05, requires_grad=True), torch.tensor(3.0)
    upstream = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    (torch.func.vmap(lambda row: fake_quantize(row, scale, zero, -128, 127))(x) * upstream).sum().backward()
    ours = x.grad.clone(), scale.grad.clone()
    x.grad, scale.grad = None, None
    reference = (torch.clamp(round_ste(x / scale) + zero, -128, 127) - zero) * scale
    assert torch.equal(reference.detach(), fake_quantize(x, scale, zero, -128, 127).detach())
    (reference * upstream).sum().backward()
    torch.testing.assert_close(ours[0], x.grad)
    torch.testing.assert_close(ours[1], scale.grad)
    assert 0 < int((ours[0] == 0).sum()) < x.numel()  # some values clipped
