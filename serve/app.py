"""The Chorus HTTP API: a FastAPI ingress on Ray Serve, versioned under /v1, docs at /docs.

It only translates HTTP to the fleet (`actors/fleet.py`) and back: reads are the fleet's direct
Redis reads, work goes to the fleet's directory and persona actors.

No `from __future__ import annotations` here: FastAPI must see real types on the route
functions, or request bodies turn into query parameters.

`create_app` builds the plain FastAPI app; the Serve deployment wraps that same app, so the
benchmark can serve the very same handlers with bare uvicorn.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import ray
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, Path, Query, Response
from fastapi.responses import StreamingResponse
from ray import serve
from ray.serve import Application

from actors.fleet import Fleet, NothingToRestore, PersonaExists, PlatformNotUsed
from chorus.auth import ApiKey, KeyStore, LastAdminKey, role_allows
from chorus.llm.router import BudgetExceeded
from chorus.persona import PERSONA_ID_PATTERN, PersonaSpec
from chorus.settings import ApiSettings, Settings, load_settings
from chorus.state import (
    CURSOR_PATTERN,
    EVENT_ID_PATTERN,
    JOB_ID_PATTERN,
    TERMINAL_JOB_STATUSES,
    Engagement,
    EngagementReport,
    Job,
    JobEvent,
    PersonaStats,
    PostPage,
    PostStatus,
    Schedule,
)
from chorus.store import keys_for
from serve.auth import KEY_ID_PATTERN, Authenticate, Authorizer
from serve.errors import ApiError, GuardMiddleware, budget_error, install_error_handlers
from serve.schemas import (
    EngagementList,
    ErrorResponse,
    FleetStatus,
    GenerateRequest,
    GenerateResponse,
    Health,
    JobDetail,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeysPurged,
    PersonaList,
    Readiness,
    SseMessage,
)

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def _overloaded(settings: ApiSettings, why: str) -> ApiError:
    return ApiError(
        503,
        "overloaded",
        f"{why}; retry in {settings.retry_after_s}s",
        headers={"Retry-After": str(settings.retry_after_s)},
    )


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    # A time without a zone is UTC, like every time Chorus stores.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


# Every id in a path is checked against its pattern before it names a Redis key; one that does
# not match is answered as the resource's 404 (serve/errors.py), and the schema shows the pattern.
PersonaId = Annotated[str, Path(pattern=PERSONA_ID_PATTERN)]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN)]
PostId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="A post's id is its job's id.")]
KeyId = Annotated[str, Path(pattern=KEY_ID_PATTERN)]


def _check_budget_change(
    settings: Settings, key: ApiKey, spec: PersonaSpec, previous: PersonaSpec | None
) -> None:
    """Only an admin may set a daily budget above the ceiling; keeping one already set is fine."""
    budget, ceiling = spec.daily_budget_usd, settings.budget.editor_ceiling_usd
    if budget is None or budget <= ceiling or role_allows(key.role, "admin"):
        return
    if previous is not None and previous.daily_budget_usd == budget:
        return
    raise ApiError(
        403,
        "forbidden",
        f"daily_budget_usd: ${budget:g} is above budget.editor_ceiling_usd (${ceiling:g}); "
        f"setting it needs the admin role, the key has {key.role}",
        field="daily_budget_usd",
    )


async def _event_stream(events: AsyncIterator[JobEvent], keepalive_s: float) -> AsyncIterator[str]:
    """Job events as server-sent events, with a comment line whenever the job is quiet.

    A separate task reads Redis so that the keep-alive timer never cancels a blocking read
    half-way (which would cost the connection).
    """
    queue: asyncio.Queue[JobEvent | Exception | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
            await queue.put(None)
        except Exception as exc:
            await queue.put(exc)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive_s)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is None:
                return
            if isinstance(item, Exception):
                log.error("event stream failed: %r", item)
                failure = {"code": "internal_error", "message": "the event stream failed; reconnect"}
                yield SseMessage(event="error", data=json.dumps(failure)).encode()
                return
            yield SseMessage(id=item.seq, event=item.type, data=json.dumps(item.data)).encode()
    finally:
        task.cancel()


async def _within(awaitable: Awaitable[Any], timeout_s: float) -> Any:
    async def wait() -> Any:
        return await awaitable

    return await asyncio.wait_for(wait(), timeout_s)


def create_app(settings: Settings) -> FastAPI:
    """The API over one fleet; every route but the health checks and the docs needs a key."""
    # Up to max_ongoing_requests requests at once, each event stream in a blocking read: a pool
    # that size, which waits for a free connection rather than failing (redis-py caps a default
    # pool at 100 connections and raises beyond).
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis.url, max_connections=settings.api.max_ongoing_requests + 16
    )
    fleet = Fleet(settings, aioredis.Redis(connection_pool=pool))
    limits = settings.api
    key_store = KeyStore(fleet.redis, keys_for(settings))
    auth = Authorizer(key_store)
    viewer = Depends(auth.require("viewer"))
    editor = Depends(auth.require("editor"))
    admin = Depends(auth.require("admin"))
    http = httpx.AsyncClient(timeout=CHECK_TIMEOUT_S)
    sync_waits = 0

    async def warm_up() -> None:
        # Starting the directory (and what it starts) takes seconds on a cold cluster: do it now
        # rather than in the first request, so /readyz turns ready without a slow first answer.
        try:
            await fleet.directory()
        except Exception:
            log.exception("could not start the fleet's directory; /readyz will say so")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Only inside Ray (a Serve replica): elsewhere, creating an actor would start a Ray.
        warming = asyncio.create_task(warm_up()) if ray.is_initialized() else None
        yield
        if warming is not None:
            warming.cancel()
        await http.aclose()
        await fleet.redis.aclose()

    app = FastAPI(
        title="Chorus API",
        version="1",
        description="A fleet of AI social-media personas. Authenticate with `Authorization: Bearer <key>`.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    # Added last, so outermost: the guard's size limit and incident ids cover authentication too.
    open_paths = {"/healthz", "/readyz", app.docs_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url}
    app.add_middleware(Authenticate, authorizer=auth, open_paths={p for p in open_paths if p})
    app.add_middleware(GuardMiddleware, max_body_bytes=limits.max_body_bytes)
    install_error_handlers(app)
    authed = _errors(401, 403, 422)

    async def job_detail(job: Job) -> JobDetail:
        post = await fleet.post_repo.get(job.post_id) if job.post_id else None
        return JobDetail(**job.model_dump(), post=post)

    async def known_job(job_id: str) -> Job:
        job = await fleet.job(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"job {job_id!r} does not exist")
        return job

    # --- health ---------------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Health:
        """The process is up."""
        return Health()

    @app.get("/readyz", tags=["health"], responses=_errors(503))
    async def readyz() -> Readiness:
        """Redis reachable, the local tier answering, the fleet's directory alive."""

        async def redis_check() -> None:
            await _within(fleet.redis.ping(), CHECK_TIMEOUT_S)

        async def local_tier_check() -> None:
            # With the gateway's service key: a tier that would refuse the fleet is not ready.
            response = await http.get(
                settings.local.base_url.rstrip("/") + "/models", headers=settings.local.auth_headers()
            )
            response.raise_for_status()

        async def directory_check() -> None:
            directory = await _within(fleet.directory(), CHECK_TIMEOUT_S)
            await _within(directory.ping.remote(), CHECK_TIMEOUT_S)

        names = ("redis", "local_tier", "directory")
        results = await asyncio.gather(
            redis_check(), local_tier_check(), directory_check(), return_exceptions=True
        )
        checks = {
            name: "ok" if result is None else f"failed: {type(result).__name__}: {result}".rstrip(": ")
            for name, result in zip(names, results, strict=True)
        }
        # Not probed: the router falls back to the local tier when the premium one fails.
        checks["premium_tier"] = "configured" if settings.premium.configured else "not configured"
        if any(result is not None for result in results):
            raise ApiError(503, "not_ready", "a dependency is down", details={"checks": checks})
        return Readiness(status="ready", checks=checks)

    # --- personas -------------------------------------------------------------------------------

    @app.get("/v1/personas", tags=["personas"], dependencies=[viewer], responses=authed)
    async def list_personas() -> PersonaList:
        return PersonaList(personas=await fleet.personas.all())

    @app.post(
        "/v1/personas",
        status_code=201,
        tags=["personas"],
        dependencies=[editor],
        responses=_errors(401, 403, 409, 413, 422),
    )
    async def create_persona(spec: PersonaSpec, key: ApiKey = editor) -> PersonaSpec:
        """Create a persona; the id must be new (PUT replaces one). A daily budget above
        `budget.editor_ceiling_usd` needs an admin key."""
        _check_budget_change(settings, key, spec, None)
        if not await fleet.create(spec):
            raise ApiError(409, "persona_exists", f"persona {spec.id!r} already exists; PUT replaces it")
        return spec

    @app.get(
        "/v1/personas/{persona_id}", tags=["personas"], dependencies=[viewer], responses=_errors(401, 404)
    )
    async def get_persona(persona_id: PersonaId) -> PersonaSpec:
        return await fleet.persona(persona_id)

    @app.put(
        "/v1/personas/{persona_id}",
        tags=["personas"],
        dependencies=[editor],
        responses={**_errors(401, 403, 404, 413, 422), 201: {"model": PersonaSpec, "description": "Created"}},
    )
    async def put_persona(
        persona_id: PersonaId, spec: PersonaSpec, response: Response, key: ApiKey = editor
    ) -> PersonaSpec:
        """Create or replace a persona; running jobs keep the old spec, the next job uses this one.
        Raising the daily budget above `budget.editor_ceiling_usd` needs an admin key."""
        if spec.id != persona_id:
            raise ApiError(
                422,
                "invalid_field",
                f"id: {spec.id!r} differs from the id in the path {persona_id!r}",
                field="id",
            )
        _check_budget_change(settings, key, spec, await fleet.personas.get(persona_id))
        if await fleet.apply(spec):
            response.status_code = 201
        return spec

    @app.delete(
        "/v1/personas/{persona_id}",
        status_code=204,
        tags=["personas"],
        dependencies=[editor],
        responses=_errors(401, 403, 404),
    )
    async def delete_persona(persona_id: PersonaId) -> Response:
        """Delete a persona; its posts stay, its queued jobs fail, its actor stops. The spec and its
        engagement history stay restorable for `fleet.deleted_retention_days`."""
        await fleet.delete(persona_id)
        return Response(status_code=204)

    @app.post(
        "/v1/personas/{persona_id}:restore",
        tags=["personas"],
        dependencies=[editor],
        responses=_errors(401, 403, 404, 409),
    )
    async def restore_persona(persona_id: PersonaId) -> PersonaSpec:
        """Bring back a deleted persona, with its engagement history, within the retention."""
        try:
            return await fleet.restore(persona_id)
        except PersonaExists as exc:
            raise ApiError(409, "persona_exists", str(exc)) from None
        except NothingToRestore as exc:
            raise ApiError(404, "persona_not_found", str(exc)) from None

    @app.get(
        "/v1/personas/{persona_id}/stats",
        tags=["personas"],
        dependencies=[viewer],
        responses=_errors(401, 404),
    )
    async def persona_stats(persona_id: PersonaId) -> PersonaStats:
        """Posts, accepted and rejected, spend today, cost per accepted post and, once a platform
        has reported engagement, followers, engagement rate and cost per follower."""
        return await fleet.stats(persona_id)

    @app.post(
        "/v1/personas/{persona_id}/engagement",
        status_code=201,
        tags=["personas"],
        dependencies=[editor],
        responses=_errors(401, 403, 404, 413, 422),
    )
    async def report_engagement(persona_id: PersonaId, report: EngagementReport) -> Engagement:
        """Record what a platform reports of the persona's account (followers now, impressions and
        engagements over a period); the latest report per platform replaces the previous one and
        feeds the engagement rate and cost per follower in stats and metrics."""
        try:
            return await fleet.report_engagement(persona_id, report)
        except PlatformNotUsed as exc:
            raise ApiError(422, "invalid_field", f"platform: {exc}", field="platform") from exc

    @app.get(
        "/v1/personas/{persona_id}/schedule",
        tags=["personas"],
        dependencies=[viewer],
        responses=_errors(401, 404),
    )
    async def persona_schedule(persona_id: PersonaId) -> Schedule:
        """Today's posting slots (the persona's local day, from its cadence) and, for an autoposting
        persona, the job queued for each slot that has come due."""
        return await fleet.schedule(persona_id)

    @app.get(
        "/v1/personas/{persona_id}/engagement",
        tags=["personas"],
        dependencies=[viewer],
        responses=_errors(401, 404),
    )
    async def persona_engagement(persona_id: PersonaId) -> EngagementList:
        """The latest engagement report of each of the persona's platforms."""
        return EngagementList(engagements=await fleet.engagements(persona_id))

    # --- generation and jobs --------------------------------------------------------------------

    @app.post(
        "/v1/personas/{persona_id}/posts:generate",
        tags=["posts"],
        dependencies=[editor],
        responses={
            **_errors(401, 402, 403, 404, 413, 422, 503),
            202: {"model": GenerateResponse, "description": "Queued (async=true) or still running"},
        },
    )
    async def generate(
        persona_id: PersonaId,
        response: Response,
        request: GenerateRequest | None = None,
        run_async: bool = Query(False, alias="async", description="Answer 202 with the jobs at once."),
    ) -> GenerateResponse:
        """Generate posts. Synchronous by default: waits for the posts, or answers 202 with the jobs
        at the timeout; follow a job at /v1/jobs/{id}/events."""
        nonlocal sync_waits
        req = request or GenerateRequest()
        if req.count > limits.max_posts_per_request:
            raise ApiError(
                422,
                "invalid_field",
                f"count: at most {limits.max_posts_per_request} posts per request",
                field="count",
            )
        timeout_s = req.timeout_s or limits.sync_timeout_s
        if timeout_s > limits.max_sync_timeout_s:
            raise ApiError(
                422, "invalid_field", f"timeout_s: at most {limits.max_sync_timeout_s:g}", field="timeout_s"
            )
        # One deadline for the whole request, queueing included: past it the answer is 202.
        deadline = time.monotonic() + timeout_s
        await fleet.persona(persona_id)
        waits = not run_async
        if waits and sync_waits >= limits.max_sync_waits:
            raise _overloaded(limits, f"{sync_waits} synchronous requests are already waiting")
        sync_waits += waits
        try:
            depth = await fleet.queue_depth()
            if depth + req.count > limits.max_pending_jobs:
                raise _overloaded(
                    limits, f"{depth} jobs are queued or running (limit {limits.max_pending_jobs})"
                )
            job_ids = await fleet.generate(persona_id, req.count)
            if run_async:
                jobs = [job for job in [await fleet.job(j) for j in job_ids] if job is not None]
            else:
                jobs = []
                for job_id in job_ids:
                    try:
                        jobs.append(await fleet.wait(job_id, max(0.0, deadline - time.monotonic())))
                    except TimeoutError:
                        jobs.append(await known_job(job_id))
        finally:
            sync_waits -= waits
        if run_async or any(job.status not in TERMINAL_JOB_STATUSES for job in jobs):
            response.status_code = 202
            response.headers["Location"] = f"/v1/jobs/{jobs[0].id}"
        elif any(job.status == "budget_exceeded" for job in jobs):
            spec = await fleet.persona(persona_id)
            ledger = fleet.ledger(spec)
            error = budget_error(
                BudgetExceeded(
                    persona_id, await ledger.spent_today(), ledger.budget_usd, fleet.first_call_usd(spec)
                )
            )
            error.body.details = {**(error.body.details or {}), "jobs": [job.id for job in jobs]}
            raise error
        return GenerateResponse(jobs=[await job_detail(job) for job in jobs])

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], dependencies=[viewer], responses=_errors(401, 404))
    async def get_job(job_id: JobId) -> JobDetail:
        """A job's status, and its post once done."""
        return await job_detail(await known_job(job_id))

    @app.get(
        "/v1/jobs/{job_id}/events",
        tags=["jobs"],
        dependencies=[viewer],
        response_class=StreamingResponse,
        responses={
            **_errors(401, 404, 422),
            200: {
                "content": {"text/event-stream": {}},
                "description": "`node` per finished workflow node (node, duration_s, tier, tokens, "
                "cost_usd), then `post`, then `end`. Every event from the start is replayed; "
                "send Last-Event-ID to resume after one.",
            },
        },
    )
    async def job_events(
        job_id: JobId,
        last_event_id: str = Header(
            "0", pattern=EVENT_ID_PATTERN, description="Resume after this event (its `id`)."
        ),
    ) -> StreamingResponse:
        await known_job(job_id)
        after = last_event_id
        return StreamingResponse(
            _event_stream(fleet.events(job_id, after=after), limits.sse_keepalive_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # --- posts ----------------------------------------------------------------------------------

    @app.get("/v1/posts", tags=["posts"], dependencies=[viewer], responses=authed)
    async def list_posts(
        persona: str | None = Query(
            None, pattern=PERSONA_ID_PATTERN, description="Only this persona's posts."
        ),
        status: PostStatus | None = Query(None),
        since: datetime | None = Query(None, description="ISO 8601 or Unix time, inclusive."),
        until: datetime | None = Query(None, description="ISO 8601 or Unix time, exclusive."),
        cursor: str | None = Query(
            None, pattern=CURSOR_PATTERN, description="next_cursor of the previous page."
        ),
        limit: int = Query(50, ge=1, le=200),
    ) -> PostPage:
        """Posts, newest first, one page at a time."""
        return await fleet.posts(
            persona_id=persona,
            status=status,
            since=_timestamp(since),
            until=_timestamp(until),
            cursor=cursor,
            limit=limit,
        )

    @app.delete(
        "/v1/posts/{post_id}",
        status_code=204,
        tags=["posts"],
        dependencies=[editor],
        responses=_errors(401, 403, 404),
    )
    async def delete_post(post_id: PostId) -> Response:
        """Delete a post. The persona's counters and spend keep what it cost."""
        if not await fleet.delete_post(post_id):
            raise ApiError(404, "post_not_found", f"post {post_id!r} does not exist")
        return Response(status_code=204)

    @app.get("/v1/status", tags=["fleet"], dependencies=[viewer], responses=authed)
    async def fleet_status() -> FleetStatus:
        directory = await _within(fleet.status(), CHECK_TIMEOUT_S * 2)
        return FleetStatus(
            personas=len(await fleet.personas.ids()),
            queue_depth=await fleet.queue_depth(),
            directory=directory,
        )

    # --- keys -----------------------------------------------------------------------------------

    @app.post("/v1/keys", status_code=201, tags=["keys"], dependencies=[admin], responses=authed)
    async def create_key(request: KeyCreate) -> KeyCreated:
        """A new API key. The key is in this answer only: Chorus stores its hash."""
        key, token = await key_store.create(request.role, request.name)
        return KeyCreated(**key.model_dump(), key=token)

    @app.get("/v1/keys", tags=["keys"], dependencies=[admin], responses=authed)
    async def list_keys(
        include_revoked: bool = Query(False, description="Also list revoked keys not yet purged."),
    ) -> KeyList:
        """Live keys, oldest first."""
        return KeyList(keys=await key_store.list(include_revoked=include_revoked))

    @app.post("/v1/keys:purge", tags=["keys"], dependencies=[admin], responses=authed)
    async def purge_keys() -> KeysPurged:
        """Delete the records of every revoked key (they are refused either way)."""
        return KeysPurged(purged=await key_store.purge_revoked())

    @app.delete(
        "/v1/keys/{key_id}", tags=["keys"], dependencies=[admin], responses=_errors(401, 403, 404, 409)
    )
    async def revoke_key(key_id: KeyId) -> KeyList:
        """Revoke a key; it is refused from the next request on. The last admin key stays."""
        try:
            key = await key_store.revoke(key_id)
        except LastAdminKey as exc:
            raise ApiError(409, "last_admin_key", str(exc)) from None
        if key is None:
            raise ApiError(404, "key_not_found", f"API key {key_id!r} does not exist")
        return KeyList(keys=[key])

    return app


class ChorusAPI:
    """The API as a Serve ingress; the app is built in the replica, over its own Redis client."""

    def __init__(self, settings: Settings) -> None:
        self._app = create_app(settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._app


# Decorators applied by call: `serve.ingress` is untyped, and applied with `@` it would hide the
# Deployment type (and its `.options`) from the type checker.
ChorusAPIDeployment = serve.deployment(name="ChorusAPI")(serve.ingress()(ChorusAPI))


def api_deployment_options(api: ApiSettings) -> dict[str, Any]:
    return {
        "num_replicas": api.replicas,
        "max_ongoing_requests": api.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": api.num_cpus},
    }


def api_app(settings: Settings) -> Application:
    return ChorusAPIDeployment.options(**api_deployment_options(settings.api)).bind(settings)


def build_api_app(args: dict[str, Any]) -> Application:
    """Serve application builder (``serve.app:build_api_app``).

    ``args`` override fields of the API settings, e.g. ``{"replicas": 2}``; everything else comes
    from the environment (CHORUS_* variables).
    """
    settings = load_settings()
    if args:
        api = ApiSettings.model_validate({**settings.api.model_dump(), **args})
        settings = settings.model_copy(update={"api": api})
    return api_app(settings)
