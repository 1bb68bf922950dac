"""Quantization: the recipe a deploy asks for (``recipe``) and every scheme as a rewrite of the ONNX
model (int8 QDQ, blocked int4/int8 weights, codebooks, float16), with the tools that improve them
(equalization, bias correction, AdaRound). Needs no TVM."""
