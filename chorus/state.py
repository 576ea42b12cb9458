"""Everything that must outlive a process, in Redis: personas, jobs and their events, posts, spend.

Persona actors write here and the HTTP API reads here directly, so a read never waits on an actor
and an actor can die, restart or be passivated without losing anything.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, computed_field

from chorus.inputs import Integer
from chorus.llm.types import BudgetExceeded
from chorus.persona import PersonaSpec, Platform
from chorus.store import EVENTS_BLOCK_MS, Keys

if TYPE_CHECKING:  # annotations only: the CLI reads these models without a Redis client
    import redis.asyncio as aioredis

JobStatus = Literal["queued", "running", "done", "failed", "budget_exceeded"]
PostStatus = Literal["accepted", "rejected"]
JobSource = Literal["request", "schedule"]  # asked for (API, CLI, campaign) or due on a cadence
TERMINAL_JOB_STATUSES = ("done", "failed", "budget_exceeded")
# Why a job ended without finishing: budget_exceeded (the persona's daily budget would be passed),
# persona_deleted, persona_actor_died (its process kept dying), tiers_unavailable (every model tier
# failed), internal_error (a bug; the server log has the incident).
JobErrorCode = Literal[
    "budget_exceeded", "persona_deleted", "persona_actor_died", "tiers_unavailable", "internal_error"
]


def _day(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts or time.time(), UTC).strftime("%Y%m%d")


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex[:20]}"


# Ids and positions go into Redis keys and commands: the API checks each against one of these
# (and publishes them in its schema) before any reaches Redis. A ':' in an id would name another
# key (`job:<id>:events` is a stream), and XREAD refuses stream ids past 64 bits.
JOB_ID_PATTERN = r"^job_[A-Za-z0-9_-]{1,80}$"  # new_job_id(); a post's id is its job's id
EVENT_ID_PATTERN = r"^[0-9]{1,19}(-[0-9]{1,19})?$"  # a Redis stream id, each part under 2**64
# A page's last (created_at as repr(float), post id): digits only, not all that float() reads.
CURSOR_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,20})?(e[-+][0-9]{1,3})?:job_[A-Za-z0-9_-]{1,80}$"


def parse_cursor(cursor: str) -> tuple[float, str]:
    """The (score, post id) a cursor names; ValueError when it is not one this API handed out."""
    if re.fullmatch(CURSOR_PATTERN, cursor) is None:
        raise ValueError("not a cursor from a previous page")
    score, _, post_id = cursor.partition(":")
    return float(score), post_id


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
    error_code: JobErrorCode | None = Field(
        None, description="why the job did not finish, stable for programs (see `error` for people)"
    )
    error: str | None = Field(None, description="one line for people; details stay in the server log")
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
    # Spend next to the cost of posts: what was paid for posts that were stored but rejected, for
    # jobs that stored nothing (failed or over budget), and all spend no stored post accounts for
    # (those jobs, plus calls whose answer was lost with a crashed process and paid again).
    rejected_cost_usd: float = Field(0.0, description="cost of the stored posts that review rejected")
    spent_usd: float = Field(0.0, description="all model spend recorded for the persona")
    failed_spend_usd: float = Field(0.0, description="spend of jobs that ended without a post")
    unposted_spend_usd: float = Field(0.0, description="spend that no stored post's cost accounts for")


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
    # A JSON `true` or "12" is a client's mistake, not a count.
    followers: Integer = Field(ge=0, description="followers of the account now")
    impressions: Integer = Field(ge=0, description="times the persona's posts were shown in the period")
    engagements: Integer = Field(
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


# Delete a persona: its spec and index entries go; with a retention (ARGV[2] seconds) the spec and
# its engagement reports move aside, restorable until they expire. One script, so a restore or a
# re-create racing the delete sees all of it or none.
_DELETE_PERSONA = """
local spec = redis.call('GET', KEYS[1])
if not spec then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
local retain = tonumber(ARGV[2])
if retain > 0 then
  redis.call('SET', KEYS[6], spec, 'EX', retain)
  if redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('RENAME', KEYS[4], KEYS[7])
    redis.call('EXPIRE', KEYS[7], retain)
  else
    redis.call('DEL', KEYS[7])
  end
