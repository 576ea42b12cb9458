"""A job's status and post, and its live event stream (server-sent events, resumable)."""

from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import StreamingResponse

from actors.fleet import Fleet
from chorus.models import EVENT_ID_PATTERN, JOB_ID_PATTERN, Job
from serve.api.deps import FleetDep, SettingsDep, errors, viewer
from serve.api.errors import ApiError
from serve.api.protocol import JobDetail
from serve.api.sse import event_stream_response

# An id that does not match its pattern names nothing: the job's 404 (serve/api/errors.py).
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN)]

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[viewer], responses=errors(401, 404))


async def known_job(fleet: Fleet, job_id: str) -> Job:
    job = await fleet.job(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"job {job_id!r} does not exist")
    return job


async def job_detail(fleet: Fleet, job: Job) -> JobDetail:
    post = await fleet.post(job.post_id) if job.post_id else None
    return JobDetail(**job.model_dump(), post=post)


@router.get("/{job_id}")
async def get_job(job_id: JobId, fleet: FleetDep) -> JobDetail:
    """A job's status, and its post once done."""
    return await job_detail(fleet, await known_job(fleet, job_id))


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        **errors(422),
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
    fleet: FleetDep,
    settings: SettingsDep,
    last_event_id: str = Header(
        "0", pattern=EVENT_ID_PATTERN, description="Resume after this event (its `id`)."
    ),
) -> StreamingResponse:
    await known_job(fleet, job_id)
    return event_stream_response(fleet.events(job_id, after=last_event_id), settings.api.sse_keepalive_s)
