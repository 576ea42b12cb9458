"""Platform accounts (admin only): add one (after a real login), list, test, give new
credentials, remove. Credentials go in and never come out: answers carry the account's handle,
server and status only."""

from fastapi import APIRouter, Query, Response

from chorus.accounts import AccountInput, CredentialsInput
from chorus.models import Account
from chorus.persona import PERSONA_ID_PATTERN, Platform
from serve.api.deps import FleetDep, admin, errors
from serve.api.protocol import AccountList
from serve.api.routers.personas import PersonaId

router = APIRouter(prefix="/v1", tags=["accounts"], dependencies=[admin], responses=errors(401, 403))


@router.get("/accounts", responses=errors(404, 422))
async def list_accounts(
    fleet: FleetDep,
    persona: str | None = Query(
        None, pattern=PERSONA_ID_PATTERN, description="Only this persona's accounts."
    ),
) -> AccountList:
    """Every account, with its status (`needs_reauth` with the platform's message)."""
    return AccountList(accounts=await fleet.list_accounts(persona))


@router.post("/personas/{persona_id}/accounts", status_code=201, responses=errors(404, 409, 422, 503))
async def add_account(persona_id: PersonaId, request: AccountInput, fleet: FleetDep) -> Account:
    """Add an account: the credentials are checked with a real login first, then stored encrypted."""
    return await fleet.add_account(persona_id, request)


@router.get("/personas/{persona_id}/accounts/{platform}", responses=errors(404, 422))
async def get_account(persona_id: PersonaId, platform: Platform, fleet: FleetDep) -> Account:
    return await fleet.account(persona_id, platform)


@router.post("/personas/{persona_id}/accounts/{platform}:test", responses=errors(404, 422, 503))
async def test_account(persona_id: PersonaId, platform: Platform, fleet: FleetDep) -> Account:
    """Log in now: `active` when it works, `needs_reauth` with the platform's words when not."""
    return await fleet.test_account(persona_id, platform)


@router.put("/personas/{persona_id}/accounts/{platform}/credentials", responses=errors(404, 422, 503))
async def reauth_account(
    persona_id: PersonaId, platform: Platform, request: CredentialsInput, fleet: FleetDep
) -> Account:
    """New credentials (checked with a real login); the account's waiting posts then publish."""
    return await fleet.reauth_account(persona_id, platform, request)


@router.delete("/personas/{persona_id}/accounts/{platform}", status_code=204, responses=errors(404))
async def remove_account(persona_id: PersonaId, platform: Platform, fleet: FleetDep) -> Response:
    await fleet.remove_account(persona_id, platform)
    return Response(status_code=204)
