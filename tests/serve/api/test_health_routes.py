"""`/healthz`, `/readyz` and the docs: open to anyone, ready once Redis, the tier and the directory are.

On the real Serve, Redis, fleet and local tier: an integration test.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.support.api import bearer
from tests.support.tiers import SERVICE_KEY


async def test_health_readiness_and_docs_are_open(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
    deadline = time.monotonic() + 120
    while (ready := await anonymous.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        await asyncio.sleep(1)  # readiness may take a moment on a cold cluster: that is its point
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["redis"] == checks["local_tier"] == checks["directory"] == "ok"
    assert (await anonymous.get("/docs")).status_code == 200
    spec = (await anonymous.get("/openapi.json")).json()
    assert "/v1/personas/{persona_id}/posts:generate" in spec["paths"]
    assert "/v1/jobs/{job_id}/events" in spec["paths"]
    # The local tier's OpenAI routes stay where they were, on the same Serve instance, behind a key.
    assert (await anonymous.get("/llm/v1/models")).status_code == 401
    assert (await anonymous.get("/llm/v1/models", headers=bearer(SERVICE_KEY))).status_code == 200
