"""The directory: activates persona actors on first use and passivates idle ones.

Thousands of personas can be defined while only the busy ones hold a process: at most
`fleet.max_active_personas` actors live at once; when the cap is reached the least recently used
idle actor is stopped first, and jobs wait for a slot when every active actor is busy.

It is also the fleet's one scheduler: it queues the posts of autoposting personas as their
cadence slots come due, and publishes the fleet-wide gauges (Redis health, queue depth, audience).

Ray restarts the directory when its process dies, rerunning `__init__`; the directory then starts
itself again (its loops, and every job Redis holds as unfinished), so nothing outside has to.
Persona actors are detached, so a directory's death does not kill the jobs they are running: the
restarted directory adopts them, and a job re-submitted to the actor already running it waits for
that run and returns its outcome instead of running twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from actors.gateway import ray_cause
from actors.persona import PersonaActor
from chorus import metrics
from chorus.cadence import due_slots
from chorus.models import TERMINAL_JOB_STATUSES, Audience, JobErrorCode, new_job_id
from chorus.settings import Settings
from chorus.store.client import async_redis
from chorus.store.engagement import EngagementRepo
from chorus.store.jobs import JobRepo
from chorus.store.keys import keys_for
from chorus.store.personas import PersonaRepo
from chorus.store.posts import PostRepo
from chorus.store.schedule import ScheduleRepo
from chorus.store.spend import SpendLedger, release_reservations

log = logging.getLogger(__name__)

DIRECTORY_NAME = "chorus-directory"
HOUSEKEEPING_INTERVAL_S = 5.0
_BACKGROUND: set[asyncio.Task[None]] = set()


@dataclass
class _Active:
    handle: ActorHandle
    in_flight: int = 0
    last_used: float = 0.0


def persona_actor_name(persona_id: str) -> str:
    return f"persona:{persona_id}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Directory:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cap = settings.fleet.max_active_personas
        self.idle_s = settings.fleet.idle_passivate_s
        self.redis = async_redis(settings)
        keys = keys_for(settings)
        self.jobs = JobRepo(self.redis, keys, settings.store)
        self.engagement = EngagementRepo(self.redis, keys)
        self.posts = PostRepo(self.redis, keys, settings.fleet.recent_posts_window)
        self.personas = PersonaRepo(self.redis, keys)
        self.slots = ScheduleRepo(self.redis, keys, settings.store)
        self._keys = keys
        self.scheduler: asyncio.Task[None] | None = None
        self.active: OrderedDict[str, _Active] = OrderedDict()  # least recently used first
        self.changed = asyncio.Condition()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.housekeeping: asyncio.Task[None] | None = None
        self.activations = 0
        self.peak_active = 0
        self._started = False
        # __init__ cannot await, and runs again on every restart: a call to itself, queued now
        # and run as soon as the actor takes calls, starts the loops and resumes the jobs.
        self._self_start = ray.get_runtime_context().current_actor.start.remote()

    async def start(self) -> int:
        """Begin housekeeping and scheduling, and resume every job left unfinished by a previous
        directory; returns how many. Runs once per process (the actor calls it on itself)."""
        if self._started:
            return 0
        self._started = True
        self._adopt_persona_actors()
        pending = await self.jobs.pending()
        for job_id, _ in pending:
            job = await self.jobs.get(job_id)
            if job is not None and job.status not in TERMINAL_JOB_STATUSES:
                await self.submit(job_id, job.persona_id)
        if pending:
            log.warning("directory started: resumed %d unfinished job(s)", len(pending))
        # After the resumed jobs hold their actors: an adopted actor still running one of them
        # must not look idle to the first passivation round.
        self.housekeeping = asyncio.create_task(self._housekeeping())
        if self.settings.fleet.schedule_interval_s > 0:
            self.scheduler = asyncio.create_task(self._schedule_loop())
        return len(pending)

    def _adopt_persona_actors(self) -> None:
        """Take over the persona actors a previous directory left running (they are detached):
        they count against the cap and are passivated like any other once idle."""
        prefix = persona_actor_name("")
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if entry["namespace"] != self.settings.ray_namespace or not name.startswith(prefix):
                continue
            try:
                handle = ray.get_actor(name, namespace=self.settings.ray_namespace)
            except ValueError:
                continue  # gone meanwhile
            self.active[name.removeprefix(prefix)] = _Active(handle=handle, last_used=time.monotonic())
        if self.active:
            log.warning("directory started: adopted %d running persona actor(s)", len(self.active))
            metrics.set_gauge("chorus_active_personas", len(self.active))

    async def submit(self, job_id: str, persona_id: str) -> None:
        if job_id not in self.running:
            self.running[job_id] = asyncio.create_task(self._run(job_id, persona_id))

    async def _run(self, job_id: str, persona_id: str) -> None:
        entry = await self._acquire(persona_id)
        try:
            await entry.handle.run_job.remote(job_id)
        except RayActorError as exc:
            # Restarts and retries are exhausted: record it rather than leave the job queued. The
            # error's text (pid, address, actor id) is for the log only.
            log.error("persona actor %s died running %s: %s", persona_id, job_id, exc)
            await self._fail(
                job_id,
                persona_id,
                "persona_actor_died",
                "the persona's process kept dying while running this job; generate the post again",
            )
        except Exception as exc:
            # The full remote traceback goes to the log; the job gets a code and one line.
            log.error("job %s for %s raised %s: %s", job_id, persona_id, type(ray_cause(exc)).__name__, exc)
            await self._fail(
                job_id,
                persona_id,
                "internal_error",
                f"the job failed unexpectedly; the server log has the details (job {job_id})",
            )
        finally:
            async with self.changed:
                entry.in_flight -= 1
                entry.last_used = time.monotonic()
                self.changed.notify_all()
            self.running.pop(job_id, None)

    async def _fail(self, job_id: str, persona_id: str, code: JobErrorCode, message: str) -> None:
        """End a job the persona actor could not: unless it ended meanwhile (or is gone)."""
        job = await self.jobs.get(job_id)
        if job is None or job.status in TERMINAL_JOB_STATUSES:
            return
        await SpendLedger(self.redis, self._keys, persona_id, 0.0).charge_failed_job(job_id)
        await self.jobs.update(
            job_id, status="failed", finished_at=time.time(), error_code=code, error=message
        )
        await self.jobs.emit(job_id, "end", {"status": "failed", "error_code": code, "error": message})

    async def _acquire(self, persona_id: str) -> _Active:
        async with self.changed:
            while True:
                entry = self.active.get(persona_id)
                if entry is not None:
                    entry.in_flight += 1
                    self.active.move_to_end(persona_id)
                    return entry
                if len(self.active) < self.cap:
                    return self._activate(persona_id)
                idle = next((pid for pid, e in self.active.items() if e.in_flight == 0), None)
                if idle is not None:
                    await self._passivate(idle, reason="lru")
                    continue
                await self.changed.wait()

    def _activate(self, persona_id: str) -> _Active:
        # Detached: a persona's running job outlives a directory that dies. get_if_exists: one a
        # dead directory left that this one has not adopted yet is taken over, not duplicated.
        handle = PersonaActor.options(  # type: ignore[attr-defined]
            name=persona_actor_name(persona_id),
            namespace=self.settings.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
        ).remote(persona_id, self.settings)
        entry = _Active(handle=handle, in_flight=1, last_used=time.monotonic())
        self.active[persona_id] = entry
        self.activations += 1
        self.peak_active = max(self.peak_active, len(self.active))
        metrics.inc("chorus_activations_total")
        metrics.set_gauge("chorus_active_personas", len(self.active))
        return entry

    async def _passivate(self, persona_id: str, reason: str) -> None:
        entry = self.active.pop(persona_id)
        ray.kill(entry.handle, no_restart=True)
        # Wait until the process is gone, so the cap bounds live processes, not just handles.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                await entry.handle.ping.remote()
            except RayActorError:
                break
            await asyncio.sleep(0.05)
        metrics.inc("chorus_passivations_total", reason=reason)
        metrics.set_gauge("chorus_active_personas", len(self.active))

    async def _housekeeping(self) -> None:
        while True:
            try:
                await self.passivate_idle()
                # Reservations of calls that died without settling, past their lease.
                await release_reservations(self.redis, self._keys)
                await self._record_health()
                await self._record_audience()
            except Exception:
                log.exception("directory housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)

    async def _schedule_loop(self) -> None:
        while True:
            try:
                await self.schedule_due()
            except Exception:
                log.exception("scheduling due posts failed")
            await asyncio.sleep(self.settings.fleet.schedule_interval_s)

    async def schedule_due(self, now: float | None = None) -> list[str]:
        """Queue a job for every cadence slot of an autoposting persona that has come due.

        Each slot is claimed in Redis before its job is queued, so a slot is queued once however
        often this runs (or restarts). A persona whose budget is spent for today gets no job.
        Returns the ids of the jobs queued.
        """
        now = time.time() if now is None else now
        queued: list[str] = []
        for spec in await self.personas.autoposting():
            slots = due_slots(spec.cadence, now, self.settings.fleet.schedule_catch_up_s)
            if not slots:
                continue
            ledger = SpendLedger.for_persona(self.redis, self._keys, spec, self.settings)
            if await ledger.exhausted():
                continue
            for slot in slots:
                job_id = new_job_id()
                if await self.slots.claim(spec.id, slot.key, job_id):
                    await self.jobs.create(spec.id, source="schedule", job_id=job_id)
                    await self.submit(job_id, spec.id)
                    queued.append(job_id)
        return queued

    async def forget(self, persona_id: str) -> bool:
        """Stop a deleted persona's actor: now when idle, else once its running jobs end (in the
        background, so the delete does not wait for them). False when it was not active."""
        entry = self.active.get(persona_id)
        if entry is None:
            return False

        async def passivate_when_idle() -> None:
            async with self.changed:
                while (current := self.active.get(persona_id)) is entry and entry.in_flight:
                    await self.changed.wait()
                # A new job may have activated a fresh actor meanwhile (the persona restored).
                if current is entry:
                    await self._passivate(persona_id, reason="deleted")
                self.changed.notify_all()

        if entry.in_flight:
            # Held until done: the event loop keeps only a weak reference to a task.
            task = asyncio.create_task(passivate_when_idle())
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)
        else:
            await passivate_when_idle()
        return True

    async def passivate_idle(self, older_than_s: float | None = None) -> list[str]:
        limit = self.idle_s if older_than_s is None else older_than_s
        now = time.monotonic()
        async with self.changed:
            idle = [p for p, e in self.active.items() if e.in_flight == 0 and now - e.last_used >= limit]
            for persona_id in idle:
                await self._passivate(persona_id, reason="idle")
            self.changed.notify_all()
        return idle

    async def _record_health(self) -> None:
        started = time.perf_counter()
        try:
            await self.redis.ping()
            info = await self.redis.info("memory")
        except Exception:
            metrics.set_gauge("chorus_redis_up", 0)
            return
        metrics.set_gauge("chorus_redis_up", 1)
        metrics.set_gauge("chorus_redis_ping_seconds", time.perf_counter() - started)
        metrics.set_gauge("chorus_redis_used_memory_bytes", float(info.get("used_memory", 0)))
        metrics.set_gauge("chorus_job_queue_depth", await self.jobs.pending_count())
        metrics.set_gauge("chorus_active_personas", len(self.active))

    async def _record_audience(self) -> None:
        """Publish the platforms' engagement reports as gauges, from this one process.

        The reports live in Redis (whoever reports them, the API stores them); publishing them
        here, every housekeeping round, keeps one series per persona and platform and keeps cost
        per follower current as spend grows between reports.
        """
        reports = await self.engagement.latest_for(await self.engagement.reported_personas())
        costs = await self.posts.lifetime_costs(list(reports))
        for persona_id, engagements in reports.items():
            for report in engagements:
                tags = {"persona": persona_id, "platform": report.platform.value}
                metrics.set_gauge("chorus_followers", report.followers, **tags)
                if report.engagement_rate is not None:
                    metrics.set_gauge("chorus_engagement_rate", report.engagement_rate, **tags)
            cost_per_follower = Audience.from_reports(engagements, costs[persona_id]).cost_per_follower_usd
            if cost_per_follower is not None:
                metrics.set_gauge("chorus_cost_per_follower_usd", cost_per_follower, persona=persona_id)

    async def status(self) -> dict[str, object]:
        return {
            "active": list(self.active),
            "in_flight": {p: e.in_flight for p, e in self.active.items() if e.in_flight},
            "jobs_running": len(self.running),
            "cap": self.cap,
            "activations": self.activations,
            "peak_active": self.peak_active,
        }

    async def ping(self) -> bool:
        return True


def get_directory(settings: Settings) -> ActorHandle:
    """The fleet's directory, created on first use; it outlives the driver that created it."""
    handle: ActorHandle = Directory.options(  # type: ignore[attr-defined]
        name=DIRECTORY_NAME,
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote(settings)
    return handle