else
  redis.call('DEL', KEYS[4])
end
return 1
"""

# Undo a retained delete: -1 nothing retained, 0 the id is taken again, 1 restored.
_RESTORE_PERSONA = """
local spec = redis.call('GET', KEYS[6])
if not spec then
  return -1
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], spec)
redis.call('SADD', KEYS[2], ARGV[1])
local cadence = cjson.decode(spec)['cadence']
if type(cadence) == 'table' and cadence['autopost'] == true then
  redis.call('SADD', KEYS[3], ARGV[1])
end
if redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('RENAME', KEYS[7], KEYS[4])
  redis.call('PERSIST', KEYS[4])
  redis.call('SADD', KEYS[5], ARGV[1])
end
redis.call('DEL', KEYS[6])
return 1
"""

RestoreOutcome = Literal["restored", "taken", "gone"]


class PersonaRepo:
    """Persona specs, the index of their ids, and the index of those that post on their cadence
    (the scheduler reads only these, not every spec, each round)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r, self._k = client, keys
        self._create = client.register_script(_CREATE_PERSONA)
        self._delete = client.register_script(_DELETE_PERSONA)
        self._restore = client.register_script(_RESTORE_PERSONA)

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

    def _lifecycle_keys(self, persona_id: str) -> list[str]:
        return [
            self._k("persona", persona_id),
            self._k("personas"),
            self._k("personas", "autopost"),
            self._k("engagement", persona_id),
            self._k("engaged"),
            self._k("deleted", "persona", persona_id),
            self._k("deleted", "engagement", persona_id),
        ]

    async def delete(self, persona_id: str, retain_s: float = 0.0) -> bool:
        """Delete a persona and its engagement reports; False when it does not exist.

        With `retain_s` the spec and the reports are kept aside that long for `restore` (a later
        delete of the same id replaces them). Posts, their counters and spend are never touched.
        """
        keys = self._lifecycle_keys(persona_id)
        return bool(await self._delete(keys=keys, args=[persona_id, str(max(0, int(retain_s)))]))

    async def restore(self, persona_id: str) -> tuple[RestoreOutcome, PersonaSpec | None]:
        """Bring back a persona deleted within its retention, with its engagement reports."""
        outcome = int(await self._restore(keys=self._lifecycle_keys(persona_id), args=[persona_id]))
        if outcome == -1:
            return "gone", None
        if outcome == 0:
            return "taken", None
        return "restored", await self.get(persona_id)

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


# Deletes a post once and unindexes it; its entry in the recent-posts list (what novelty is checked
# against) goes too, so a deleted text no longer shapes new posts.
_DELETE_POST = """
if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('LREM', KEYS[4], 1, ARGV[2])
return 1
"""


def _recent_entry(post: Post) -> str:
    # Byte-identical between save and delete: LREM matches the stored string exactly.
    return json.dumps({"text": post.text, "topic": post.topic})


