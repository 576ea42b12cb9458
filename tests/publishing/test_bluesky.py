"""The Bluesky adapter against a real local AT Protocol network (PLC + PDS + AppView): facets on
UTF-8 byte offsets, link cards, AppView read-back, retries that never post twice, one login for
many posts, revoked app passwords, rate limits read from the PDS's headers, deletion."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from chorus.errors import InvalidAccount
from chorus.persona import Platform
from chorus.publishing.bluesky import BlueskyAdapter
from chorus.publishing.protocol import (
    AccountRef,
    Credentials,
    NeedsReauth,
    PermanentError,
    PublishRequest,
    RateLimited,
)
from ops.devnet import DevnetInfo, create_account
from ops.devnet.accounts import create_app_password, revoke_app_password
from tests.support.processes import free_port


class MemorySessions:
    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, str]] = {}

    async def load(self, account_id: str) -> dict[str, str] | None:
        return self.sessions.get(account_id)

    async def save(self, account_id: str, session: dict[str, str]) -> None:
        self.sessions[account_id] = session

    async def clear(self, account_id: str) -> None:
        self.sessions.pop(account_id, None)


def account_ref(info: DevnetInfo, handle: str, secret: str, service_url: str | None = None) -> AccountRef:
    return AccountRef(
        id=f"acct_{uuid.uuid4().hex[:8]}",
        persona_id="p",
        platform=Platform.bluesky,
        handle=handle,
        service_url=service_url or info.pds,
        credentials=Credentials(secret=SecretStr(secret)),
    )


def request(text: str, **changes: Any) -> PublishRequest:
    return PublishRequest(
        post_id=f"job_{uuid.uuid4().hex[:12]}", text=text, created_at=time.time(), **changes
    )


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 10.0) -> Any:
    """Poll until `check` returns something truthy: the AppView indexes within 0.1-1.4 s."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await check()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


async def records(info: DevnetInfo, did: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{info.pds}/xrpc/com.atproto.repo.listRecords",
            params={"repo": did, "collection": "app.bsky.feed.post", "limit": 100},
        )
    response.raise_for_status()
    listed: list[dict[str, Any]] = response.json()["records"]
    return listed


