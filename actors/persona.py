"""One Ray actor per active persona, running the content workflow for that persona's jobs.

Nothing here must outlive the process: specs, jobs, events, posts, spend and workflow checkpoints
are all in Redis, so Ray may restart the actor (or the directory may passivate it) at any time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from actors.gateway import GatewayClient, get_gateway
from chorus import metrics
from chorus.errors import BudgetExceeded, TiersUnavailable, UnknownJob
from chorus.llm.types import ModelClient
from chorus.models import TERMINAL_JOB_STATUSES, JobErrorCode, JobStatus, budget_exceeded_message
from chorus.persona import PersonaSpec
from chorus.publishing.queue import PublishQueue, WorkflowLifecycle
from chorus.settings import Settings
from chorus.store.accounts import AccountRepo
from chorus.store.client import async_redis
from chorus.store.jobs import JobRepo
from chorus.store.keys import keys_for
from chorus.store.outbox import OutboxRepo
from chorus.store.personas import PersonaRepo
from chorus.store.posts import PostRepo
from chorus.store.spend import SpendLedger
from graphs.checkpoint import RedisCheckpointSaver
from graphs.content.graph import build_content_graph
from graphs.content.state import WorkflowContext

log = logging.getLogger(__name__)


class PersonaWorker:
    """The actor's logic, usable in-process too (benchmarks compare the two)."""

    def __init__(self, persona_id: str, settings: Settings, models: ModelClient) -> None:
        self.persona_id = persona_id
        self.settings = settings
        client = async_redis(settings)
        keys = keys_for(settings)
        self.models = models
        self.personas = PersonaRepo(client, keys)
        self.jobs = JobRepo(client, keys, settings.store)
        self.posts = PostRepo(client, keys, settings.fleet.recent_posts_window)
        self.redis, self.keys = client, keys
        # Only the public account records: credentials are opened by the publisher alone.
        self.accounts = AccountRepo(client, keys, None)
        self.queue = PublishQueue(self.posts, OutboxRepo(client, keys), settings.publishing)
        self.checkpoints = RedisCheckpointSaver(
            aclient=client, key_prefix=keys("ckpt"), ttl_s=settings.store.checkpoint_ttl_s
        )
        self.graph = build_content_graph(self.checkpoints)
        # One job at a time per persona: its recent posts, counters and spend stay consistent.
        self._lock = asyncio.Lock()

    async def run_job(self, job_id: str) -> JobStatus:
        async with self._lock:
            return await self._run(job_id)

    async def _run(self, job_id: str) -> JobStatus:
        job = await self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        if job.status in TERMINAL_JOB_STATUSES:
            return job.status  # a re-delivered call for a job that already finished
        spec = await self.personas.get(self.persona_id)
        if spec is None:
            return await self._end(
                job_id,
                "failed",
                error_code="persona_deleted",
                error=f"persona {self.persona_id!r} was deleted before the job ran",
            )
        now = time.time()
        if job.started_at is None:
            metrics.observe("chorus_job_wait_seconds", now - job.created_at)
        await self.jobs.update(
            job_id, status="running", started_at=job.started_at or now, attempts=job.attempts + 1
        )
        budget = spec.budget_usd(self.settings.budget.default_daily_usd)
        ledger = SpendLedger(self.redis, self.keys, spec.id, budget, job_id=job_id, store=self.settings.store)
        target = spec.primary_platform
        account = await self.accounts.get_for(spec.id, target.name)
        context = WorkflowContext(
            persona=spec,
            model=self.models,
            save_post=self.posts.save,
            recent=await self.posts.recent(spec.id),
            guard=ledger,
            max_rewrites=self.settings.fleet.max_rewrites,
            lifecycle=WorkflowLifecycle(self.queue, spec) if account is not None else None,
            account_id=account.id if account is not None else None,
            approval_required=target.requires_approval,
            source_url=job.source_url,
            source_title=job.source_title,
        )
        config: RunnableConfig = {"configurable": {"thread_id": job_id}}
        try:
            start = await self._start_input(job_id, spec, config)
            async for update in self.graph.astream(start, config, context=context, stream_mode="updates"):
                await self._node_events(job_id, spec.id, update)
        except BudgetExceeded as exc:
            metrics.inc("chorus_job_errors_total", persona=spec.id, kind="budget_exceeded")
            return await self._end(
                job_id,
                "budget_exceeded",
                error_code="budget_exceeded",
                error=budget_exceeded_message(exc),
                spend=exc.spent_usd,
                budget=exc.budget_usd,
            )
        except TiersUnavailable:
            # The message lists each tier's error (endpoints, bodies): the log gets it, not the job.
            log.exception("job %s for %s: every model tier failed", job_id, spec.id)
            metrics.inc("chorus_job_errors_total", persona=spec.id, kind="TiersUnavailable")
            return await self._end(
                job_id,
                "failed",
                error_code="tiers_unavailable",
                error=f"every model tier failed; the server log has each tier's error (job {job_id})",
            )
        except Exception as exc:
            log.exception("job %s for %s failed", job_id, spec.id)
            metrics.inc("chorus_job_errors_total", persona=spec.id, kind=type(exc).__name__)
            return await self._end(
                job_id,
                "failed",
                error_code="internal_error",
                error=f"the job failed unexpectedly; the server log has the details (job {job_id})",
            )
        finally:
            metrics.set_gauge("chorus_persona_spend_today_usd", await ledger.spent_today(), persona=spec.id)
            metrics.set_gauge("chorus_persona_daily_budget_usd", budget, persona=spec.id)
        post = await self.posts.get(job_id)
        if post is not None:
            if post.created_at >= now:  # stored by this run, not by an earlier one being resumed
                metrics.inc("chorus_posts_total", persona=spec.id, platform=post.platform, status=post.status)
                metrics.observe("chorus_post_cost_usd", post.cost_usd, persona=spec.id, status=post.status)
            await self.jobs.emit(job_id, "post", post.model_dump(mode="json"))
        paused = bool((await self.graph.aget_state(config)).next)
        await self.posts.clear_decision(job_id)
        if paused:
            # Waiting for a person: the checkpoint is what any actor resumes from, for as long
            # as the inbox keeps the post.
            await self.checkpoints.aexpire_thread(job_id, self.settings.store.approval_ttl_s)
            return await self._end(job_id, "done", post_id=job_id, awaiting="approval")
        await self.checkpoints.adelete_thread(job_id)
        return await self._end(job_id, "done", post_id=job_id)

    async def _start_input(self, job_id: str, spec: PersonaSpec, config: RunnableConfig) -> Any:
        """What the graph runs from: a fresh start; None to resume an attempt that got part of
        the way (paying for nothing that already finished); or the reviewer's answer to resume
        a workflow paused for approval."""
        if await self.checkpoints.aget_tuple(config) is None:
            return {"job_id": job_id}
        snapshot = await self.graph.aget_state(config)
        if not snapshot.interrupts:
            return None
        post = await self.posts.get(job_id)
        decision = await self.posts.decision(job_id)
        # The post moved first (the inbox's atomic step), then the answer was stored: an answer
        # left from an earlier round (the post waits again) must not resume this one.
        if post is None or decision is None or post.state == "pending_approval":
            return None
        return Command(resume=decision)

    async def _node_events(self, job_id: str, persona_id: str, update: dict[str, Any]) -> None:
        for node, delta in update.items():
            for rec in (delta or {}).get("records", []):
                metrics.observe(
                    "chorus_node_duration_seconds", rec.duration_s, persona=persona_id, node=rec.node
                )
                if rec.node == "rewrite":
                    metrics.inc("chorus_rewrites_total", persona=persona_id)
                await self.jobs.emit(job_id, "node", {"node": node, **rec.model_dump()})

    async def _end(
        self,
        job_id: str,
        status: JobStatus,
        error_code: JobErrorCode | None = None,
        error: str | None = None,
        **details: Any,
    ) -> JobStatus:
        post_id = details.pop("post_id", None)
        if post_id is None:
            # What a job without a post spent shows in the persona's stats, not in no figure.
            await SpendLedger(self.redis, self.keys, self.persona_id, 0.0).charge_failed_job(job_id)
        await self.jobs.update(
            job_id,
            status=status,
            finished_at=time.time(),
            error_code=error_code,
            error=error,
            post_id=post_id,
        )
        await self.jobs.emit(
            job_id, "end", {"status": status, "error_code": error_code, "error": error, **details}
        )
        return status


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class PersonaActor:
    """A persona's process. `max_task_retries` re-delivers `run_job` after a crash: safe, because
    a finished job returns its stored status and an unfinished one resumes from its checkpoint.
    A second `run_job` for the job it is running (a restarted directory re-submitting it) waits
    on the lock and then returns that run's outcome."""

    def __init__(self, persona_id: str, settings: Settings) -> None:
        self.worker = PersonaWorker(persona_id, settings, GatewayClient(get_gateway(settings)))
        self.reconstructed = ray.get_runtime_context().was_current_actor_reconstructed
        if self.reconstructed:
            log.warning("persona actor %s restarted; unfinished jobs resume from checkpoints", persona_id)

    async def run_job(self, job_id: str) -> JobStatus:
        return await self.worker.run_job(job_id)

    async def ping(self) -> bool:
        return self.reconstructed
