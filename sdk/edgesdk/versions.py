"""Versions of edgesdk and of the compiler stack it drives, without importing TVM (slow)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _installed(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def edgesdk_version() -> str:
    return _installed("edgesdk") or "0+unknown"


def tvm_version() -> str | None:
    return _installed("apache-tvm")