class PostRepo:
    def __init__(self, client: aioredis.Redis, keys: Keys, recent_window: int = 20) -> None:
        self._r, self._k = client, keys
        self._recent_window = recent_window
        self._save = client.register_script(_SAVE_POST)
        self._delete = client.register_script(_DELETE_POST)

    async def save(self, post: Post) -> bool:
        """Store a post; False when this job's post was already stored (a retried job)."""
        recent = _recent_entry(post)
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

    async def delete(self, post_id: str) -> bool:
        """Delete a post and its index entries; False when there is none.

        The persona's counters (posts, cost, tokens) stay: they record what was generated and
        paid for, which deleting the text does not undo.
        """
        post = await self.get(post_id)
        if post is None:
            return False
        deleted = await self._delete(
            keys=[
                self._k("post", post_id),
                self._k("posts"),
                self._k("posts", "persona", post.persona_id),
                self._k("recent", post.persona_id),
            ],
            args=[post_id, _recent_entry(post)],
        )
        return bool(deleted)

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
        skip_score = 0.0
        if cursor:
            skip_score, skip_id = parse_cursor(cursor)
            top = repr(skip_score)
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
                wanted = [(i, s) for i, s in wanted if not (s == skip_score and i >= skip_id)]
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
        cost = float(raw.get("cost_usd", 0))
        spent = float(raw.get("spent_usd", 0))
        return PersonaStats(
            persona_id=persona_id,
            posts=int(raw.get("posts", 0)),
            accepted=accepted,
            rejected=int(raw.get("rejected", 0)),
            cost_usd=cost,
            rejected_cost_usd=max(0.0, cost - accepted_cost),
            spent_usd=spent,
            failed_spend_usd=float(raw.get("failed_spend_usd", 0)),
            # Spend recorded before the ledger counted it (or by calls made without a ledger) is
            # not known: never show a negative remainder.
            unposted_spend_usd=max(0.0, spent - cost),
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


# Reservations: each paid call's worst case is held on the day's spend key under an id, with a
# lease and the process holding it, in the persona's `reservations` hash (JSON records, read in
# Lua with cjson). A call that dies unsettled (its process killed mid-call) would otherwise
# leave its worst case on the ledger for good: an expired lease, or a restart of the process that
# held it, gives the amount back. `reservations` (a set) indexes the personas with any open.
_RESERVATION_FNS = """
local function release(hash, field, raw)
  local r = cjson.decode(raw)
  redis.call('HDEL', hash, field)
  if redis.call('EXISTS', r.key) == 1 then
    redis.call('INCRBYFLOAT', r.key, '-' .. r.amount)
  end
end
local function sweep(hash, now, holder)
  local released = 0
  local all = redis.call('HGETALL', hash)
  for i = 1, #all, 2 do
    local r = cjson.decode(all[i + 1])
    if tonumber(r.expires) <= now or (holder ~= '' and r.holder == holder) then
      release(hash, all[i], all[i + 1])
      released = released + 1
    end
  end
  return released
end
local function unindex(hash, index, persona)
  if redis.call('HLEN', hash) == 0 then
    redis.call('SREM', index, persona)
  end
end
"""

# Reserve only if the worst case still fits the budget; both sides run inside Redis, so
# concurrent jobs of one persona can never reserve past it together. Expired leases go first, so
# a dead call's hold never refuses a live one.
# KEYS: spend key, reservations hash, index. ARGV: amount, budget, id, record, now, persona.
_RESERVE = _RESERVATION_FNS + """
sweep(KEYS[2], tonumber(ARGV[5]), '')
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if spent + amount > tonumber(ARGV[2]) + 1e-12 then
  unindex(KEYS[2], KEYS[3], ARGV[6])
  return {0, tostring(spent)}
end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 172800)
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[2], 172800)
redis.call('SADD', KEYS[3], ARGV[6])
return {1, tostring(spent)}
"""

# Replace a reservation by what the call really cost. One already given back (its lease ran out
# or its holder restarted before the answer came) is charged in full: the call was made.
# Lifetime spend (and the job's, when the call was for a job) is counted here, where it is known.
# KEYS: reservations hash, today's spend key, stats hash, job spend key, index.
# ARGV: id, actual, '1' when there is a job, persona.
_SETTLE = _RESERVATION_FNS + """
local actual = tonumber(ARGV[2])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local r = cjson.decode(raw)
  redis.call('HDEL', KEYS[1], ARGV[1])
  if ARGV[2] ~= r.amount and redis.call('EXISTS', r.key) == 1 then
    redis.call('INCRBYFLOAT', r.key, ARGV[2])
    redis.call('INCRBYFLOAT', r.key, '-' .. r.amount)
  end
  unindex(KEYS[1], KEYS[5], ARGV[4])
elseif actual > 0 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], 172800)
end
if actual > 0 then
  redis.call('HINCRBYFLOAT', KEYS[3], 'spent_usd', ARGV[2])
  if ARGV[3] == '1' then
    redis.call('INCRBYFLOAT', KEYS[4], ARGV[2])
    redis.call('EXPIRE', KEYS[4], 604800)
  end
end
return 1
"""

# Give back every reservation of one persona whose lease ran out or whose holder is named.
# KEYS: reservations hash, index. ARGV: now, holder ('' for leases only), persona.
_SWEEP = _RESERVATION_FNS + """
local released = sweep(KEYS[1], tonumber(ARGV[1]), ARGV[2])
unindex(KEYS[1], KEYS[2], ARGV[3])
return released
"""

# A job that ended without a post: move what it spent into the persona's failed-job spend, once.
_CHARGE_FAILED_JOB = """
local spent = redis.call('GET', KEYS[1])
if spent then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBYFLOAT', KEYS[2], 'failed_spend_usd', spent)
  return spent
end
return '0'
"""

# Long enough for a call with all its retries at the router's default timeout; a live call past
# it is still charged in full when it settles.
DEFAULT_LEASE_S = 300.0


class Reservation(BaseModel):
    """A paid call's worst case, held on a persona's ledger until the call settles."""

    id: str
    persona_id: str
    amount_usd: float
    expires_at: float
    holder: str
    job_id: str | None


def budget_resets_at(now: float | None = None) -> datetime:
    """When today's spend ledgers start over: the next midnight UTC."""
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC).date()
    return datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)


