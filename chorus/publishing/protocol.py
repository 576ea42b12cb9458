"""What every platform adapter is: the requests it takes, the answers it gives, and the errors
that tell the publisher what to do next.

The publisher never reads a platform's status codes: each adapter maps its platform's answers to
one of these errors, so rate limits, transient faults, permanent refusals and lost credentials
are handled the same way for every platform.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from pydantic import BaseModel, Field, SecretStr

from chorus.persona import Platform


class Credentials(BaseModel):
    """What logs an account in. Held encrypted at rest; never returned by the API or logged.

    Bluesky: `secret` is an app password. Mastodon: `secret` is an access token. X: `secret` is
    the OAuth 2 user access token, with `refresh_token` and `client_id` to renew it.
    """

    secret: SecretStr
    refresh_token: SecretStr | None = None
    client_id: str | None = None
    expires_at: float | None = Field(None, description="when `secret` expires (X access tokens)")


class AccountRef(BaseModel):
    """The account a post goes out on, as an adapter needs it (credentials included)."""

    id: str
    persona_id: str
    platform: Platform
    handle: str
    service_url: str
    credentials: Credentials


class PublishRequest(BaseModel):
    """One post to publish, with everything a retry needs to make the same request again."""

    post_id: str
    text: str
    created_at: float = Field(description="fixed when the post entered the outbox; part of the record")
    rkey: str | None = Field(None, description="Bluesky: the record key (a TID) derived from post_id")
    source_url: str | None = Field(None, description="a link card points here (Bluesky)")
    source_title: str | None = None
    langs: list[str] = Field(default_factory=list)


class Published(BaseModel):
    """Where a post now lives on its platform."""

    platform: Platform
    platform_id: str = Field(description="the platform's id: an at:// URI, a status id, a tweet id")
    url: str | None = Field(None, description="a link people can open, when the platform has one")
    cid: str | None = Field(None, description="Bluesky: the record's content id")
    already_there: bool = Field(False, description="a retry found the post published before")


class ReadBack(BaseModel):
    """A published post as the platform shows it now."""

    platform_id: str
    text: str
    likes: int = 0
    reposts: int = 0
    replies: int = 0
    quotes: int = 0
    raw: dict[str, object] = Field(default_factory=dict)


class PublishError(Exception):
    """Base of what an adapter raises; `message` is the platform's own words, for people."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RateLimited(PublishError):
    """The platform said not now: try again at `retry_at` (Unix time), read from its headers."""

    def __init__(self, message: str, retry_at: float) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class TransientError(PublishError):
    """A fault worth retrying with backoff: 5xx, a timeout, a connection refused."""


class AmbiguousSend(TransientError):
    """The request went out and no answer came back: it may have been published. Adapters whose
    platform has no idempotent write (X) look for the post before sending again."""


class PermanentError(PublishError):
    """The platform refused the post for good (400, 403, 422): fail it at once with this message."""


class NeedsReauth(PublishError):
    """The account's credentials no longer work: the account is marked and its posts wait."""


class SessionStore(Protocol):
    """Where an adapter keeps a login session between calls (Redis, encrypted), so a platform
    that limits logins (Bluesky) sees one per account, not one per post."""

    async def load(self, account_id: str) -> dict[str, str] | None: ...

    async def save(self, account_id: str, session: dict[str, str]) -> None: ...

    async def clear(self, account_id: str) -> None: ...


# Called by an adapter that renewed credentials (X's refreshed OAuth tokens) so they are stored.
CredentialsChanged = Callable[[str, Credentials], Awaitable[None]]


class PlatformAdapter(Protocol):
    platform: Platform

    def render(self, text: str, limit: int | None = None) -> str:
        """The text as it will go out; raises PermanentError naming the length in the platform's
        own unit when it does not fit."""
        ...

    def length(self, text: str) -> int:
        """The text's length in the platform's unit (graphemes, weighted characters, characters)."""
        ...

    async def verify(self, account: AccountRef) -> str:
        """Log in for real and return the account's platform identity (a DID, an account id);
        raises NeedsReauth or InvalidAccount."""
        ...

    async def publish(
        self, account: AccountRef, request: PublishRequest, *, after_ambiguous: bool = False
    ) -> Published:
        """Publish once. `after_ambiguous`: an earlier attempt of this request was sent and its
        answer lost (a crash, a timeout); an adapter without idempotent writes (X) looks for the
        post on the platform first and answers `already_there` when it finds it."""
        ...

    async def delete(self, account: AccountRef, published: Published) -> None: ...

    async def read_back(self, account: AccountRef, published: Published) -> ReadBack | None:
        """The post as the platform serves it; None when it is not (or no longer) there."""
        ...

    async def aclose(self) -> None: ...
