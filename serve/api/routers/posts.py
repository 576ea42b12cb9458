"""Posts: generate them for a persona (synchronously up to a deadline, or as queued jobs), page
through them, delete one."""

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from chorus.lifecycle import LifecycleState
from chorus.models import (
    CURSOR_PATTERN,
    JOB_ID_PATTERN,
    TERMINAL_JOB_STATUSES,
    PostPage,
    PostQuery,
    PostStatus,
)
from chorus.persona import PERSONA_ID_PATTERN
from serve.api.deps import FleetDep, State, editor, errors, overloaded, viewer
from serve.api.errors import ApiError, budget_error
from serve.api.protocol import GenerateRequest, GenerateResponse
from serve.api.routers.jobs import job_detail, known_job
from serve.api.routers.personas import PersonaId

PostId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="A post's id is its job's id.")]

router = APIRouter(prefix="/v1", tags=["posts"], dependencies=[viewer], responses=errors(401))


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    # A time without a zone is UTC, like every time Chorus stores.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


@router.post(
    "/personas/{persona_id}/posts:generate",
    dependencies=[editor],
    responses={
        **errors(402, 403, 404, 413, 422, 503),
        202: {"model": GenerateResponse, "description": "Queued (async=true) or still running"},
    },
)
async def generate(
    persona_id: PersonaId,
    response: Response,
    state: State,
    request: GenerateRequest | None = None,
    run_async: bool = Query(False, alias="async", description="Answer 202 with the jobs at once."),
) -> GenerateResponse:
    """Generate posts. Synchronous by default: waits for the posts, or answers 202 with the jobs
    at the timeout; follow a job at /v1/jobs/{id}/events."""
    fleet, limits = state.fleet, state.settings.api
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
    with state.sync_waits.hold(waits=not run_async):
        depth = await fleet.queue_depth()
        if depth + req.count > limits.max_pending_jobs:
            raise overloaded(limits, f"{depth} jobs are queued or running (limit {limits.max_pending_jobs})")
        job_ids = await fleet.generate(
            persona_id, req.count, source_url=req.source_url, source_title=req.source_title
        )
        if run_async:
            jobs = [job for job in [await fleet.job(j) for j in job_ids] if job is not None]
        else:
            jobs = []
            for job_id in job_ids:
                try:
                    jobs.append(await fleet.wait(job_id, max(0.0, deadline - time.monotonic())))
                except TimeoutError:
                    jobs.append(await known_job(fleet, job_id))
    if run_async or any(job.status not in TERMINAL_JOB_STATUSES for job in jobs):
        response.status_code = 202
        response.headers["Location"] = f"/v1/jobs/{jobs[0].id}"
    elif any(job.status == "budget_exceeded" for job in jobs):
        error = budget_error(await fleet.budget_refusal(persona_id))
        error.body.details = {**(error.body.details or {}), "jobs": [job.id for job in jobs]}
        raise error
    return GenerateResponse(jobs=[await job_detail(fleet, job) for job in jobs])


@router.get("/posts", responses=errors(403, 422))
async def list_posts(
    fleet: FleetDep,
    persona: str | None = Query(None, pattern=PERSONA_ID_PATTERN, description="Only this persona's posts."),
    status: PostStatus | None = Query(None, description="The review's verdict."),
    state: LifecycleState | None = Query(None, description="Only posts in this lifecycle state."),
    since: datetime | None = Query(None, description="ISO 8601 or Unix time, inclusive."),
    until: datetime | None = Query(None, description="ISO 8601 or Unix time, exclusive."),
    cursor: str | None = Query(None, pattern=CURSOR_PATTERN, description="next_cursor of the previous page."),
    limit: int = Query(50, ge=1, le=200),
) -> PostPage:
    """Posts, newest first, one page at a time."""
    return await fleet.posts(
        PostQuery(
            persona_id=persona,
            status=status,
            state=state,
            since=_timestamp(since),
            until=_timestamp(until),
            cursor=cursor,
            limit=limit,
        )
    )


@router.delete("/posts/{post_id}", status_code=204, dependencies=[editor], responses=errors(403, 404))
async def delete_post(post_id: PostId, fleet: FleetDep) -> Response:
    """Delete a post. The persona's counters and spend keep what it cost."""
    if not await fleet.delete_post(post_id):
        raise ApiError(404, "post_not_found", f"post {post_id!r} does not exist")
    return Response(status_code=204)
