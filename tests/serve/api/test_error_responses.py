"""Bad input gets its documented error (`{"error": {code, message, field}}`) and changes nothing.

On the real Serve, Redis, fleet and local tier, through a real HTTP client: an integration test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from chorus.settings import Settings
from tests.support.api import (
    API_LIMITS,
    assert_error,
    persona_body,
    snapshot,
)
from tests.support.personas import unique_id


async def test_bad_input_gets_its_documented_error_and_changes_nothing(
    client: httpx.AsyncClient, api_settings: Settings
) -> None:
    persona_id, broke = unique_id("bad"), unique_id("broke")
    assert (await client.post("/v1/personas", json=persona_body(persona_id))).status_code == 201
    assert (
        await client.post("/v1/personas", json=persona_body(broke, daily_budget_usd=0))
    ).status_code == 201
    generate = f"/v1/personas/{persona_id}/posts:generate"
    json_headers = {"Content-Type": "application/json"}
    before = snapshot(api_settings)

    error = assert_error(
        await client.post(generate, content=b'{"count": ', headers=json_headers), 422, "invalid_json"
    )
    assert "not valid JSON" in error["message"]
    assert_error(
        await client.post("/v1/personas", content=b"[1, 2]", headers=json_headers), 422, "invalid_json"
    )
    error = assert_error(
        await client.post(generate, json={"count": 1, "colour": "red"}), 422, "unknown_field", "colour"
    )
    assert error["message"] == "colour: unknown field"
    error = assert_error(await client.post(generate, json={"count": "many"}), 422, "invalid_field", "count")
    assert "valid integer" in error["message"]
    limit = API_LIMITS["max_body_bytes"]
    oversized = {"count": 1, "pad": "x" * int(limit)}
    assert_error(await client.post(generate, json=oversized), 413, "body_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(int(limit) // 1024 + 2):
            yield b" " * 1024

    assert_error(await client.post(generate, content=chunks(), headers=json_headers), 413, "body_too_large")

    bad_spec = persona_body(unique_id("bad"))
    bad_spec["platforms"][0]["name"] = "myspace"
    error = assert_error(
        await client.post("/v1/personas", json=bad_spec), 422, "invalid_field", "platforms[0].name"
    )
    assert "'x', 'bluesky', 'mastodon' or 'linkedin'" in error["message"]
    bad_spec = {**persona_body(persona_id), "topcis": ["typo"]}
    assert_error(
        await client.put(f"/v1/personas/{persona_id}", json=bad_spec), 422, "unknown_field", "topcis"
    )
    bad_spec = {**persona_body(persona_id), "cadence": {"timezone": "Mars/Base"}}
    error = assert_error(
        await client.put(f"/v1/personas/{persona_id}", json=bad_spec),
        422,
        "invalid_field",
        "cadence.timezone",
    )
    assert "unknown time zone 'Mars/Base'" in error["message"]

    assert_error(await client.post("/v1/personas/nobody-here/posts:generate"), 404, "persona_not_found")
    assert_error(await client.get("/v1/personas/nobody-here/stats"), 404, "persona_not_found")
    assert_error(await client.get("/v1/personas/nobody-here/schedule"), 404, "persona_not_found")
    assert_error(await client.get("/v1/jobs/job_missing"), 404, "job_not_found")
    assert_error(await client.get("/v1/jobs/job_missing/events"), 404, "job_not_found")
    assert_error(await client.get("/v1/jobs/job_missing:events"), 404, "job_not_found")
    not_a_cursor = await client.get("/v1/posts", params={"cursor": "1_000:job_x"})
    assert_error(not_a_cursor, 422, "invalid_field", "cursor")
    assert_error(await client.delete("/v1/keys/nope"), 404, "key_not_found")
    assert_error(await client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await client.get("/v1/posts", params={"cursor": "bogus"}), 422, "invalid_field", "cursor")
    assert_error(await client.get("/v1/posts", params={"limit": 0}), 422, "invalid_field", "limit")
    assert_error(await client.get("/v1/posts", params={"status": "maybe"}), 422, "invalid_field", "status")

    budget = assert_error(await client.post(f"/v1/personas/{broke}/posts:generate"), 402, "budget_exceeded")
    assert budget["details"]["spent_usd"] == 0 and budget["details"]["budget_usd"] == 0
    too_many = API_LIMITS["max_pending_jobs"] + 1
    busy = await client.post(generate, params={"async": "true"}, json={"count": too_many})
    assert_error(busy, 503, "overloaded")
    assert int(busy.headers["retry-after"]) > 0

    assert snapshot(api_settings) == before
