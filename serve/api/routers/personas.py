"""Personas: create, read, replace, delete and restore specs; their stats, schedule and engagement.

Reads need a viewer key (the router's check), writes an editor key (the route's); a daily budget
above `budget.editor_ceiling_usd` needs an admin key.
"""

from typing import Annotated

from fastapi import APIRouter, Path, Response

from chorus.models import ApiKey, Engagement, EngagementReport, PersonaStats, Schedule, role_allows
from chorus.persona import PERSONA_ID_PATTERN, PersonaSpec
from chorus.settings import Settings
from serve.api.deps import EditorKey, FleetDep, SettingsDep, editor, errors, viewer
from serve.api.errors import ApiError
from serve.api.protocol import EngagementList, PersonaList

# An id that does not match its pattern names nothing: the persona's 404 (serve/api/errors.py).
PersonaId = Annotated[str, Path(pattern=PERSONA_ID_PATTERN)]

router = APIRouter(prefix="/v1/personas", tags=["personas"], dependencies=[viewer], responses=errors(401))


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


@router.get("", responses=errors(403, 422))
async def list_personas(fleet: FleetDep) -> PersonaList:
    return PersonaList(personas=await fleet.list_personas())


@router.post("", status_code=201, responses=errors(403, 409, 413, 422))
async def create_persona(
    spec: PersonaSpec, key: EditorKey, fleet: FleetDep, settings: SettingsDep
) -> PersonaSpec:
    """Create a persona; the id must be new (PUT replaces one). A daily budget above
    `budget.editor_ceiling_usd` needs an admin key."""
    _check_budget_change(settings, key, spec, None)
    if not await fleet.create(spec):
        raise ApiError(409, "persona_exists", f"persona {spec.id!r} already exists; PUT replaces it")
    return spec


@router.get("/{persona_id}", responses=errors(404))
async def get_persona(persona_id: PersonaId, fleet: FleetDep) -> PersonaSpec:
    return await fleet.persona(persona_id)


@router.put(
    "/{persona_id}",
    responses={**errors(403, 404, 413, 422), 201: {"model": PersonaSpec, "description": "Created"}},
)
async def put_persona(
    persona_id: PersonaId,
    spec: PersonaSpec,
    response: Response,
    key: EditorKey,
    fleet: FleetDep,
    settings: SettingsDep,
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
    _check_budget_change(settings, key, spec, await fleet.find_persona(persona_id))
    if await fleet.apply(spec):
        response.status_code = 201
    return spec


@router.delete("/{persona_id}", status_code=204, dependencies=[editor], responses=errors(403, 404))
async def delete_persona(persona_id: PersonaId, fleet: FleetDep) -> Response:
    """Delete a persona; its posts stay, its queued jobs fail, its actor stops. The spec and its
    engagement history stay restorable for `fleet.deleted_retention_days`."""
    await fleet.delete(persona_id)
    return Response(status_code=204)


@router.post("/{persona_id}:restore", dependencies=[editor], responses=errors(403, 404, 409))
async def restore_persona(persona_id: PersonaId, fleet: FleetDep) -> PersonaSpec:
    """Bring back a deleted persona, with its engagement history, within the retention."""
    return await fleet.restore(persona_id)


@router.get("/{persona_id}/stats", responses=errors(404))
async def persona_stats(persona_id: PersonaId, fleet: FleetDep) -> PersonaStats:
    """Posts, accepted and rejected, spend today, cost per accepted post and, once a platform
    has reported engagement, followers, engagement rate and cost per follower."""
    return await fleet.stats(persona_id)


@router.post(
    "/{persona_id}/engagement",
    status_code=201,
    dependencies=[editor],
    responses=errors(403, 404, 413, 422),
)
async def report_engagement(persona_id: PersonaId, report: EngagementReport, fleet: FleetDep) -> Engagement:
    """Record what a platform reports of the persona's account (followers now, impressions and
    engagements over a period); the latest report per platform replaces the previous one and
    feeds the engagement rate and cost per follower in stats and metrics."""
    return await fleet.report_engagement(persona_id, report)


@router.get("/{persona_id}/schedule", responses=errors(404))
async def persona_schedule(persona_id: PersonaId, fleet: FleetDep) -> Schedule:
    """Today's posting slots (the persona's local day, from its cadence) and, for an autoposting
    persona, the job queued for each slot that has come due."""
    return await fleet.schedule(persona_id)


@router.get("/{persona_id}/engagement", responses=errors(404))
async def persona_engagement(persona_id: PersonaId, fleet: FleetDep) -> EngagementList:
    """The latest engagement report of each of the persona's platforms."""
    return EngagementList(engagements=await fleet.engagements(persona_id))
