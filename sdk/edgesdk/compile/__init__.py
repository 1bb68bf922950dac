"""Compilation through TVM: the Relax import and its edgesdk passes (integer and packed-weight
kernels, float16 accumulation), the lowering routine every backend shares, the worker process it
runs in, the build cache, kernel analysis, and the runner of a built library on this host."""
