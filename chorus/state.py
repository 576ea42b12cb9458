"""Everything that must outlive a process, in Redis: personas, jobs and their events, posts, spend.

Persona actors write here and the HTTP API reads here directly, so a read never waits on an actor
and an actor can die, restart or be passivated without losing anything.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, computed_field

from chorus.llm.types import BudgetExceeded
from chorus.persona import PersonaSpec, Platform
from chorus.store import EVENTS_BLOCK_MS, Keys

JobStatus = Literal["queued", "running", "done", "failed", "budget_exceeded"]
PostStatus = Literal["accepted", "rejected"]
JobSource = Literal["request", "schedule"]  # asked for (API, CLI, campaign) or due on a cadence
TERMINAL_JOB_STATUSES = ("done", "failed", "budget_exceeded")


def _day(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts or time.time(), UTC).strftime("%Y%m%d")


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex[:20]}"


class NodeRecord(BaseModel):
    node: str
    duration_s: float
    tier: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cache_hit: bool = False
    fallback_reason: str | None = None


class Post(BaseModel):
    id: str  # the job id: one job stores at most one post
    persona_id: str
    platform: str
    status: PostStatus
    text: str
    topic: str
    reasons: list[str] = Field(default_factory=list)
    rewrites: int = 0
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    tiers: dict[str, str]
    nodes: list[NodeRecord]
    created_at: float


class Job(BaseModel):
    id: str
    persona_id: str
    status: JobStatus
    source: JobSource = "request"
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    post_id: str | None = None
    error: str | None = None
    attempts: int = 0


class JobEvent(BaseModel):
    """One entry of a job's event stream: a finished node, the post, or the end."""

    seq: str
    type: Literal["node", "post", "end"]
    data: dict[str, Any]


class Audience(BaseModel):
    """A persona's audience over all its platforms, from their latest engagement reports."""

    followers: int | None = None
    engagement_rate: float | None = None
    cost_per_follower_usd: float | None = None

    @classmethod
    def of(cls, engagements: list[Engagement], cost_usd: float) -> Audience:
        if not engagements:
            return cls()
        followers = sum(e.followers for e in engagements)
        impressions = sum(e.impressions for e in engagements)
        return cls(
            followers=followers,
            engagement_rate=sum(e.engagements for e in engagements) / impressions if impressions else None,
            cost_per_follower_usd=cost_usd / followers if followers else None,
        )


class PersonaStats(Audience):
    persona_id: str
    posts: int
    accepted: int
    rejected: int
    cost_usd: float
    spend_today_usd: float
    daily_budget_usd: float
    cost_per_accepted_post_usd: float | None
    prompt_tokens: int
    completion_tokens: int


class PostPage(BaseModel):
    posts: list[Post]
    next_cursor: str | None


class EngagementReport(BaseModel):
    """What a platform says of a persona's account: its audience now and a period's engagement.

    Chorus does not poll the platforms itself; whatever does (a scheduled job, a webhook relay)
    posts these, and the latest report per platform is what counts.
    """

    model_config = ConfigDict(extra="forbid")

    platform: Platform
    followers: int = Field(ge=0, description="followers of the account now")
    impressions: int = Field(ge=0, description="times the persona's posts were shown in the period")
    engagements: int = Field(
        ge=0, description="likes, reposts, replies and clicks on the persona's posts in the period"
    )


class Engagement(EngagementReport):
    # A record Chorus wrote, read back with its derived rate: only reports from clients are strict.
    model_config = ConfigDict(extra="ignore")

    persona_id: str
    reported_at: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def engagement_rate(self) -> float | None:
        """Engagements per impression in the reported period; None without impressions."""
        return self.engagements / self.impressions if self.impressions else None


