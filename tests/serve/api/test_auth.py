"""serve/api/auth.py on the app `create_app` builds, in process: who is calling (401) and what
their role may do (403), settled before anything reads the request.

The app runs on httpx's ASGI transport over the session's real Redis, without its lifespan (which
only warms the fleet's directory): no Ray, no Serve, so these are fast tests. The same rules on
the Serve deployment are in tests/serve/api/test_keys_routes.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from chorus.settings import Settings, load_settings
from serve.api.app import create_app
from tests.support.api import assert_error, bearer, create_key
from tests.support.personas import unique_id


@pytest.fixture(scope="module")
def auth_settings(redis_url: str) -> Settings:
    # A key space of its own: nothing here mixes with the other API tests' keys.
    return load_settings(redis={"url": redis_url, "key_prefix": unique_id("auth")})


@pytest.fixture()
async def app_client(auth_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(auth_settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://chorus") as client:
        yield client


async def test_no_key_a_malformed_one_and_an_unknown_one_get_401(app_client: httpx.AsyncClient) -> None:
    missing = assert_error(await app_client.get("/v1/keys"), 401, "missing_key")
    assert "Authorization: Bearer" in missing["message"]
    basic = await app_client.get("/v1/keys", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_error(basic, 401, "missing_key")
    assert basic.headers["www-authenticate"] == "Bearer"
    malformed = assert_error(await app_client.get("/v1/keys", headers=bearer("garbage")), 401, "invalid_key")
    assert "malformed" in malformed["message"]
    unknown = bearer(f"chorus_{'0' * 12}_{'x' * 43}")
    assert_error(await app_client.get("/v1/keys", headers=unknown), 401, "invalid_key")


async def test_a_body_is_not_read_before_the_key_is_checked(app_client: httpx.AsyncClient) -> None:
    not_json = await app_client.post(
        "/v1/personas", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}
    )
    assert_error(not_json, 401, "missing_key")


async def test_roles_decide_what_a_live_key_may_do(
    app_client: httpx.AsyncClient, auth_settings: Settings
) -> None:
    viewer = await create_key(auth_settings, "viewer")
    editor = await create_key(auth_settings, "editor")
    admin = await create_key(auth_settings, "admin")
    assert (await app_client.get("/v1/personas", headers=bearer(viewer))).status_code == 200
    assert_error(await app_client.get("/v1/keys", headers=bearer(viewer)), 403, "forbidden")
    assert_error(await app_client.get("/v1/keys", headers=bearer(editor)), 403, "forbidden")
    assert_error(
        await app_client.post("/v1/keys", json={"role": "viewer"}, headers=bearer(editor)), 403, "forbidden"
    )
    assert (await app_client.get("/v1/keys", headers=bearer(admin))).status_code == 200


async def test_health_and_docs_need_no_key(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/healthz")).status_code == 200
    assert (await app_client.get("/openapi.json")).status_code == 200
