"""Loopback ports: is one answering, and which one is free.

Apart from the local stack because tests and benchmarks need a free port without starting
anything (``free_port``), and the stack needs both to pick and probe its own ports.
"""

from __future__ import annotations

import socket


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
