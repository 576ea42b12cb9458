"""The Python API the rest of Chorus (HTTP API, CLI, campaigns) uses to run the fleet.

Reads go straight to Redis; work goes to the directory, which routes it to persona actors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import redis.asyncio as aioredis
from ray.actor import ActorHandle

from actors.directory import get_directory
from actors.gateway import get_gateway
from actors.publisher import get_publisher
from chorus import metrics
from chorus.accounts import AccountInput, AccountService, CredentialsInput
from chorus.cadence import local_day, slots_on
from chorus.errors import (
    BudgetExceeded,
    EditBreaksRules,
    IllegalTransition,
    NothingToRestore,
    PersonaExists,
    PlatformNotUsed,
    UnknownJob,
    UnknownPersona,
    UnknownPost,
)
from chorus.lifecycle import ALLOWED_MOVES, LifecycleState, check_move
from chorus.llm.pricing import PriceTable, first_endpoint
from chorus.models import (
    TERMINAL_JOB_STATUSES,
    Account,
    Audience,
    Engagement,
    EngagementReport,
    InboxQuery,
    Job,
    JobEvent,
    PersonaStats,
    Post,
    PostHistory,
    PostPage,
    PostQuery,
    Schedule,
    ScheduledSlot,
)
from chorus.persona import PLATFORM_LIMITS, PersonaSpec, Platform
from chorus.publishing.queue import PublishQueue
from chorus.publishing.text import PLATFORM_UNITS, length_in_unit
from chorus.settings import Settings
from chorus.store.client import async_redis
from chorus.store.engagement import EngagementRepo
from chorus.store.jobs import JobRepo
from chorus.store.keys import keys_for
from chorus.store.outbox import OutboxRepo
from chorus.store.personas import PersonaRepo
from chorus.store.posts import PostRepo
from chorus.store.schedule import ScheduleRepo
from chorus.store.spend import SpendLedger
from graphs.checkpoint import RedisCheckpointSaver
from graphs.content.nodes.hook import HOOK_MAX_TOKENS
from graphs.content.nodes.review import review_post
from graphs.content.prompts import hook_messages


async def _stop(task: asyncio.Future[None]) -> None:
    """Cancel `task` until it is done (a cancellation redis-py swallowed is sent again)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


