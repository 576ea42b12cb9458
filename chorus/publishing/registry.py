"""Which adapter publishes to which platform, the platforms' default servers, and what a handle
on each looks like."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from chorus.errors import InvalidAccount
from chorus.persona import Platform
from chorus.publishing.protocol import CredentialsChanged, PlatformAdapter, SessionStore

if TYPE_CHECKING:
    import httpx

# None: the platform has no one server, the account must say which (a Mastodon instance).
DEFAULT_SERVICE_URLS: dict[Platform, str | None] = {
    Platform.bluesky: "https://bsky.social",
    Platform.mastodon: None,
    Platform.x: "https://api.x.com",
}

_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HANDLES: dict[Platform, tuple[re.Pattern[str], str]] = {
    Platform.bluesky: (re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$"), "alice.bsky.social"),
    Platform.mastodon: (
        re.compile(rf"^@?[A-Za-z0-9_]{{1,30}}@{_LABEL}(?:\.{_LABEL})+$"),
        "alice@mastodon.social",
    ),
    Platform.x: (re.compile(r"^@?[A-Za-z0-9_]{1,15}$"), "alice_1"),
}


def check_handle(platform: Platform, handle: str) -> None:
    """InvalidAccount (field `handle`) unless `handle` is one the platform could have."""
    rule = _HANDLES.get(platform)
    if rule is None:
        return
    pattern, example = rule
    if pattern.fullmatch(handle.strip()) is None:
        raise InvalidAccount(
            f"{handle!r} is not a {platform.value} handle; it looks like {example!r}", field="handle"
        )


def adapter_for(
    platform: Platform,
    *,
    sessions: SessionStore,
    on_credentials_changed: CredentialsChanged | None = None,
    timeout_s: float = 15.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> PlatformAdapter:
    if platform == Platform.bluesky:
        from chorus.publishing.bluesky import BlueskyAdapter

        return BlueskyAdapter(sessions, timeout_s=timeout_s, transport=transport)
    if platform == Platform.mastodon:
        from chorus.publishing.mastodon import MastodonAdapter

        return MastodonAdapter(timeout_s=timeout_s, transport=transport)
    if platform == Platform.x:
        from chorus.publishing.x import XAdapter

        return XAdapter(
            on_credentials_changed=on_credentials_changed, timeout_s=timeout_s, transport=transport
        )
    raise InvalidAccount(
        f"Chorus cannot publish to {platform.value}; it publishes to bluesky, mastodon and x",
        field="platform",
    )
