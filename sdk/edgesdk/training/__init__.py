"""Quantization-aware training (`edgesdk qat`): a PTQ model trained in torch with its quantizers in
the loop (full QAT, LSQ) or through low-rank adapters inside the integer grid (LR-QAT), and written
back as the same quantized ONNX model. Needs torch (``edgesdk[train]``); only ``origin`` is
importable without it."""