class Fleet:
    def __init__(self, settings: Settings, client: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or async_redis(settings)
        keys = keys_for(settings)
        self._keys = keys
        self.personas = PersonaRepo(self.redis, keys)
        self.jobs = JobRepo(self.redis, keys, settings.store)
        self.post_repo = PostRepo(self.redis, keys, settings.fleet.recent_posts_window)
        self.engagement = EngagementRepo(self.redis, keys)
        self.slots = ScheduleRepo(self.redis, keys, settings.store)
        self.outbox = OutboxRepo(self.redis, keys)
        self.publish_queue = PublishQueue(self.post_repo, self.outbox, settings.publishing)
        self.accounts = AccountService(settings, self.redis)
        self._checkpoints = RedisCheckpointSaver(aclient=self.redis, key_prefix=keys("ckpt"))
        self._directory: ActorHandle | None = None
        self._prices = PriceTable(settings.pricing)

    async def directory(self) -> ActorHandle:
        if self._directory is None:
            await get_gateway(self.settings).ping.remote()
            handle = get_directory(self.settings)
            await handle.start.remote()
            # The publisher drains the outbox on its own and starts itself (its __init__ queues its
            # start): not awaited, so a fleet's first call (and /readyz) never waits on its process.
            get_publisher(self.settings)
            self._directory = handle
        return self._directory

    async def apply(self, spec: PersonaSpec) -> bool:
        """Create or replace a persona; its next job uses the new spec. True when it was new."""
        return await self.personas.put(spec)

    async def create(self, spec: PersonaSpec) -> bool:
        """Create a persona whose id is free; False, and nothing changed, when the id is taken."""
        return await self.personas.create(spec)

    async def delete(self, persona_id: str) -> None:
        """Delete a persona, restorable with its engagement history for
        `fleet.deleted_retention_days`; its actor is stopped (once its running jobs end)."""
        retain_s = self.settings.fleet.deleted_retention_days * 24 * 3600
        if not await self.personas.delete(persona_id, retain_s=retain_s):
            raise UnknownPersona(persona_id)
        directory = await self.directory()
        await directory.forget.remote(persona_id)

    async def restore(self, persona_id: str) -> PersonaSpec:
        """Bring back a persona deleted within the retention, with its engagement history."""
        outcome, spec = await self.personas.restore(persona_id)
        if outcome == "taken":
            raise PersonaExists(persona_id)
        if spec is None:
            raise NothingToRestore(persona_id, self.settings.fleet.deleted_retention_days)
        return spec

    async def delete_post(self, post_id: str) -> bool:
        """Delete a post; False when there is none. The persona's spend figures keep its cost."""
        return await self.post_repo.delete(post_id)

    async def report_engagement(self, persona_id: str, report: EngagementReport) -> Engagement:
        """Record what a platform reports of a persona's audience; the latest report counts."""
        spec = await self.persona(persona_id)
        platforms = [p.name.value for p in spec.platforms]
        if report.platform.value not in platforms:
            raise PlatformNotUsed(persona_id, report.platform.value, platforms)
        return await self.engagement.put(persona_id, report)

    async def engagements(self, persona_id: str) -> list[Engagement]:
        await self.persona(persona_id)
        return await self.engagement.latest(persona_id)

    async def persona(self, persona_id: str) -> PersonaSpec:
        spec = await self.personas.get(persona_id)
        if spec is None:
            raise UnknownPersona(persona_id)
        return spec

    async def find_persona(self, persona_id: str) -> PersonaSpec | None:
        """The persona's spec, or None when there is none (`persona` raises instead)."""
        return await self.personas.get(persona_id)

    async def list_personas(self) -> list[PersonaSpec]:
        return await self.personas.all()

    async def persona_count(self) -> int:
        return len(await self.personas.ids())

    async def post(self, post_id: str) -> Post | None:
        return await self.post_repo.get(post_id)

    async def budget_refusal(self, persona_id: str) -> BudgetExceeded:
        """The persona's budget as it stands, as the refusal of a new job's first model call."""
        spec = await self.persona(persona_id)
        ledger = self.ledger(spec)
        spent = await ledger.spent_today()
        return BudgetExceeded(persona_id, spent, ledger.budget_usd, self.first_call_usd(spec))

    async def ping_store(self) -> None:
        """Raises when the fleet's Redis does not answer."""
        await self.redis.ping()

    async def close(self) -> None:
        """Release the fleet's Redis connections and platform clients."""
        await self.accounts.aclose()
        await self.redis.aclose()

    def ledger(self, spec: PersonaSpec) -> SpendLedger:
        return SpendLedger.for_persona(self.redis, self._keys, spec, self.settings)

    def first_call_usd(self, spec: PersonaSpec) -> float:
        """The least a new job's first paid call (its hook) reserves on the persona's budget.

        The router's own worst case (chorus.llm.pricing) for the hook on the tier it tries first,
        on the persona's shortest topic: which topic the job's plan picks is not known yet, so a
        budget without room even for this one cannot start a post.
        """
        tier, model = first_endpoint(self.settings, spec.model_policy.hook)
        return min(
            self._prices.worst_case(tier, model, hook_messages(spec, topic), HOOK_MAX_TOKENS)
            for topic in spec.topics
        )

    async def generate(
        self,
        persona_id: str,
        count: int = 1,
        *,
        source_url: str | None = None,
        source_title: str | None = None,
    ) -> list[str]:
        """Queue `count` posts; returns their job ids at once.

        A persona whose budget cannot hold a new job's first model call is refused here, before
        any job is queued (such a job could only fail); one that reaches its budget mid-job
        stops that job with `budget_exceeded`.
        """
        spec = await self.persona(persona_id)
        ledger = self.ledger(spec)
        spent = await ledger.spent_today()
        first_call = self.first_call_usd(spec)
        # The same comparison (and float slack) as the ledger's reservation script.
        if spent + first_call > ledger.budget_usd + 1e-12:
            raise BudgetExceeded(persona_id, spent, ledger.budget_usd, first_call)
        directory = await self.directory()
        job_ids: list[str] = []
        for _ in range(count):
            job = await self.jobs.create(persona_id, source_url=source_url, source_title=source_title)
            await directory.submit.remote(job.id, persona_id)
            job_ids.append(job.id)
        return job_ids

    async def schedule(self, persona_id: str, now: float | None = None) -> Schedule:
        """The persona's posting slots today (its local day) and the jobs queued for them."""
        spec = await self.persona(persona_id)
        cadence = spec.cadence
        now = time.time() if now is None else now
        today = local_day(cadence, now)
        slots = slots_on(cadence, today)
        jobs = await self.slots.jobs(persona_id, [slot.key for slot in slots])
        return Schedule(
            persona_id=persona_id,
            autopost=cadence.autopost,
            timezone=cadence.timezone,
            day=today,
            slots=[
                ScheduledSlot(at=datetime.fromtimestamp(slot.at, UTC), job_id=job_id)
                for slot, job_id in zip(slots, jobs, strict=True)
            ],
        )

    async def queue_depth(self) -> int:
        """Jobs submitted fleet-wide and not finished (queued or running)."""
        return await self.jobs.pending_count()

    async def job(self, job_id: str) -> Job | None:
        return await self.jobs.get(job_id)

    def events(self, job_id: str, after: str = "0") -> AsyncIterator[JobEvent]:
        """Every event of the job from the start (late subscribers miss nothing), then live ones."""
        return self.jobs.events(job_id, after=after)

    async def wait(self, job_id: str, timeout_s: float) -> Job:
        """The job once finished; raises TimeoutError when it is still running at the deadline.

        Waits on the job's event stream rather than polling, so it returns as the end is written.
        The deadline does not rely on cancelling the read: redis-py loses a cancellation that
        lands before its read starts (the read then runs until the job ends), so the wait returns
        at the deadline and the read is cancelled until it stops.
        """
        if timeout_s > 0:
            end = asyncio.ensure_future(self._end_of(job_id))
            try:
                await asyncio.wait({end}, timeout=timeout_s)
            finally:
                await _stop(end)
        job = await self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        if job.status not in TERMINAL_JOB_STATUSES:
            raise TimeoutError(f"job {job_id} is still {job.status} after {timeout_s:.3g}s")
        return job

    async def _end_of(self, job_id: str) -> None:
        # A job resumed after approval has ended before: only an end it is still at counts.
        after = "0"
        while True:
            async for event in self.jobs.events(job_id, after=after):
                after = event.seq
                if event.type == "end":
                    break
            else:
                return
            job = await self.jobs.get(job_id)
            if job is None or job.status in TERMINAL_JOB_STATUSES:
                return

    async def posts(self, query: PostQuery) -> PostPage:
        return await self.post_repo.page(query)

    async def stats(self, persona_id: str) -> PersonaStats:
        spec = await self.persona(persona_id)
        ledger = self.ledger(spec)
        stats = await self.post_repo.stats(persona_id, await ledger.spent_today(), ledger.budget_usd)
        audience = Audience.from_reports(await self.engagement.latest(persona_id), stats.cost_usd)
        return stats.model_copy(update=audience.model_dump())

    async def status(self) -> dict[str, object]:
        directory = await self.directory()
        result: dict[str, object] = await directory.status.remote()
        return result

    # --- the post lifecycle: inbox, approvals, publishing -------------------------------------

    async def get_post(self, post_id: str) -> Post:
        """The post; UnknownPost when there is none (`post` answers None instead)."""
        return await self._post(post_id)

    async def _post(self, post_id: str) -> Post:
        post = await self.post_repo.get(post_id)
        if post is None:
            raise UnknownPost(post_id)
        return post

    async def inbox(self, query: InboxQuery) -> list[Post]:
        """Posts waiting for approval, longest waiting first."""
        return await self.post_repo.inbox(query)

    async def history(self, post_id: str) -> PostHistory:
        return await self.post_repo.history(post_id)

    def check_text(self, spec: PersonaSpec, post: Post, text: str, recent: list[str]) -> list[str]:
        """What the persona's rules and the platform's length say of an edited text."""
        problems = review_post(spec, text, [t for t in recent if t != post.text])
        platform = Platform(post.platform)
        if platform in PLATFORM_UNITS:
            length, limit = length_in_unit(platform, text), PLATFORM_LIMITS[platform]
            if length > limit:
                unit = PLATFORM_UNITS[platform]
                problems.append(f"too long for {platform.value}: {length} {unit}, the limit is {limit}")
        return problems

    async def approve(
        self, post_id: str, actor: str, *, text: str | None = None, publish_at: float | None = None
    ) -> Post:
        """Approve a waiting post, optionally with edited text (reviewed against the persona's
        rules again: EditBreaksRules lists what fails, and nothing changes) and a publish time."""
        post = await self._post(post_id)
        check_move(post_id, post.state, "approved")
        updates: dict[str, object] = {}
        reason = "approved"
        if text is not None and text.strip() != post.text:
            text = text.strip()
            spec = await self.persona(post.persona_id)
            recent = [r["text"] for r in await self.post_repo.recent(spec.id)]
            problems = self.check_text(spec, post, text, recent)
            if problems:
                raise EditBreaksRules(post_id, problems)
            updates.update(text=text, revision=post.revision + 1, reasons=[])
            reason = "approved with edits"
        if publish_at is not None:
            updates["publish_at"] = publish_at
        moved = await self.post_repo.transition(
            post_id, "approved", actor=actor, reason=reason, updates=updates, expect=(post.state,)
        )
        metrics.inc("chorus_approvals_total", persona=moved.persona_id, decision="approve")
        await self._answer(moved, {"decision": "approve"})
        return moved

    async def reject(self, post_id: str, actor: str, reason: str) -> Post:
        post = await self._post(post_id)
        moved = await self.post_repo.transition(
            post_id, "rejected", actor=actor, reason=reason, expect=(post.state,)
        )
        await self.outbox.cancel(post_id)
        metrics.inc("chorus_approvals_total", persona=moved.persona_id, decision="reject")
        if post.state in ("pending_approval", "changes_requested"):
            await self._answer(moved, {"decision": "reject"})
        return moved

    async def request_changes(self, post_id: str, actor: str, feedback: str) -> Post:
        """Send a waiting post back with feedback: the persona's workflow writes a new draft
        from it, which comes back to the inbox."""
        post = await self._post(post_id)
        check_move(post_id, post.state, "changes_requested")
        if not await self._paused(post_id):
            raise IllegalTransition(
                post_id,
                post.state,
                "changes_requested",
                ["approved", "rejected"],
            )
        moved = await self.post_repo.transition(
            post_id,
            "changes_requested",
            actor=actor,
            reason=feedback,
            updates={"feedback": feedback},
            expect=("pending_approval",),
        )
        metrics.inc("chorus_approvals_total", persona=moved.persona_id, decision="request_changes")
        await self._answer(moved, {"decision": "request_changes", "feedback": feedback})
        return moved

    async def _paused(self, post_id: str) -> bool:
        return await self._checkpoints.aget_tuple({"configurable": {"thread_id": post_id}}) is not None

    async def _answer(self, post: Post, decision: dict[str, str]) -> None:
        """Resume the post's paused workflow with a reviewer's answer, in whichever persona actor
        the directory gives it. A workflow whose checkpoint expired (older than
        `store.approval_ttl_s`) is not resumed: an approved post is scheduled here instead."""
        if not await self._paused(post.id):
            if decision["decision"] == "approve":
                await self.publish_queue.schedule(post.id, await self.persona(post.persona_id))
            return
        await self.post_repo.set_decision(post.id, decision, self.settings.store.approval_ttl_s)
        if await self.jobs.get(post.id) is None:
            await self.jobs.create(post.persona_id, job_id=post.id)  # its record expired
        job = await self.jobs.requeue(post.id)
        directory = await self.directory()
        await directory.submit.remote(job.id, post.persona_id)

    async def retry(self, post_id: str, actor: str) -> Post:
        """A failed post back into the outbox, due now; it is written under the same record key,
        so a send that did go through is not made twice."""
        post = await self._post(post_id)
        check_move(post_id, post.state, "scheduled")
        if post.state != "failed":
            raise IllegalTransition(post_id, post.state, "scheduled", list(ALLOWED_MOVES[post.state]))
        spec = await self.persona(post.persona_id)
        return await self.publish_queue.schedule(
            post_id, spec, actor=actor, publish_at=time.time(), reason="retried"
        )

    async def unpublish(self, post_id: str, actor: str) -> Post:
        """Delete a published post from its platform; the post stays, `deleted`, with its history."""
        post = await self._post(post_id)
        check_move(post_id, post.state, "deleted")
        if post.published is not None and post.account_id is not None:
            ref = await self.accounts.ref(post.account_id)
            await self.accounts.adapter(ref.platform).delete(ref, post.published)
        return await self.post_repo.transition(
            post_id, "deleted", actor=actor, reason="removed from the platform"
        )

    async def wait_for_state(
        self, post_id: str, states: tuple[LifecycleState, ...], timeout_s: float, poll_s: float = 0.2
    ) -> Post:
        """The post once it is in one of `states`; TimeoutError naming its state at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            post = await self._post(post_id)
            if post.state in states:
                return post
            if time.monotonic() >= deadline:
                raise TimeoutError(f"post {post_id} is still {post.state} after {timeout_s:.3g}s")
            await asyncio.sleep(poll_s)

    # --- platform accounts ------------------------------------------------------------------

    async def add_account(self, persona_id: str, data: AccountInput) -> Account:
        return await self.accounts.add(persona_id, data)

    async def list_accounts(self, persona_id: str | None = None) -> list[Account]:
        if persona_id is not None:
            await self.persona(persona_id)
        return await self.accounts.repo.list(persona_id)

    async def account(self, persona_id: str, platform: Platform) -> Account:
        return await self.accounts.get(persona_id, platform)

    async def test_account(self, persona_id: str, platform: Platform) -> Account:
        return await self.accounts.test(persona_id, platform)

    async def reauth_account(self, persona_id: str, platform: Platform, data: CredentialsInput) -> Account:
        account = await self.accounts.reauth(persona_id, platform, data)
        await self._poke_publisher()
        return account

    async def remove_account(self, persona_id: str, platform: Platform) -> Account:
        return await self.accounts.remove(persona_id, platform)

    async def _poke_publisher(self) -> None:
        if self._directory is not None:
            await get_publisher(self.settings).poke.remote()
