"""The process helpers tests need, taken from the ops package in one place.

Tests ask for a free loopback port or a throwaway redis-server through this module, so a move of
the ops helpers touches one import here rather than every test that starts a server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ops import local_stack, ports


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    return ports.free_port()


@contextmanager
def throwaway_redis() -> Iterator[str]:
    """A loopback redis-server with nothing persisted, stopped on exit; yields its URL."""
    with local_stack.throwaway_redis() as url:
        yield url
