"""Quantizer simulation with learnable scales, as the quantized ONNX model computes.

- ``ActivationQuantizer``: a QuantizeLinear -> DequantizeLinear pair. ``s * (clamp(round(x / s) +
  z, lo, hi) - z)`` with the rounding's gradient passed straight through (STE) and the scale learned
  as LSQ learns it (Esser et al. 2020: the gradient of the clipped, rounded value with respect to
  ``s``). The zero point stays the one PTQ chose. Its autograd function saves only ``x`` and
  recomputes the rest: autograd of the formula kept several copies of ``x`` per quantizer, 4x the
  activation memory of the language model's training step (benchmarks/qat.py).
- ``WeightQuantizer`` (full QAT): a float latent weight, per-channel or per-group learnable
  scales, ``s * clamp(round(w / s), lo, hi)`` (symmetric, zero point 0).
- ``LowRankWeightQuantizer`` (LR-QAT, Bondarenko et al. 2024): the PTQ integers ``q0 = round(W0 /
  s0)`` frozen and stored as int8, rank-R adapters ``A (rows x R)``, ``B (R x cols)`` trained
  inside the grid: ``s * clamp(round(q0 + A B), lo, hi)``. Its autograd function saves only
  ``q0``, ``A``, ``B`` and ``s`` and recomputes the rest in the backward pass, so training holds
  no float copy of a weight: that is where its memory goes down.

Scales are learned as ``exp(log s)``: Adam's steps are then relative changes of a scale, of the
same size for every layer. Latent weights are kept in units of the PTQ grid (``w = v * s0``) for
the same reason: a step of the learning rate moves a weight the same share of its grid step in
every layer, as the adapters' steps do. Scales of blocked (group-wise) weights are rounded to
float16 on the way, as edgesdk stores them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

Tensor = torch.Tensor


def round_ste(x: Tensor) -> Tensor:
    """Round to nearest (ties to even, as QuantizeLinear), with the identity's gradient."""
    return x + (torch.round(x) - x).detach()


def half_ste(x: Tensor) -> Tensor:
    """Round to the nearest float16 value, with the identity's gradient."""
    return x + (x.to(torch.float16).to(x.dtype) - x).detach()


def scaled_gradient(x: Tensor, factor: float) -> Tensor:
    """``x`` in the forward pass, its gradient times ``factor`` (LSQ's gradient scale)."""
    return (x - x * factor).detach() + x * factor


class Grid:
    """Where each weight's scale lives: per tensor, per channel along ``axis``, or per block of
    ``block`` weights along ``axis`` (ONNX DequantizeLinear's three layouts)."""

    def __init__(self, shape: tuple[int, ...], scale_shape: tuple[int, ...], axis: int, block: int, low: int, high: int):
        self.shape, self.scale_shape, self.axis, self.block = shape, scale_shape, axis % len(shape), block
        self.low, self.high = low, high

    def expand(self, scale: Tensor) -> Tensor:
        """The scale of every weight, broadcastable to the weight."""
        if scale.dim() == 0 or scale.numel() == 1:
            return scale.reshape(())
        if self.block:
            return scale.repeat_interleave(self.block, dim=self.axis).narrow(self.axis, 0, self.shape[self.axis])
        view = [1] * len(self.shape)
        view[self.axis] = -1
        return scale.reshape(view)

    def reduce(self, values: Tensor) -> Tensor:
        """The sum of ``values`` (one per weight) over each scale's weights: ``expand``'s adjoint."""
        if math.prod(self.scale_shape) == 1:
            return values.sum().reshape(self.scale_shape)
        if self.block:
            size = self.shape[self.axis]
            padded = torch.nn.functional.pad(values.movedim(self.axis, -1), (0, -size % self.block))
            summed = padded.reshape(*padded.shape[:-1], -1, self.block).sum(-1)
            return summed.movedim(-1, self.axis).reshape(self.scale_shape)
        other = [d for d in range(len(self.shape)) if d != self.axis]
        return values.sum(dim=other).reshape(self.scale_shape)

    @property
    def matrix(self) -> tuple[int, int]:
        """The weight as a matrix for the adapters: its first axis x the rest."""
        return self.shape[0], math.prod(self.shape[1:])

    @property
    def levels(self) -> int:
        return self.high - self.low


class _FakeQuantize(torch.autograd.Function):
    """``s * (clamp(round(x / s) + z, lo, hi) - z)`` with the STE and LSQ's scale gradient, saving
    only ``x`` (which the layer before holds anyway): autograd of the formula saves several
    tensors of ``x``'s size per quantizer, the bulk of a transformer's training memory."""

    @staticmethod
    def forward(x: Tensor, scale: Tensor, zero: Tensor, low: int, high: int) -> Tensor:
        return (torch.clamp(torch.round(x / scale) + zero, low, high) - zero) * scale

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, scale, zero, low, high = inputs
        ctx.save_for_backward(x, scale, zero)
        ctx.low, ctx.high = low, high

    @staticmethod
    def backward(ctx, gradient: Tensor):
        x, scale, zero = ctx.saved_tensors
        ratio = x / scale
        shifted = torch.round(ratio) + zero
        inside = (shifted >= ctx.low) & (shifted <= ctx.high)
        # d/ds: round(x/s) - x/s inside the range (the rounding error), the clipped level outside.
        slope = torch.where(inside, torch.round(ratio) - ratio, shifted.clamp(ctx.low, ctx.high) - zero)
        return gradient * inside, (gradient * slope).sum().reshape(scale.shape), None, None, None

    @staticmethod
    def vmap(info, in_dims, x, scale, zero, low, high):
        # Elementwise with scalar scale and zero point: the batched tensor is just a bigger x.
        if in_dims[1] is not None or in_dims[2] is not None:
            raise NotImplementedError("a per-sample activation scale")
        return _FakeQuantize.apply(x, scale, zero, low, high), in_dims[0]


