"""Addresses the user gives (``HOST:PORT``): parsed, and checked to answer before a client that
would retry for minutes (Ray's, TVM RPC's) is pointed at them."""

from __future__ import annotations

import socket

from edgesdk.errors import UserInputError

PROBE_TIMEOUT_S = 5.0


def parse_address(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as (host, port), or one clear error naming ``option``."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserInputError(f"{option} {text}: not HOST:PORT", hint=f"e.g. {option} 127.0.0.1:9090")
    return host, int(port)


def check_reachable(host: str, port: int, what: str, hint: str) -> None:
    """Raise one clear error when nothing accepts a TCP connection at ``host:port`` within a few seconds."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc)).lower()
        raise UserInputError(f"{what} {host}:{port}: cannot connect ({reason})", hint=hint) from None
