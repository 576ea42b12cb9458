"""The one Redis key layout every component uses, under the configured prefix.

Apart from the clients (``chorus/store/client.py``) so that modules that only name keys (the
response cache, the checkpoint saver) do not import a Redis client.
"""

from __future__ import annotations

from chorus.settings import Settings


class Keys:
    """Builds Redis keys under the configured prefix, so several deployments can share a server."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))


def keys_for(settings: Settings) -> Keys:
    return Keys(settings.redis.key_prefix)
