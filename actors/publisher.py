"""The publisher: one restartable Ray actor that drains the outbox onto the platforms.

Nothing publishes inline in the workflow: approved posts wait in the outbox (Redis) until due.
Each round the publisher claims due items atomically with a lease (at most one in flight per
account), publishes them through the platform's adapter and records the outcome on the post.

What makes a retry safe is on the platform side, per adapter: Bluesky records go under a record
key derived from the post id with "create only if absent"; Mastodon gets the post id as its
Idempotency-Key; X looks for the post on the account's timeline after an ambiguous send. So a
publisher killed at any point (before the send, after the platform accepted but before the
outbox was updated) loses nothing: its lease is taken back and the item published again, which
the platform answers as already there.

Rate limits reschedule the item at the platform's reset time instead of sleeping; transient
faults back off exponentially with jitter up to `publishing.max_attempts`; permanent refusals
fail at once with the platform's message; lost credentials mark the account `needs_reauth` and
hold its posts until new credentials are added.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from typing import Any

import ray
from ray.actor import ActorHandle

from chorus import metrics
from chorus.accounts import AccountService
from chorus.lifecycle import SYSTEM_ACTOR
from chorus.models import OutboxItem
from chorus.publishing.protocol import (
    AmbiguousSend,
    NeedsReauth,
    PermanentError,
    PublishError,
    RateLimited,
    TransientError,
)
from chorus.settings import Settings
from chorus.store.client import async_redis
from chorus.store.keys import keys_for
from chorus.store.outbox import OutboxRepo
from chorus.store.posts import PostRepo

log = logging.getLogger(__name__)

PUBLISHER_NAME = "chorus-publisher"
# One publisher per cluster: its leases carry this holder name, so a restarted publisher takes
# back what its dead incarnation held at once instead of waiting for the leases to expire.
HOLDER = "publisher"
GAUGES_INTERVAL_S = 5.0


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with jitter for the `attempt`-th retry (1-based): half fixed, half
    random, so a burst of failures does not come back as a burst."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class PublisherWorker:
    """The publisher's logic, usable in-process (benchmarks, tests of one round)."""

    def __init__(self, settings: Settings, holder: str = HOLDER) -> None:
        self.settings = settings
        self.holder = holder
        self.redis = async_redis(settings)
        keys = keys_for(settings)
        self._keys = keys
        self.outbox = OutboxRepo(self.redis, keys)
        self.posts = PostRepo(self.redis, keys, settings.fleet.recent_posts_window)
        self.accounts = AccountService(settings, self.redis)
        self.published = 0
        self.rounds = 0

    async def take_back_leases(self) -> int:
        """Release every lease this publisher's earlier incarnations held."""
        return await self.outbox.release_holder(self.holder)

    async def run_once(self, now: float | None = None) -> int:
        """One round: expired leases back to due, claim what is due, publish it. Returns how many
        items were handled (any outcome)."""
        now = time.time() if now is None else now
        await self.outbox.expire_leases(now)
        items = await self.outbox.claim(
            self.holder, now, self.settings.publishing.lease_s, self.settings.publishing.claim_batch
        )
        # Claimed items are of distinct accounts (one in flight each): they go out concurrently.
        await asyncio.gather(*(self._handle(item) for item in items))
        self.rounds += 1
        return len(items)

    async def _handle(self, item: OutboxItem) -> None:
        try:
            await self._publish(item)
        except Exception:
            # A bug or an unreachable store: the lease expires and the item comes back.
            log.exception("publishing post %s failed unexpectedly", item.post_id)

    async def _publish(self, item: OutboxItem) -> None:
        post = await self.posts.get(item.post_id)
        if post is None or post.state not in ("scheduled", "publishing", "published"):
            # Deleted, rejected or cancelled since it was queued: nothing to send.
            await self.outbox.complete(item.post_id, self.holder)
            return
        if post.state == "published":
            # The platform accepted it and the post says so, but the outbox was not updated
            # before the last publisher died.
            await self.outbox.complete(item.post_id, self.holder)
            return
        if post.state == "scheduled":
            post = await self.posts.transition(
                item.post_id, "publishing", actor=SYSTEM_ACTOR, reason=f"attempt {item.attempts + 1}"
            )
        account = await self.accounts.repo.get(item.account_id)
        if account is None:
            await self._fail(item, "the account this post was scheduled on was removed")
            return
        if account.status == "needs_reauth":
            await self._wait_for_reauth(item, account.status_message or "credentials stopped working")
            return
        ref = await self.accounts.ref(item.account_id)
        adapter = self.accounts.adapter(item.platform)
        ambiguous = item.sending_since is not None
        await self.outbox.mark_sending(item.post_id, self.holder, time.time())
        platform = item.platform.value
        started = time.perf_counter()
        try:
            published = await adapter.publish(ref, item.request, after_ambiguous=ambiguous)
        except RateLimited as exc:
            await self._rate_limited(item, platform, exc)
            return
        except NeedsReauth as exc:
            metrics.inc(
                "chorus_publishes_total", persona=item.persona_id, platform=platform, outcome="needs_reauth"
            )
            await self.accounts.repo.mark_needs_reauth(item.account_id, exc.message)
            await self._wait_for_reauth(item, exc.message)
            return
        except TransientError as exc:
            await self._transient(item, platform, exc)
            return
        except (PermanentError, PublishError) as exc:
            metrics.inc(
                "chorus_publishes_total", persona=item.persona_id, platform=platform, outcome="failed"
            )
            await self._fail(item, exc.message)
            return
        finally:
            metrics.observe(
                "chorus_publish_latency_seconds", time.perf_counter() - started, platform=platform
            )
        await self._maybe_crash_after_send()
        await self.posts.transition(
            item.post_id,
            "published",
            actor=SYSTEM_ACTOR,
            reason="already on the platform (a retry found it)" if published.already_there else None,
            updates={"published": published.model_dump(mode="json"), "last_error": None},
        )
        await self.outbox.complete(item.post_id, self.holder)
        self.published += 1
        outcome = "already_published" if published.already_there else "published"
        metrics.inc("chorus_publishes_total", persona=item.persona_id, platform=platform, outcome=outcome)
        metrics.observe(
            "chorus_publish_delay_seconds", max(0.0, time.time() - item.due_at), platform=platform
        )

    async def _rate_limited(self, item: OutboxItem, platform: str, exc: RateLimited) -> None:
        now = time.time()
        retry_at = max(exc.retry_at, now)
        metrics.inc(
            "chorus_publishes_total", persona=item.persona_id, platform=platform, outcome="rate_limited"
        )
        metrics.observe("chorus_publish_rate_limit_wait_seconds", retry_at - now, platform=platform)
        reason = f"rate limited by {platform} until {time.strftime('%H:%M:%S', time.gmtime(retry_at))} UTC"
        await self._back_to_scheduled(item, reason, publish_at=retry_at)
        # Not an attempt: the platform asked for later, nothing failed.
        await self.outbox.reschedule(
            item.post_id, self.holder, retry_at, error=exc.message, count_attempt=False
        )

    async def _transient(self, item: OutboxItem, platform: str, exc: TransientError) -> None:
        attempts = item.attempts + 1
        kind = "ambiguous" if isinstance(exc, AmbiguousSend) else "transient"
        if attempts >= self.settings.publishing.max_attempts:
            metrics.inc(
                "chorus_publishes_total", persona=item.persona_id, platform=platform, outcome="failed"
            )
            await self._fail(item, f"gave up after {attempts} attempts: {exc.message}")
            return
        metrics.inc("chorus_publishes_total", persona=item.persona_id, platform=platform, outcome="retried")
        metrics.inc("chorus_publish_retries_total", platform=platform, reason=kind)
        pub = self.settings.publishing
        retry_at = time.time() + backoff_s(attempts, pub.backoff_base_s, pub.backoff_max_s)
        await self._back_to_scheduled(item, f"attempt {attempts} failed: {exc.message}", publish_at=retry_at)
        # An ambiguous send may have gone through: the next attempt checks the platform first.
        await self.outbox.reschedule(
            item.post_id,
            self.holder,
            retry_at,
            error=exc.message,
            count_attempt=True,
            keep_sending=isinstance(exc, AmbiguousSend),
        )

    async def _wait_for_reauth(self, item: OutboxItem, message: str) -> None:
        await self._back_to_scheduled(item, f"waiting for the account's credentials: {message}")
        await self.outbox.reschedule(
            item.post_id, self.holder, item.due_at, error=message, count_attempt=False
        )
        await self.outbox.hold_account(item.account_id, message)

    async def _back_to_scheduled(
        self, item: OutboxItem, reason: str, publish_at: float | None = None
    ) -> None:
        updates: dict[str, Any] = {"last_error": reason}
        if publish_at is not None:
            updates["publish_at"] = publish_at
        await self.posts.transition(
            item.post_id, "scheduled", actor=SYSTEM_ACTOR, reason=reason, updates=updates
        )

    async def _fail(self, item: OutboxItem, message: str) -> None:
        post = await self.posts.get(item.post_id)
        if post is not None and post.state == "publishing":
            await self.posts.transition(
                item.post_id, "failed", actor=SYSTEM_ACTOR, reason=message, updates={"last_error": message}
            )
        await self.outbox.fail(item.post_id, self.holder, message)

    async def _maybe_crash_after_send(self) -> None:
        """Fault injection for the tests that kill the publisher between the platform's
        acceptance and the outbox update: exits the process while `faults:publisher:exit_after_send`
        counts down. Reads nothing unless `publishing.fault_injection` is on."""
        if not self.settings.publishing.fault_injection:
            return
        left = await self.redis.decr(self._keys("faults", "publisher", "exit_after_send"))
        if left >= 0:
            log.warning("fault injection: exiting after the platform accepted (%d left)", left)
            os._exit(1)
        await self.redis.set(self._keys("faults", "publisher", "exit_after_send"), 0)

    async def record_gauges(self) -> None:
        now = time.time()
        metrics.set_gauge("chorus_outbox_depth", await self.outbox.depth())
        metrics.set_gauge(
            "chorus_outbox_oldest_due_age_seconds", await self.outbox.oldest_due_age(now) or 0.0
        )
        by_platform: dict[str, int] = {}
        for account in await self.accounts.repo.list():
            platform = account.platform.value
            by_platform.setdefault(platform, 0)
            if account.status == "needs_reauth":
                by_platform[platform] += 1
        for platform, count in by_platform.items():
            metrics.set_gauge("chorus_accounts_needing_reauth", count, platform=platform)
        for state, count in (await self.posts.count_by_state()).items():
            metrics.set_gauge("chorus_posts_by_state", count, state=state)

    async def aclose(self) -> None:
        await self.accounts.aclose()
        await self.redis.aclose()


