"""Helpers for tests that talk to the HTTP API or read what it shows users.

Keys made straight in Redis, request bodies and headers, the error-shape check, a job's event
stream read to its end, a snapshot of everything stored (to show a refused request changed
nothing), and the check that no internal detail (tracebacks, paths, Ray ids) reaches a user.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import redis

from chorus.settings import Settings
from serve.api.protocol import SseDecoder, SseMessage
from tests.support.personas import make_persona

# The API's limits in the suite's deployment: small enough that tests reach them; the rest are
# the product's defaults.
API_LIMITS = {
    "max_pending_jobs": 8,
    "max_body_bytes": 16 * 1024,
    "sync_timeout_s": 300.0,
    "sse_keepalive_s": 2.0,
}


async def create_key(settings: Settings, role: str, name: str = "tests") -> str:
    """A key made straight in Redis, the way `chorus up` bootstraps the first admin key."""
    from chorus.store.api_keys import KeyStore
    from chorus.store.client import async_redis
    from chorus.store.keys import keys_for

    client = async_redis(settings)
    try:
        _, token = await KeyStore(client, keys_for(settings)).create(role, name)  # type: ignore[arg-type]
        return token
    finally:
        await client.aclose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def persona_body(persona_id: str, **changes: Any) -> dict[str, Any]:
    """An example persona under `persona_id` as the API takes it (JSON)."""
    return make_persona(persona_id, **changes).model_dump(mode="json")


def snapshot(settings: Settings) -> dict[bytes, bytes | None]:
    """Every key under the prefix, serialised by Redis itself, once no job is running."""
    from chorus.store.keys import keys_for

    client = redis.Redis.from_url(settings.redis.url)
    keys = keys_for(settings)
    deadline = time.monotonic() + 300
    while client.zcard(keys("jobs", "pending")) and time.monotonic() < deadline:
        time.sleep(0.5)
    return {key: client.dump(key) for key in sorted(client.scan_iter(match=keys("*"), count=1000))}


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code and error["field"] == field, error
    assert error["message"] and "Traceback" not in response.text
    return dict(error)


async def read_events(
    client: httpx.AsyncClient, job_id: str, *, last_id: str | None = None, first: asyncio.Event | None = None
) -> list[SseMessage]:
    """A job's events to the end; sets `first` once the first node event has arrived."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    messages: list[SseMessage] = []
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        decoder = SseDecoder()
        async for line in response.aiter_lines():
            message = decoder.feed(line)
            if message is None:
                continue
            messages.append(message)
            if first is not None and message.event == "node":
                first.set()
            if message.event == "end":
                break
    return messages


# What a Ray traceback carries and no user may see: the traceback, source paths, colour codes,
# process ids, the node's address, actor ids.
_INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|\x1b\[|\bpid[=: ]|\b\d{1,3}(\.\d{1,3}){3}\b|ray::|actor_id|RayTaskError"
)


def assert_no_internals(text: str) -> None:
    found = _INTERNALS.search(text)
    assert found is None, f"internal detail {found.group(0)!r} shown to a user: {text!r}"