def usd(amount: float) -> str:
    """Dollars with three significant digits however small ($0.000123, not $0.0001), no exponent."""
    if amount <= 0:
        return "$0.00"
    decimals = min(12, max(2, 2 - math.floor(math.log10(amount))))
    return f"${amount:.{decimals}f}"


def budget_exceeded_message(exc: BudgetExceeded, now: float | None = None) -> str:
    """One line for a job stopped by its budget: what was spent, of what, and when it resets."""
    resets = budget_resets_at(now)
    return (
        f"persona {exc.persona_id!r} has spent {usd(exc.spent_usd)} of its {usd(exc.budget_usd)} "
        f"daily budget and the next model call could cost up to {usd(exc.needed_usd)}; "
        f"the budget resets at {resets:%Y-%m-%d %H:%M} UTC"
    )


class SpendLedger:
    """A persona's spend for today (UTC) in Redis; implements the router's SpendGuard.

    `job_id` names the job the calls are for (its spend is then counted per job), `holder` the
    process making them (so a restart of that process can release what its dead calls held),
    `lease_s` how long a reservation may stay unsettled before it is given back.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        persona_id: str,
        budget_usd: float,
        *,
        job_id: str | None = None,
        holder: str = "",
        lease_s: float = DEFAULT_LEASE_S,
    ):
        self._r, self._k = client, keys
        self.persona_id = persona_id
        self.budget_usd = budget_usd
        self.job_id = job_id
        self.holder = holder
        self.lease_s = lease_s
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._sweep = client.register_script(_SWEEP)
        self._charge_failed = client.register_script(_CHARGE_FAILED_JOB)

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

    def _reservations(self) -> str:
        return self._k("reservations", self.persona_id)

    def _job_key(self, job_id: str) -> str:
        return self._k("jobspend", job_id)

    async def spent_today(self) -> float:
        # Giving back reservations leaves float dust: a ledger is never below zero.
        return max(0.0, float(await self._r.get(self._key()) or 0))

    async def reserve(self, amount_usd: float) -> str:
        """Hold the call's worst case; returns the reservation's id for `settle`."""
        reservation = uuid.uuid4().hex
        now = time.time()
        record = json.dumps(
            {
                # As text, the way Redis adds it: Lua numbers would round it to 14 digits.
                "amount": repr(amount_usd),
                "key": self._key(),
                "expires": now + self.lease_s,
                "holder": self.holder,
                "job": self.job_id,
            }
        )
        ok, spent = await self._reserve(
            keys=[self._key(), self._reservations(), self._k("reservations")],
            args=[repr(amount_usd), repr(self.budget_usd), reservation, record, repr(now), self.persona_id],
        )
        if not int(ok):
            raise BudgetExceeded(self.persona_id, float(spent), self.budget_usd, amount_usd)
        return reservation

    async def settle(self, reservation: str, actual_usd: float) -> None:
        """Replace the reservation by the call's real cost (0 for a call that failed unpaid)."""
        job_key = self._job_key(self.job_id) if self.job_id else self._k("jobspend", "-")
        await self._settle(
            keys=[
                self._reservations(),
                self._key(),
                self._k("stats", self.persona_id),
                job_key,
                self._k("reservations"),
            ],
            args=[reservation, repr(actual_usd), "1" if self.job_id else "0", self.persona_id],
        )

    async def outstanding(self) -> list[Reservation]:
        """The reservations not settled yet (calls in flight, or dead ones not yet given back)."""
        rows: dict[bytes, bytes] = await self._r.hgetall(self._reservations())  # type: ignore[assignment]
        out = []
        for rid, raw in rows.items():
            r = json.loads(raw)
            out.append(
                Reservation(
                    id=rid.decode(),
                    persona_id=self.persona_id,
                    amount_usd=r["amount"],
                    expires_at=r["expires"],
                    holder=r["holder"],
                    job_id=r["job"],
                )
            )
        return out

    async def release_expired(self, now: float | None = None) -> int:
        """Give back the reservations whose lease ran out; returns how many."""
        return await release_reservations(self._r, self._k, [self.persona_id], now=now)

    async def charge_failed_job(self, job_id: str) -> float:
        """Count what a job that stored no post spent as failed-job spend (once); returns it."""
        spent = await self._charge_failed(keys=[self._job_key(job_id), self._k("stats", self.persona_id)])
        return float(spent)

    async def job_spend(self, job_id: str) -> float:
        """What the job's model calls have cost so far."""
        return float(await self._r.get(self._job_key(job_id)) or 0)


