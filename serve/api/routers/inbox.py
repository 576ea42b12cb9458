"""The post lifecycle over HTTP: the approval inbox, a reviewer's answers, a post's history, and
retrying or unpublishing what went out. Editors and admins act; viewers read.

The actor recorded in a post's history is the id of the API key that asked (never its secret).
"""

from datetime import UTC, datetime

from fastapi import APIRouter, Query

from chorus.models import ApiKey, InboxQuery, Post, PostHistory
from chorus.persona import PERSONA_ID_PATTERN, Platform
from serve.api.deps import EditorKey, FleetDep, errors, viewer
from serve.api.protocol import ApproveRequest, InboxResponse, RejectRequest, RequestChangesRequest
from serve.api.routers.posts import PostId

router = APIRouter(prefix="/v1", tags=["inbox"], dependencies=[viewer], responses=errors(401))


def _actor(key: ApiKey) -> str:
    return key.id


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


@router.get("/inbox", responses=errors(403, 422))
async def inbox(
    fleet: FleetDep,
    persona: str | None = Query(None, pattern=PERSONA_ID_PATTERN, description="Only this persona's posts."),
    platform: Platform | None = Query(None, description="Only posts for this platform."),
    older_than_s: float | None = Query(None, ge=0, description="Only posts waiting at least this long."),
    newer_than_s: float | None = Query(None, ge=0, description="Only posts waiting at most this long."),
    limit: int = Query(50, ge=1, le=500),
) -> InboxResponse:
    """Posts waiting for approval, longest waiting first, with the rule review's problems."""
    query = InboxQuery(
        persona_id=persona,
        platform=platform,
        older_than_s=older_than_s,
        newer_than_s=newer_than_s,
        limit=limit,
    )
    return InboxResponse(posts=await fleet.inbox(query))


@router.get("/posts/{post_id}", responses=errors(404))
async def get_post(post_id: PostId, fleet: FleetDep) -> Post:
    return await fleet.get_post(post_id)


@router.get("/posts/{post_id}/history", responses=errors(404))
async def history(post_id: PostId, fleet: FleetDep) -> PostHistory:
    """Every move of the post: from, to, who (an API key id or `system`), when, why."""
    return await fleet.history(post_id)


@router.post("/posts/{post_id}:approve", responses=errors(403, 404, 409, 422))
async def approve(
    post_id: PostId, fleet: FleetDep, key: EditorKey, request: ApproveRequest | None = None
) -> Post:
    """Approve a waiting post, optionally with edited text and a publish time. Edited text that
    breaks the persona's rules is refused (422 edit_breaks_rules, details.problems)."""
    req = request or ApproveRequest()
    return await fleet.approve(post_id, _actor(key), text=req.text, publish_at=_timestamp(req.publish_at))


@router.post("/posts/{post_id}:reject", responses=errors(403, 404, 409, 422))
async def reject(post_id: PostId, request: RejectRequest, fleet: FleetDep, key: EditorKey) -> Post:
    return await fleet.reject(post_id, _actor(key), request.reason)


@router.post("/posts/{post_id}:request-changes", responses=errors(403, 404, 409, 422))
async def request_changes(
    post_id: PostId, request: RequestChangesRequest, fleet: FleetDep, key: EditorKey
) -> Post:
    """Send a waiting post back with feedback; the persona writes a new draft from it, which
    returns to the inbox."""
    return await fleet.request_changes(post_id, _actor(key), request.feedback)


@router.post("/posts/{post_id}:retry", responses=errors(403, 404, 409))
async def retry(post_id: PostId, fleet: FleetDep, key: EditorKey) -> Post:
    """Put a failed post back into the outbox, due now (the same record: no double post)."""
    return await fleet.retry(post_id, _actor(key))


@router.post("/posts/{post_id}:unpublish", responses=errors(403, 404, 409, 422))
async def unpublish(post_id: PostId, fleet: FleetDep, key: EditorKey) -> Post:
    """Delete a published post from its platform; it stays here as `deleted`, with its history."""
    return await fleet.unpublish(post_id, _actor(key))