class EngagementRepo:
    """The latest engagement report of each persona on each of its platforms."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r, self._k = client, keys

    async def put(self, persona_id: str, report: EngagementReport) -> Engagement:
        engagement = Engagement(**report.model_dump(), persona_id=persona_id, reported_at=time.time())
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("engagement", persona_id), report.platform.value, engagement.model_dump_json())
            pipe.sadd(self._k("engaged"), persona_id)
            await pipe.execute()
        return engagement

    async def reported_personas(self) -> list[str]:
        """Personas with at least one report (the metrics refresh reads only these)."""
        members: set[bytes] = await self._r.smembers(self._k("engaged"))  # type: ignore[assignment]
        return sorted(m.decode() for m in members)

    async def of(self, persona_ids: list[str]) -> dict[str, list[Engagement]]:
        """Each persona's reports (personas without one are left out), ordered by platform."""
        async with self._r.pipeline(transaction=False) as pipe:
            for persona_id in persona_ids:
                pipe.hgetall(self._k("engagement", persona_id))
            replies: list[dict[bytes, bytes]] = await pipe.execute()
        return {
            persona_id: [Engagement.model_validate_json(reply[p]) for p in sorted(reply)]
            for persona_id, reply in zip(persona_ids, replies, strict=True)
            if reply
        }

    async def latest(self, persona_id: str) -> list[Engagement]:
        return (await self.of([persona_id])).get(persona_id, [])

    async def delete(self, persona_id: str) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(self._k("engagement", persona_id))
            pipe.srem(self._k("engaged"), persona_id)
            await pipe.execute()


# Create only a free id: the spec, the index of ids and the autopost index in one step, so two
# concurrent creates of one id cannot both succeed nor the loser overwrite the winner.
_CREATE_PERSONA = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[2])
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[3], ARGV[2])
end
return 1
"""


class PersonaRepo:
    """Persona specs, the index of their ids, and the index of those that post on their cadence
    (the scheduler reads only these, not every spec, each round)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r, self._k = client, keys
        self._create = client.register_script(_CREATE_PERSONA)

    async def put(self, spec: PersonaSpec) -> bool:
        """Store a spec; returns True when it was new."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self._k("persona", spec.id), spec.model_dump_json())
            pipe.sadd(self._k("personas"), spec.id)
            if spec.cadence.autopost:
                pipe.sadd(self._k("personas", "autopost"), spec.id)
            else:
                pipe.srem(self._k("personas", "autopost"), spec.id)
            _, added, _ = await pipe.execute()
        return bool(added)

    async def create(self, spec: PersonaSpec) -> bool:
        """Store a spec only when its id is free; False (and nothing written) when it is taken."""
        keys = [self._k("persona", spec.id), self._k("personas"), self._k("personas", "autopost")]
        args = [spec.model_dump_json(), spec.id, "1" if spec.cadence.autopost else "0"]
        return bool(await self._create(keys=keys, args=args))

    async def get(self, persona_id: str) -> PersonaSpec | None:
        raw = await self._r.get(self._k("persona", persona_id))
        return PersonaSpec.model_validate_json(raw) if raw else None

    async def ids(self) -> list[str]:
        return await self._members(self._k("personas"))

    async def all(self) -> list[PersonaSpec]:
        return await self._specs(await self.ids())

    async def autoposting(self) -> list[PersonaSpec]:
        """The personas whose cadence has `autopost` on."""
        return await self._specs(await self._members(self._k("personas", "autopost")))

    async def delete(self, persona_id: str) -> bool:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(self._k("persona", persona_id))
            pipe.srem(self._k("personas"), persona_id)
            pipe.srem(self._k("personas", "autopost"), persona_id)
            deleted, _, _ = await pipe.execute()
        return bool(deleted)

    async def _members(self, key: str) -> list[str]:
        members: set[bytes] = await self._r.smembers(key)  # type: ignore[assignment]
        return sorted(m.decode() for m in members)

    async def _specs(self, ids: list[str]) -> list[PersonaSpec]:
        if not ids:
            return []
        raws = await self._r.mget([self._k("persona", i) for i in ids])
        return [PersonaSpec.model_validate_json(r) for r in raws if r]


class JobRepo:
    EVENTS_TTL_S = 7 * 24 * 3600
    MAX_BLOCK_MS = 2_000

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r, self._k = client, keys

    async def create(self, persona_id: str, source: JobSource = "request", job_id: str | None = None) -> Job:
        job = Job(
            id=job_id or new_job_id(),
            persona_id=persona_id,
            status="queued",
            source=source,
            created_at=time.time(),
        )
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self._k("job", job.id), job.model_dump_json(), ex=self.EVENTS_TTL_S)
            pipe.zadd(self._k("jobs", "pending"), {job.id: job.created_at})
            await pipe.execute()
        return job

    async def get(self, job_id: str) -> Job | None:
        raw = await self._r.get(self._k("job", job_id))
        return Job.model_validate_json(raw) if raw else None

    async def update(self, job_id: str, **changes: Any) -> Job:
        job = await self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        job = job.model_copy(update=changes)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self._k("job", job.id), job.model_dump_json(), ex=self.EVENTS_TTL_S)
            if job.status in TERMINAL_JOB_STATUSES:
                pipe.zrem(self._k("jobs", "pending"), job.id)
            await pipe.execute()
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
            pipe.expire(key, self.EVENTS_TTL_S)
            await pipe.execute()

    async def events(
        self, job_id: str, after: str = "0", block_ms: int = EVENTS_BLOCK_MS
    ) -> AsyncIterator[JobEvent]:
        """Every event from the start (or after `after`), then new ones as they come, until end."""
        key = self._k("job", job_id, "events")
        last = after
        # A blocking read must return before the client's socket timeout (redis-py 8 sets 5 s by
        # default), or the client raises a network timeout instead of returning an empty read.
        block_ms = min(block_ms, self.MAX_BLOCK_MS)
        while True:
            batch: Any = await self._r.xread({key: last}, block=block_ms, count=100)
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


# Stores a post once (the job id keys it), indexes it and counts it, atomically.
_SAVE_POST = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
  redis.call('HINCRBY', KEYS[4], 'posts', 1)
  redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
  redis.call('HINCRBYFLOAT', KEYS[4], 'cost_usd', ARGV[5])
  redis.call('HINCRBY', KEYS[4], 'prompt_tokens', ARGV[6])
  redis.call('HINCRBY', KEYS[4], 'completion_tokens', ARGV[7])
  if ARGV[4] == 'accepted' then
    redis.call('HINCRBYFLOAT', KEYS[4], 'accepted_cost_usd', ARGV[5])
    redis.call('LPUSH', KEYS[5], ARGV[8])
    redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[9]) - 1)
  end
  return 1
end
return 0
"""