def fake_quantize(x: Tensor, scale: Tensor, zero: Tensor, low: int, high: int) -> Tensor:
    return _FakeQuantize.apply(x, scale, zero, low, high)


class ActivationQuantizer(nn.Module):
    """One learnable activation scale (QuantizeLinear's scale, shared by the pairs that name it);
    each pair brings its own zero point and integer range."""

    def __init__(self, scale: Tensor):
        super().__init__()
        self.log_scale = nn.Parameter(torch.log(scale.float().clamp_min(1e-12)))

    @property
    def scale(self) -> Tensor:
        return torch.exp(self.log_scale)

    def forward(self, x: Tensor, zero_point: Tensor, low: int, high: int) -> Tensor:
        scale = scaled_gradient(self.scale, 1.0 / math.sqrt(max(x.numel(), 1) * max(high, 1)))
        return fake_quantize(x, scale, zero_point.float(), low, high)


class _WeightScales(nn.Module):
    """A weight's learnable scales on its ``grid`` (float16-exact with ``half_scales``)."""

    def __init__(self, scale: Tensor, grid: Grid, half_scales: bool):
        super().__init__()
        self.grid, self.half_scales = grid, half_scales
        self.log_scale = nn.Parameter(torch.log(scale.float().clamp_min(1e-12)))
        self.gradient_factor = 1.0 / math.sqrt(math.prod(grid.shape) * max(grid.high, 1))

    def scale(self) -> Tensor:
        scale = torch.exp(self.log_scale)
        return half_ste(scale) if self.half_scales else scale


class WeightQuantizer(_WeightScales):
    """Full QAT (LSQ) of one constant weight."""

    initial_scale: Tensor

    def __init__(self, weight: Tensor, scale: Tensor, grid: Grid, half_scales: bool):
        super().__init__(scale, grid, half_scales)
        self.register_buffer("initial_scale", scale.float().clone())
        self.latent = nn.Parameter(weight.float() / grid.expand(self.initial_scale))

    def integers(self) -> Tensor:
        scale = self.grid.expand(self.scale())
        return torch.clamp(torch.round(self.weight() / scale), self.grid.low, self.grid.high)

    def weight(self) -> Tensor:
        """The float latent weight."""
        return self.latent * self.grid.expand(self.initial_scale)

    def forward(self) -> Tensor:
        scale = self.grid.expand(scaled_gradient(self.scale(), self.gradient_factor))
        return torch.clamp(round_ste(self.weight() / scale), self.grid.low, self.grid.high) * scale


class _LowRankWeight(torch.autograd.Function):
    """``s * clamp(round(q0 + A B))`` with the straight-through estimator; saves only its inputs."""

    @staticmethod
    def forward(ctx, frozen: Tensor, a: Tensor, b: Tensor, scale: Tensor, grid: Grid) -> Tensor:
        ctx.save_for_backward(frozen, a, b, scale)
        ctx.grid = grid
        return _LowRankWeight.integers(frozen, a, b, grid) * grid.expand(scale)

    @staticmethod
    def integers(frozen: Tensor, a: Tensor, b: Tensor, grid: Grid) -> Tensor:
        return torch.clamp(torch.round(frozen.float() + (a @ b).reshape(grid.shape)), grid.low, grid.high)

    @staticmethod
    def backward(ctx, gradient: Tensor):
        frozen, a, b, scale = ctx.saved_tensors
        grid: Grid = ctx.grid
        unclipped = torch.round(frozen.float() + (a @ b).reshape(grid.shape))
        inside = (unclipped >= grid.low) & (unclipped <= grid.high)
        integers = unclipped.clamp(grid.low, grid.high)
        scale_gradient = grid.reduce(gradient * integers)
        adapter_gradient = (gradient * grid.expand(scale) * inside).reshape(grid.matrix)
        return None, adapter_gradient @ b.T, a.T @ adapter_gradient, scale_gradient, None


class LowRankWeightQuantizer(_WeightScales):
    """LR-QAT of one constant weight: frozen int8 integers, trainable rank-R adapters and scales."""

    frozen: Tensor

    def __init__(self, integers: Tensor, scale: Tensor, grid: Grid, half_scales: bool, rank: int, generator: torch.Generator):
        super().__init__(scale, grid, half_scales)
        self.register_buffer("frozen", integers.to(torch.int8))
        rows, cols = grid.matrix
        rank = min(rank, rows, cols)
        # LoRA's start: B = 0 (the PTQ weights exactly), A random so that B's gradient is not zero.
        self.a = nn.Parameter(torch.randn(rows, rank, generator=generator) / math.sqrt(rank))
        self.b = nn.Parameter(torch.zeros(rank, cols))

    def integers(self) -> Tensor:
        return _LowRankWeight.integers(self.frozen, self.a, self.b, self.grid)

    def forward(self) -> Tensor:
        scale = scaled_gradient(self.scale(), self.gradient_factor)
        return _LowRankWeight.apply(self.frozen, self.a, self.b, scale, self.grid)
