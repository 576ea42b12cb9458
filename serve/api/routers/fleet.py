"""The fleet as a whole: how many personas, how much work is pending, what the directory runs."""

from fastapi import APIRouter

from serve.api.deps import CHECK_TIMEOUT_S, FleetDep, errors, viewer, within
from serve.api.protocol import FleetStatus

router = APIRouter(prefix="/v1", tags=["fleet"], dependencies=[viewer], responses=errors(401, 403, 422))


@router.get("/status")
async def fleet_status(fleet: FleetDep) -> FleetStatus:
    directory = await within(fleet.status(), CHECK_TIMEOUT_S * 2)
    return FleetStatus(
        personas=await fleet.persona_count(),
        queue_depth=await fleet.queue_depth(),
        directory=directory,
    )