class PostRepo:
    def __init__(self, client: aioredis.Redis, keys: Keys, recent_window: int = 20) -> None:
        self._r, self._k = client, keys
        self._recent_window = recent_window
        self._save = client.register_script(_SAVE_POST)

    async def save(self, post: Post) -> bool:
        """Store a post; False when this job's post was already stored (a retried job)."""
        recent = json.dumps({"text": post.text, "topic": post.topic})
        stored = await self._save(
            keys=[
                self._k("post", post.id),
                self._k("posts"),
                self._k("posts", "persona", post.persona_id),
                self._k("stats", post.persona_id),
                self._k("recent", post.persona_id),
            ],
            args=[
                post.model_dump_json(),
                post.created_at,
                post.id,
                post.status,
                repr(post.cost_usd),
                post.prompt_tokens,
                post.completion_tokens,
                recent,
                self._recent_window,
            ],
        )
        return bool(stored)

    async def get(self, post_id: str) -> Post | None:
        raw = await self._r.get(self._k("post", post_id))
        return Post.model_validate_json(raw) if raw else None

    async def recent(self, persona_id: str) -> list[dict[str, str]]:
        """The persona's latest accepted posts ({text, topic}), newest first."""
        rows = await self._r.lrange(self._k("recent", persona_id), 0, self._recent_window - 1)
        return [json.loads(r) for r in rows]

    async def page(
        self,
        *,
        persona_id: str | None = None,
        status: PostStatus | None = None,
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> PostPage:
        """Newest first. The cursor is the (score, id) of the last post returned."""
        index = self._k("posts", "persona", persona_id) if persona_id else self._k("posts")
        top: str = f"({until}" if until is not None else "+inf"
        skip_id: str | None = None
        if cursor:
            score_text, _, skip_id = cursor.partition(":")
            top = score_text
        bottom = str(since) if since is not None else "-inf"
        found: list[Post] = []
        # Over-fetch only when a status filter may skip posts; otherwise a page is one read.
        offset, batch = 0, (limit if status is None else max(limit * 2, 50))
        while len(found) < limit:
            ids: list[Any] = await self._r.zrevrangebyscore(
                index, top, bottom, start=offset, num=batch, withscores=True
            )
            if not ids:
                break
            offset += len(ids)
            wanted = [(m.decode(), s) for m, s in ids]
            if skip_id is not None:
                # Posts sharing the cursor's score come after it only if their id sorts lower.
                wanted = [(i, s) for i, s in wanted if not (str(s) == top and i >= skip_id)]
            raws = await self._r.mget([self._k("post", i) for i, _ in wanted]) if wanted else []
            for raw in raws:
                if raw is None:
                    continue
                post = Post.model_validate_json(raw)
                if status is None or post.status == status:
                    found.append(post)
                    if len(found) == limit:
                        break
        next_cursor = None
        if len(found) == limit:
            last = found[-1]
            next_cursor = f"{last.created_at!r}:{last.id}"
        return PostPage(posts=found, next_cursor=next_cursor)

    async def lifetime_costs(self, persona_ids: list[str]) -> dict[str, float]:
        """What each persona's posts have cost in all, from the same counters as `stats`."""
        async with self._r.pipeline(transaction=False) as pipe:
            for persona_id in persona_ids:
                pipe.hget(self._k("stats", persona_id), "cost_usd")
            replies: list[bytes | None] = await pipe.execute()
        return {p: float(r or 0) for p, r in zip(persona_ids, replies, strict=True)}

    async def stats(self, persona_id: str, spend_today: float, budget: float) -> PersonaStats:
        fields: dict[Any, Any] = await self._r.hgetall(self._k("stats", persona_id))
        raw = {k.decode(): v.decode() for k, v in fields.items()}
        accepted = int(raw.get("accepted", 0))
        accepted_cost = float(raw.get("accepted_cost_usd", 0))
        return PersonaStats(
            persona_id=persona_id,
            posts=int(raw.get("posts", 0)),
            accepted=accepted,
            rejected=int(raw.get("rejected", 0)),
            cost_usd=float(raw.get("cost_usd", 0)),
            spend_today_usd=spend_today,
            daily_budget_usd=budget,
            cost_per_accepted_post_usd=accepted_cost / accepted if accepted else None,
            prompt_tokens=int(raw.get("prompt_tokens", 0)),
            completion_tokens=int(raw.get("completion_tokens", 0)),
        )


class ScheduledSlot(BaseModel):
    at: datetime
    job_id: str | None = Field(None, description="the job queued for this slot, once it came due")


class Schedule(BaseModel):
    """A persona's posting slots on its local day."""

    persona_id: str
    autopost: bool
    timezone: str
    day: date
    slots: list[ScheduledSlot]


class ScheduleRepo:
    """Which cadence slots have been queued: one key per slot, claimed once fleet-wide."""

    TTL_S = 3 * 24 * 3600  # past any catch-up window

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r, self._k = client, keys

    async def claim(self, persona_id: str, slot_key: str, job_id: str) -> bool:
        """Give the slot to this job: True for the one caller that gets it, so a slot is queued
        once however often (or on however many restarts) the scheduler runs."""
        return bool(await self._r.set(self._k("slot", persona_id, slot_key), job_id, nx=True, ex=self.TTL_S))

    async def jobs(self, persona_id: str, slot_keys: list[str]) -> list[str | None]:
        """The job queued for each slot: None when not (yet) queued."""
        if not slot_keys:
            return []
        raws: list[Any] = await self._r.mget([self._k("slot", persona_id, key) for key in slot_keys])
        return [raw.decode() if raw is not None else None for raw in raws]


# Reserve only if the worst case still fits the budget; both sides run inside Redis, so
# concurrent jobs of one persona can never reserve past it together.
_RESERVE = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if spent + amount > tonumber(ARGV[2]) + 1e-12 then
  return {0, tostring(spent)}
end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 172800)
return {1, tostring(spent)}
"""


class SpendLedger:
    """A persona's spend for today (UTC) in Redis; implements the router's SpendGuard."""

    def __init__(self, client: aioredis.Redis, keys: Keys, persona_id: str, budget_usd: float):
        self._r, self._k = client, keys
        self.persona_id = persona_id
        self.budget_usd = budget_usd
        self._reserve = client.register_script(_RESERVE)

    @classmethod
    def of(
        cls, client: aioredis.Redis, keys: Keys, spec: PersonaSpec, default_budget_usd: float
    ) -> SpendLedger:
        """The persona's ledger, with its own budget or the fleet's default."""
        return cls(client, keys, spec.id, spec.budget_usd(default_budget_usd))

    async def exhausted(self) -> bool:
        return await self.spent_today() >= self.budget_usd

    def _key(self) -> str:
        return self._k("spend", self.persona_id, _day())

    async def spent_today(self) -> float:
        return float(await self._r.get(self._key()) or 0)

    async def reserve(self, amount_usd: float) -> None:
        ok, spent = await self._reserve(keys=[self._key()], args=[repr(amount_usd), repr(self.budget_usd)])
        if not int(ok):
            raise BudgetExceeded(self.persona_id, float(spent), self.budget_usd, amount_usd)

    async def settle(self, reserved_usd: float, actual_usd: float) -> None:
        if actual_usd != reserved_usd:
            await self._r.incrbyfloat(self._key(), actual_usd - reserved_usd)