async def author_feed(info: DevnetInfo, did: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{info.appview}/xrpc/app.bsky.feed.getAuthorFeed", params={"actor": did})
    response.raise_for_status()
    return [item["post"] for item in response.json()["feed"]]


@pytest.fixture()
async def adapter() -> AsyncIterator[BlueskyAdapter]:
    adapter = BlueskyAdapter(MemorySessions(), timeout_s=20)
    yield adapter
    await adapter.aclose()


async def test_a_post_with_emoji_and_non_latin_text_gets_facets_on_byte_offsets_and_a_link_card(
    devnet: DevnetInfo, adapter: BlueskyAdapter
) -> None:
    account = create_account(devnet, "facets")
    ref = account_ref(devnet, account.handle, create_app_password(devnet, account, "chorus"))
    assert await adapter.verify(ref) == account.did
    text = "Café ☕ 東京の朝 👨‍👩‍👧 — читайте https://example.com/roast?day=1. #RoastDay"
    published = await adapter.publish(
        ref, request(text, source_url="https://example.com/roast?day=1", source_title="Roast day")
    )
    assert published.platform_id.startswith(f"at://{account.did}/app.bsky.feed.post/")
    assert not published.already_there
    [stored] = await records(devnet, account.did)
    value = stored["value"]
    raw = value["text"].encode()
    spans = {f["features"][0]["$type"].split("#")[1]: f["index"] for f in value["facets"]}
    assert raw[spans["link"]["byteStart"] : spans["link"]["byteEnd"]] == b"https://example.com/roast?day=1"
    assert raw[spans["tag"]["byteStart"] : spans["tag"]["byteEnd"]] == b"#RoastDay"
    assert spans["link"]["byteStart"] > len(text[: text.index("https")])  # bytes, not characters
    assert value["embed"]["external"] == {
        "uri": "https://example.com/roast?day=1",
        "title": "Roast day",
        "description": "",
    }
    feed = await eventually(lambda: author_feed(devnet, account.did))
    assert [p["uri"] for p in feed] == [published.platform_id]
    assert feed[0]["record"]["text"] == text
    assert feed[0]["embed"]["$type"] == "app.bsky.embed.external#view"
    back = await adapter.read_back(ref, published)
    assert back is not None and back.text == text and back.likes == 0


async def test_a_retried_publish_writes_one_record_and_says_it_was_there(
    devnet: DevnetInfo, adapter: BlueskyAdapter
) -> None:
    account = create_account(devnet, "retry")
    ref = account_ref(devnet, account.handle, create_app_password(devnet, account, "chorus"))
    once = request("Retried after a crash, posted once. #Chorus")
    first = await adapter.publish(ref, once)
    again = await adapter.publish(ref, once, after_ambiguous=True)
    assert again.platform_id == first.platform_id and again.cid == first.cid
    assert again.already_there and not first.already_there
    assert len(await records(devnet, account.did)) == 1
    # The same record key with other text is refused, not overwritten.
    with pytest.raises(PermanentError, match="different record already exists"):
        await adapter.publish(ref, once.model_copy(update={"text": "Other text under the same key"}))
    assert len(await records(devnet, account.did)) == 1


async def test_many_posts_use_one_login(devnet: DevnetInfo, adapter: BlueskyAdapter) -> None:
    account = create_account(devnet, "login")
    ref = account_ref(devnet, account.handle, create_app_password(devnet, account, "chorus"))
    for i in range(5):
        await adapter.publish(ref, request(f"Post number {i} of five, one session. #Chorus"))
    assert adapter.logins == 1
    assert len(await records(devnet, account.did)) == 5


async def test_deleting_removes_the_post_from_the_pds_and_the_appview(
    devnet: DevnetInfo, adapter: BlueskyAdapter
) -> None:
    account = create_account(devnet, "delete")
    ref = account_ref(devnet, account.handle, create_app_password(devnet, account, "chorus"))
    published = await adapter.publish(ref, request("Here for a moment only. #Chorus"))
    assert await eventually(lambda: author_feed(devnet, account.did))
    await adapter.delete(ref, published)
    await adapter.delete(ref, published)  # already gone: still fine
    assert await records(devnet, account.did) == []

    async def gone() -> bool:
        return await author_feed(devnet, account.did) == []

    assert await eventually(gone)
    assert await adapter.read_back(ref, published) is None


async def test_a_revoked_app_password_needs_reauth(devnet: DevnetInfo) -> None:
    account = create_account(devnet, "revoked")
    sessions = MemorySessions()
    adapter = BlueskyAdapter(sessions)
    try:
        ref = account_ref(devnet, account.handle, create_app_password(devnet, account, "chorus"))
        await adapter.publish(ref, request("Before the password was revoked. #Chorus"))
        revoke_app_password(devnet, account, "chorus")
        # Its refresh token is revoked with it: once the access token lapses (here: dropped), no
        # renewal and no new login works.
        sessions.sessions[ref.id] = {**sessions.sessions[ref.id], "accessJwt": "expired"}
        with pytest.raises(NeedsReauth):
            await adapter.publish(ref, request("After the password was revoked. #Chorus"))
        assert ref.id not in sessions.sessions
    finally:
        await adapter.aclose()
    assert len(await records(devnet, account.did)) == 1


async def test_a_wrong_service_url_and_an_over_length_post_are_refused(
    devnet: DevnetInfo, adapter: BlueskyAdapter
) -> None:
    account = create_account(devnet, "wrongurl")
    nowhere = account_ref(devnet, account.handle, account.password, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Exception) as caught:
        await adapter.verify(nowhere)
    assert "127.0.0.1" in str(caught.value)
    not_a_pds = account_ref(devnet, account.handle, account.password, devnet.appview.replace("/xrpc", ""))
    with pytest.raises((InvalidAccount, PermanentError)):
        await adapter.verify(not_a_pds)
    ref = account_ref(devnet, account.handle, account.password)
    with pytest.raises(PermanentError, match=r"301 graphemes; bluesky allows 300"):
        await adapter.publish(ref, request("é" * 301))
    assert adapter.length("👨‍👩‍👧🇯🇵") == 2


async def test_rate_limited_logins_name_the_reset_time(devnet_rate_limited: DevnetInfo) -> None:
    account = create_account(devnet_rate_limited, "limited")
    ref = account_ref(devnet_rate_limited, account.handle, account.password)
    limited: RateLimited | None = None
    for _ in range(40):
        adapter = BlueskyAdapter(MemorySessions())  # no stored session: every verify logs in
        try:
            await adapter.verify(ref)
        except RateLimited as exc:
            limited = exc
            break
        finally:
            await adapter.aclose()
    assert limited is not None, "the PDS allows 30 logins per 5 minutes"
    assert time.time() < limited.retry_at <= time.time() + 301
