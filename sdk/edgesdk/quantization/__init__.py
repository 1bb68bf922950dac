"""Quantization: the precision a model is compiled at, and the integer kernels that run it."""
