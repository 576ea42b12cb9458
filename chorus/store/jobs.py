"""Jobs and their event streams: what was asked for, how far it got, and every finished node.

A job's record and its stream expire after `store.job_ttl_s`; a read of the stream blocks
`store.events_block_ms` at a time, so late subscribers replay everything and live ones wait.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from chorus.errors import UnknownJob
from chorus.models import TERMINAL_JOB_STATUSES, Job, JobEvent, JobSource, new_job_id
from chorus.settings import StoreSettings
from chorus.store.keys import Keys

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class JobRepo:
    """Job records, the fleet-wide index of unfinished jobs, and each job's event stream."""

    def __init__(self, client: aioredis.Redis, keys: Keys, store: StoreSettings | None = None) -> None:
        self._r, self._k = client, keys
        store = store or StoreSettings()
        self._ttl_s = store.job_ttl_s
        self._block_ms = store.events_block_ms

    async def create(
        self,
        persona_id: str,
        source: JobSource = "request",
        job_id: str | None = None,
        *,
        source_url: str | None = None,
        source_title: str | None = None,
    ) -> Job:
        job = Job(
            id=job_id or new_job_id(),
            persona_id=persona_id,
            source_url=source_url,
            source_title=source_title,
            status="queued",
            source=source,
            created_at=time.time(),
        )
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self._k("job", job.id), job.model_dump_json(), ex=self._ttl_s)
            pipe.zadd(self._k("jobs", "pending"), {job.id: job.created_at})
            await pipe.execute()
        return job

    async def get(self, job_id: str) -> Job | None:
        raw = await self._r.get(self._k("job", job_id))
        return Job.model_validate_json(raw) if raw else None

    async def update(self, job_id: str, **changes: Any) -> Job:
        job = await self.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        job = job.model_copy(update=changes)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self._k("job", job.id), job.model_dump_json(), ex=self._ttl_s)
            if job.status in TERMINAL_JOB_STATUSES:
                pipe.zrem(self._k("jobs", "pending"), job.id)
            await pipe.execute()
        return job

    async def requeue(self, job_id: str) -> Job:
        """A finished job queued again to carry on (its workflow waits for a person's answer,
        which has come): unfinished again, so a restarted directory resumes it too."""
        job = await self.update(job_id, status="queued", finished_at=None, error=None, error_code=None)
        await self._r.zadd(self._k("jobs", "pending"), {job.id: time.time()})
        return job

    async def pending(self) -> list[tuple[str, float]]:
        """Jobs submitted and not finished, oldest first, with their submission time."""
        rows: list[Any] = await self._r.zrange(self._k("jobs", "pending"), 0, -1, withscores=True)
        return [(member.decode(), float(score)) for member, score in rows]

    async def pending_count(self) -> int:
        return int(await self._r.zcard(self._k("jobs", "pending")))

    async def emit(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        key = self._k("job", job_id, "events")
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"type": kind, "data": json.dumps(data)})
            pipe.expire(key, self._ttl_s)
            await pipe.execute()

    async def events(self, job_id: str, after: str = "0") -> AsyncIterator[JobEvent]:
        """Every event from the start (or after `after`), then new ones as they come, until end."""
        key = self._k("job", job_id, "events")
        last = after
        while True:
            batch: Any = await self._r.xread({key: last}, block=self._block_ms, count=100)
            if not batch:
                job = await self.get(job_id)
                if job is None or (job.status in TERMINAL_JOB_STATUSES and not await self._r.exists(key)):
                    return
                continue
            for entry_id, fields in batch[0][1]:
                last = entry_id.decode()
                event = JobEvent(
                    seq=last,
                    type=fields[b"type"].decode(),
                    data=json.loads(fields[b"data"]),
                )
                yield event
                if event.type == "end":
                    return
