"""Job routes: a job's event stream stays open, with keep-alives, while the job is quiet.

On the real Serve and Redis, through a real HTTP client: an integration test.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from chorus.settings import Settings
from chorus.store.client import async_redis
from chorus.store.jobs import JobRepo
from chorus.store.keys import keys_for
from tests.support.personas import unique_id


async def test_a_quiet_job_keeps_its_stream_open_with_keepalives(
    client: httpx.AsyncClient, api_settings: Settings
) -> None:
    """Longer than the Redis client's socket timeout without an event: the stream stays up."""
    assert (await client.get("/readyz")).status_code == 200  # the directory has resumed its queue
    redis_client = async_redis(api_settings)
    jobs = JobRepo(redis_client, keys_for(api_settings))
    job = await jobs.create(unique_id("quiet"))  # nobody runs it: this test writes its events
    lines: list[str] = []

    async def read() -> None:
        async with client.stream("GET", f"/v1/jobs/{job.id}/events") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                lines.append(line)
                if line == "event: end":
                    return

    reader = asyncio.create_task(read())
    await asyncio.sleep(7)
    assert not reader.done()
    await jobs.emit(job.id, "node", {"node": "plan", "duration_s": 0.0})
    await jobs.update(job.id, status="done", finished_at=time.time())
    await jobs.emit(job.id, "end", {"status": "done"})
    await asyncio.wait_for(reader, 30)
    await redis_client.aclose()
    assert lines.count(": keep-alive") >= 2
    assert [line for line in lines if line.startswith("event:")] == ["event: node", "event: end"]
