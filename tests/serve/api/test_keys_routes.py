"""Keys and roles: who may do what, keys that show no secret, revoking, purging, the last admin key.

On the real Serve, Redis and fleet, through a real HTTP client: integration tests.
"""

from __future__ import annotations

import asyncio

import httpx

from chorus.settings import Settings
from chorus.store.api_keys import KeyStore
from chorus.store.client import async_redis
from chorus.store.keys import keys_for
from tests.support.api import (
    assert_error,
    bearer,
    create_key,
    persona_body,
    snapshot,
)
from tests.support.personas import unique_id


async def test_keys_and_roles_refuse_without_changing_anything(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_settings: Settings
) -> None:
    persona_id = unique_id("auth")
    assert (await client.post("/v1/personas", json=persona_body(persona_id))).status_code == 201
    viewer = (await client.post("/v1/keys", json={"role": "viewer", "name": "v"})).json()
    editor = (await client.post("/v1/keys", json={"role": "editor"})).json()
    revoked = (await client.post("/v1/keys", json={"role": "admin"})).json()
    assert viewer["key"].startswith(f"chorus_{viewer['id']}_") and viewer["role"] == "viewer"
    assert (await client.delete(f"/v1/keys/{revoked['id']}")).json()["keys"][0]["revoked_at"] is not None
    # Live keys by default; revoked ones until purged, when asked for.
    listed = (await client.get("/v1/keys", params={"include_revoked": "true"})).json()["keys"]
    assert {viewer["id"], editor["id"], revoked["id"]} <= {k["id"] for k in listed}
    live = {k["id"] for k in (await client.get("/v1/keys")).json()["keys"]}
    assert {viewer["id"], editor["id"]} <= live and revoked["id"] not in live
    assert all("key" not in k and "sha256" not in k for k in listed)

    before = snapshot(api_settings)
    generate = f"/v1/personas/{persona_id}/posts:generate"
    assert_error(await anonymous.post(generate), 401, "missing_key")
    assert_error(await anonymous.get("/v1/personas"), 401, "missing_key")
    # The key is checked before the body is read, on Serve as in the plain app.
    not_utf8 = await anonymous.post(
        "/v1/personas", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}
    )
    assert_error(not_utf8, 401, "missing_key")
    unknown = f"chorus_{viewer['id']}_not-the-secret"
    assert_error(await anonymous.post(generate, headers=bearer(unknown)), 401, "invalid_key")
    assert_error(await anonymous.get("/v1/posts", headers=bearer("garbage")), 401, "invalid_key")
    gone = assert_error(await anonymous.post(generate, headers=bearer(revoked["key"])), 401, "invalid_key")
    assert "revoked" in gone["message"]
    refused = await anonymous.post(generate, headers=bearer(viewer["key"]))
    assert_error(refused, 403, "forbidden")
    assert_error(
        await anonymous.delete(f"/v1/personas/{persona_id}", headers=bearer(viewer["key"])), 403, "forbidden"
    )
    assert_error(
        await anonymous.post("/v1/keys", json={"role": "admin"}, headers=bearer(editor["key"])),
        403,
        "forbidden",
    )
    assert (
        await anonymous.get(f"/v1/personas/{persona_id}", headers=bearer(viewer["key"]))
    ).status_code == 200
    assert snapshot(api_settings) == before


async def test_a_viewer_key_made_in_redis_reads_but_cannot_write(
    anonymous: httpx.AsyncClient, api_settings: Settings
) -> None:
    key = await create_key(api_settings, "viewer")
    assert (await anonymous.get("/v1/status", headers=bearer(key))).json()["queue_depth"] >= 0
    assert_error(
        await anonymous.post("/v1/keys", json={"role": "viewer"}, headers=bearer(key)), 403, "forbidden"
    )


async def test_keys_show_no_secret_read_the_same_unknown_or_revoked_and_purge(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    created = (await client.post("/v1/keys", json={"role": "viewer", "name": "hint"})).json()
    secret = created["key"].split("_", 2)[2]
    assert created["hint"] == f"chorus_{created['id']}_" and secret[:4] not in created["hint"]
    listed = {k["id"]: k for k in (await client.get("/v1/keys")).json()["keys"]}
    assert listed[created["id"]]["hint"] == f"chorus_{created['id']}_"

    unknown = f"chorus_{created['id']}_{'x' * len(secret)}"
    wrong = assert_error(await anonymous.get("/v1/posts", headers=bearer(unknown)), 401, "invalid_key")
    assert (await client.delete(f"/v1/keys/{created['id']}")).status_code == 200
    gone = assert_error(await anonymous.get("/v1/posts", headers=bearer(created["key"])), 401, "invalid_key")
    assert gone["message"] == wrong["message"]

    purged = await client.post("/v1/keys:purge")
    assert purged.status_code == 200 and created["id"] in purged.json()["purged"]
    everything = (await client.get("/v1/keys", params={"include_revoked": "true"})).json()["keys"]
    assert created["id"] not in {k["id"] for k in everything}
    assert all(k["revoked_at"] is None for k in everything)  # only revoked records went
    after = assert_error(await anonymous.get("/v1/posts", headers=bearer(created["key"])), 401, "invalid_key")
    assert after["message"] == wrong["message"]
    assert_error(await client.delete(f"/v1/keys/{created['id']}"), 404, "key_not_found")


async def test_the_last_admin_key_cannot_be_revoked(redis_url: str, settings: Settings) -> None:
    from serve.api.app import create_app

    # A key space of its own: the session's admin key must stay usable for the other tests.
    isolated = settings.model_copy(
        update={"redis": settings.redis.model_copy(update={"key_prefix": unique_id("lastadmin")})}
    )
    first, second = await create_key(isolated, "admin"), await create_key(isolated, "admin")
    first_id, second_id = first.split("_")[1], second.split("_")[1]
    transport = httpx.ASGITransport(app=create_app(isolated))
    async with httpx.AsyncClient(transport=transport, base_url="http://chorus", headers=bearer(first)) as api:
        viewer = (await api.post("/v1/keys", json={"role": "viewer"})).json()
        assert (await api.delete(f"/v1/keys/{second_id}")).status_code == 200
        refused = assert_error(await api.delete(f"/v1/keys/{first_id}"), 409, "last_admin_key")
        assert "last admin key" in refused["message"]
        assert (await api.get("/v1/keys")).status_code == 200  # still an admin
        assert (await api.delete(f"/v1/keys/{viewer['id']}")).status_code == 200  # others go

    # Two admins revoking each other's keys at once: one of the two keys survives.
    connection = async_redis(isolated)
    store = KeyStore(connection, keys_for(isolated))
    a, b = (await store.create("admin"))[0], (await store.create("admin"))[0]
    assert (await store.revoke(first_id)) is not None
    outcomes = await asyncio.gather(store.revoke(a.id), store.revoke(b.id), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["ApiKey", "LastAdminKey"]
    assert len([k for k in await store.list() if k.role == "admin"]) == 1
    await connection.aclose()