async def release_reservations(
    client: aioredis.Redis,
    keys: Keys,
    persona_ids: list[str] | None = None,
    *,
    holder: str = "",
    now: float | None = None,
) -> int:
    """Give back the reservations of dead calls: those past their lease and, when `holder` is
    given, every one that process held (it restarted: none of its calls is still running).
    Covers the named personas, or every persona with an open reservation; returns how many."""
    if persona_ids is None:
        members: set[bytes] = await client.smembers(keys("reservations"))  # type: ignore[assignment]
        persona_ids = sorted(m.decode() for m in members)
    sweep = client.register_script(_SWEEP)
    now = time.time() if now is None else now
    released = 0
    for persona_id in persona_ids:
        released += int(
            await sweep(
                keys=[keys("reservations", persona_id), keys("reservations")],
                args=[repr(now), holder, persona_id],
            )
        )
    return released


def take_over_reservations(client: redis.Redis, keys: Keys, role: str, holder: str) -> int:
    """Make `holder` the process playing `role` (one per role, e.g. a namespace's model gateway)
    and give back every reservation the previous holder of the role left: that process is gone,
    so none of its calls will settle. Synchronous, for a Ray actor's `__init__`; returns how many."""
    previous: bytes | None = client.getset(keys("holder", role), holder)  # type: ignore[assignment]
    if previous is None:
        return 0
    members: set[bytes] = client.smembers(keys("reservations"))  # type: ignore[assignment]
    sweep = client.register_script(_SWEEP)
    now = time.time()
    released = 0
    for persona_id in sorted(m.decode() for m in members):
        released += int(
            sweep(
                keys=[keys("reservations", persona_id), keys("reservations")],
                args=[repr(now), previous.decode(), persona_id],
            )
        )
    return released
