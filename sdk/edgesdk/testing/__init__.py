"""Helpers for testing edgesdk and its plugins: small, deterministic ONNX models."""

from edgesdk.testing.models import mlp, tiny_cnn, transformer_block

__all__ = ["mlp", "tiny_cnn", "transformer_block"]