async def publish_forever(worker: PublisherWorker, poll_interval_s: float, wake: asyncio.Event) -> None:
    """The publisher's loop: a round, then another at once while rounds find work, else a wait
    of `poll_interval_s` that `wake` cuts short (something entered the outbox)."""
    last_gauges = 0.0
    while True:
        try:
            handled = await worker.run_once()
            if time.monotonic() - last_gauges >= GAUGES_INTERVAL_S:
                await worker.record_gauges()
                last_gauges = time.monotonic()
        except Exception:
            log.exception("publisher round failed")
            handled = 0
        if handled:
            continue
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), poll_interval_s)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Publisher:
    """The cluster's publisher. Ray restarts it when its process dies; `__init__` then queues a
    call to its own `start()`, which takes back the dead incarnation's leases and resumes."""

    def __init__(self, settings: Settings) -> None:
        self.worker = PublisherWorker(settings)
        self.settings = settings
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._started = False
        self.reconstructed = ray.get_runtime_context().was_current_actor_reconstructed
        self._self_start = ray.get_runtime_context().current_actor.start.remote()

    async def start(self) -> int:
        """Take back earlier leases and start the loop; once per process. Returns the leases."""
        if self._started:
            return 0
        self._started = True
        taken = await self.worker.take_back_leases()
        if taken:
            log.warning("publisher started: took back %d leased post(s) of a previous publisher", taken)
        self._loop = asyncio.create_task(self._run())
        return taken

    async def _run(self) -> None:
        await publish_forever(self.worker, self.settings.publishing.poll_interval_s, self._wake)

    async def poke(self) -> None:
        """Something entered the outbox: look now rather than at the next poll."""
        self._wake.set()

    async def status(self) -> dict[str, object]:
        return {
            "published": self.worker.published,
            "rounds": self.worker.rounds,
            "restarted": self.reconstructed,
            "depth": await self.worker.outbox.depth(),
        }

    async def ping(self) -> bool:
        return True


def get_publisher(settings: Settings) -> ActorHandle:
    """The cluster's publisher, created on first use; it outlives the driver that created it."""
    handle: ActorHandle = Publisher.options(  # type: ignore[attr-defined]
        name=PUBLISHER_NAME,
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote(settings)
    return handle
