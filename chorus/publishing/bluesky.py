"""Bluesky over plain XRPC (httpx): sessions made once and refreshed, posts written so that a
retry can never post twice, facets on UTF-8 byte offsets, link cards, read-back and delete.

Idempotency: every post is written with `com.atproto.repo.putRecord` under a record key derived
from the post (chorus/publishing/tid.py) with `"swapRecord": null`, "create only if absent". The
record is built deterministically (its `createdAt` is fixed when the post is first scheduled), so
a retry of a send that went through is a no-op 200 (same cid, no commit); a record of other
content at that key is `InvalidSwap`, compared with what was meant. `createRecord` is never used:
on an existing key it answers an opaque 500 that looks like any server fault.

Sessions: `createSession` is rate-limited per account (30 per 5 minutes), so the session (access
and refresh JWTs) is kept in the SessionStore (Redis, encrypted) and renewed with
`refreshSession`; a new login happens only when the refresh token no longer works.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from chorus.errors import InvalidAccount
from chorus.persona import Platform
from chorus.publishing.protocol import (
    AccountRef,
    AmbiguousSend,
    NeedsReauth,
    PermanentError,
    Published,
    PublishError,
    PublishRequest,
    RateLimited,
    ReadBack,
    SessionStore,
    TransientError,
)
from chorus.publishing.text import bluesky_facets_resolved, check_fits, grapheme_length
from chorus.publishing.tid import tid_for_post

POST_COLLECTION = "app.bsky.feed.post"
DEFAULT_RETRY_S = 60.0


def record_time(created_at: float) -> str:
    """The record's createdAt: ISO 8601 UTC with milliseconds, the same for every retry."""
    return datetime.fromtimestamp(created_at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _message(response: httpx.Response) -> str:
    data = _body(response)
    error, message = data.get("error"), data.get("message")
    if error or message:
        return f"{error or response.status_code}: {message or ''}".strip().rstrip(":")
    return f"HTTP {response.status_code}"


def retry_at(response: httpx.Response, now: float | None = None) -> float:
    """When the platform says to come back: `ratelimit-reset` (Unix seconds), else
    `Retry-After` (seconds), else a minute."""
    now = time.time() if now is None else now
    reset = response.headers.get("ratelimit-reset")
    if reset:
        try:
            return float(reset)
        except ValueError:
            pass
    after = response.headers.get("retry-after")
    if after:
        try:
            return now + float(after)
        except ValueError:
            pass
    return now + DEFAULT_RETRY_S


def error_for(response: httpx.Response) -> PublishError:
    """What an XRPC failure means to the publisher."""
    status = response.status_code
    if status == 429:
        return RateLimited(_message(response), retry_at(response))
    if status >= 500:
        return TransientError(_message(response))
    if status == 401 or _body(response).get("error") in ("AuthenticationRequired", "AccountTakedown"):
        return NeedsReauth(_message(response))
    return PermanentError(_message(response))


def _expired(response: httpx.Response) -> bool:
    return response.status_code == 401 or (
        response.status_code == 400 and _body(response).get("error") in ("ExpiredToken", "InvalidToken")
    )


_SESSION_FIELDS: tuple[str, ...] = ("accessJwt", "refreshJwt", "did", "handle")


def _session_of(data: dict[str, Any]) -> dict[str, str]:
    return {k: str(data[k]) for k in _SESSION_FIELDS if k in data}


def _unreachable(account: AccountRef, reason: str) -> InvalidAccount:
    return InvalidAccount(
        f"could not reach a Bluesky PDS at {account.service_url}: {reason}; check service_url",
        field="service_url",
    )


def _rkey(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


class BlueskyAdapter:
    platform = Platform.bluesky

    def __init__(
        self,
        sessions: SessionStore,
        *,
        timeout_s: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._sessions = sessions
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._logins: dict[str, asyncio.Lock] = {}
        self.logins = 0  # createSession calls made (each one counts against the platform's limit)

    # --- the wire --------------------------------------------------------------------------

    async def _xrpc(
        self,
        base: str,
        method: str,
        nsid: str,
        *,
        token: str | None = None,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        try:
            return await self._http.request(
                method, f"{base.rstrip('/')}/xrpc/{nsid}", params=params, json=body, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise TransientError(f"could not connect to {base}: {type(exc).__name__}") from None
        except httpx.TimeoutException as exc:
            # Sent, no answer: it may have been written. putRecord makes the retry safe.
            raise AmbiguousSend(f"no answer from {base} ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise AmbiguousSend(f"the connection to {base} failed: {type(exc).__name__}") from None

    def _lock(self, account_id: str) -> asyncio.Lock:
        return self._logins.setdefault(account_id, asyncio.Lock())

    async def _login(self, account: AccountRef) -> dict[str, str]:
        self.logins += 1
        response = await self._xrpc(
            account.service_url,
            "POST",
            "com.atproto.server.createSession",
            body={"identifier": account.handle, "password": account.credentials.secret.get_secret_value()},
        )
        if response.status_code != 200:
            if response.status_code == 429 or response.status_code >= 500:
                raise error_for(response)
            if response.status_code in (400, 401) and _body(response).get("error") in (
                "AuthenticationRequired",
                "AccountTakedown",
                "AuthFactorTokenRequired",
            ):
                await self._sessions.clear(account.id)
                raise NeedsReauth(_message(response))
            if response.status_code == 404 or not _body(response):
                raise _unreachable(account, f"it answered HTTP {response.status_code} to createSession")
            raise error_for(response)
        if "accessJwt" not in _body(response):
            raise _unreachable(account, "its createSession answer has no session")
        data = _body(response)
        session = _session_of(data)
        await self._sessions.save(account.id, session)
        return session

    async def _session(self, account: AccountRef) -> dict[str, str]:
        session = await self._sessions.load(account.id)
        if session is not None:
            return session
        async with self._lock(account.id):
            # Another call may have logged in while this one waited.
            return await self._sessions.load(account.id) or await self._login(account)

    async def _renew(self, account: AccountRef, stale: dict[str, str]) -> dict[str, str]:
        async with self._lock(account.id):
            current = await self._sessions.load(account.id)
            if current is not None and current.get("accessJwt") != stale.get("accessJwt"):
                return current  # renewed by a concurrent call
            response = await self._xrpc(
                account.service_url,
                "POST",
                "com.atproto.server.refreshSession",
                token=stale.get("refreshJwt"),
            )
            if response.status_code == 200:
                data = _body(response)
                session = _session_of(data)
                await self._sessions.save(account.id, session)
                return session
            if response.status_code == 429 or response.status_code >= 500:
                raise error_for(response)
            await self._sessions.clear(account.id)
            return await self._login(account)

    async def _call(
        self,
        account: AccountRef,
        method: str,
        nsid: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[httpx.Response, dict[str, str]]:
        """An authenticated call, renewing the session once when the platform says it expired."""
        session = await self._session(account)
        response = await self._xrpc(
            account.service_url, method, nsid, token=session["accessJwt"], params=params, body=body
        )
        if _expired(response):
            session = await self._renew(account, session)
            response = await self._xrpc(
                account.service_url, method, nsid, token=session["accessJwt"], params=params, body=body
            )
            if _expired(response):
                await self._sessions.clear(account.id)
                raise NeedsReauth(_message(response))
        return response, session

    # --- the protocol ------------------------------------------------------------------------

    def length(self, text: str) -> int:
        return grapheme_length(text)

    def render(self, text: str, limit: int | None = None) -> str:
        rendered = text.strip()
        check_fits(self.platform, rendered, limit)
        return rendered

    async def verify(self, account: AccountRef) -> str:
        """Log in (or reuse the account's session) and return its DID."""
        try:
            response, session = await self._call(account, "GET", "com.atproto.server.getSession")
        except (AmbiguousSend, RateLimited, NeedsReauth, InvalidAccount):
            raise
        except TransientError as exc:
            # A connection refused while checking an account means the URL is wrong, not a fault
            # worth retrying: the caller shows it to whoever typed the URL.
            raise _unreachable(account, exc.message) from None
        if response.status_code != 200:
            raise error_for(response)
        return str(_body(response).get("did") or session["did"])

    async def _resolve(self, account: AccountRef, handle: str) -> str | None:
        try:
            response = await self._xrpc(
                account.service_url, "GET", "com.atproto.identity.resolveHandle", params={"handle": handle}
            )
        except PublishError:
            return None
        did = _body(response).get("did") if response.status_code == 200 else None
        return str(did) if did else None

    async def build_record(self, account: AccountRef, request: PublishRequest) -> dict[str, Any]:
        text = self.render(request.text)
        record: dict[str, Any] = {
            "$type": POST_COLLECTION,
            "text": text,
            "createdAt": record_time(request.created_at),
        }
        facets = await bluesky_facets_resolved(text, lambda handle: self._resolve(account, handle))
        if facets:
            record["facets"] = facets
        if request.langs:
            record["langs"] = request.langs
        if request.source_url:
            record["embed"] = {
                "$type": "app.bsky.embed.external",
                "external": {
                    "uri": request.source_url,
                    "title": request.source_title or request.source_url,
                    "description": "",
                },
            }
        return record

    def _published(self, account: AccountRef, uri: str, cid: str | None, already: bool) -> Published:
        return Published(
            platform=self.platform,
            platform_id=uri,
            cid=cid,
            url=f"https://bsky.app/profile/{account.handle}/post/{_rkey(uri)}",
            already_there=already,
        )

    async def publish(
        self, account: AccountRef, request: PublishRequest, *, after_ambiguous: bool = False
    ) -> Published:
        # after_ambiguous needs nothing special: the write below is create-only-if-absent.
        record = await self.build_record(account, request)
        session = await self._session(account)
        rkey = request.rkey or tid_for_post(request.post_id, request.created_at)
        body = {
            "repo": session["did"],
            "collection": POST_COLLECTION,
            "rkey": rkey,
            "record": record,
            "swapRecord": None,  # sent as JSON null: create only if absent
        }
        response, session = await self._call(account, "POST", "com.atproto.repo.putRecord", body=body)
        body["repo"] = session["did"]
        if response.status_code == 200:
            data = _body(response)
            # No commit: the record was there already, byte for byte (a retry's no-op).
            return self._published(account, str(data["uri"]), data.get("cid"), "commit" not in data)
        if response.status_code == 400 and _body(response).get("error") == "InvalidSwap":
            return await self._existing(account, session["did"], rkey, record)
        raise error_for(response)

    async def _existing(self, account: AccountRef, did: str, rkey: str, record: dict[str, Any]) -> Published:
        response, _ = await self._call(
            account,
            "GET",
            "com.atproto.repo.getRecord",
            params={"repo": did, "collection": POST_COLLECTION, "rkey": rkey},
        )
        if response.status_code != 200:
            raise error_for(response)
        data = _body(response)
        uri = str(data.get("uri") or f"at://{did}/{POST_COLLECTION}/{rkey}")
        if (data.get("value") or {}).get("text") == record["text"]:
            return self._published(account, uri, data.get("cid"), True)
        raise PermanentError(f"a different record already exists at {uri}")

    async def delete(self, account: AccountRef, published: Published) -> None:
        did = published.platform_id.removeprefix("at://").split("/", 1)[0]
        response, _ = await self._call(
            account,
            "POST",
            "com.atproto.repo.deleteRecord",
            body={"repo": did, "collection": POST_COLLECTION, "rkey": _rkey(published.platform_id)},
        )
        if response.status_code != 200:
            raise error_for(response)

    async def read_back(self, account: AccountRef, published: Published) -> ReadBack | None:
        """The post as the AppView serves it (the PDS proxies app.bsky.* to its AppView)."""
        response, _ = await self._call(
            account, "GET", "app.bsky.feed.getPosts", params={"uris": [published.platform_id]}
        )
        if response.status_code != 200:
            raise error_for(response)
        posts = _body(response).get("posts") or []
        if not posts:
            return None
        view = posts[0]
        return ReadBack(
            platform_id=str(view["uri"]),
            text=str((view.get("record") or {}).get("text", "")),
            likes=int(view.get("likeCount") or 0),
            reposts=int(view.get("repostCount") or 0),
            replies=int(view.get("replyCount") or 0),
            quotes=int(view.get("quoteCount") or 0),
            raw=view,
        )

    async def aclose(self) -> None:
        await self._http.aclose()
