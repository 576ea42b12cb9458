"""API keys: create, list, revoke, purge. Admin only; a key's secret is shown once, at creation."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from serve.api.auth import KEY_ID_PATTERN
from serve.api.deps import KeyStoreDep, admin, errors
from serve.api.errors import ApiError
from serve.api.protocol import KeyCreate, KeyCreated, KeyList, KeysPurged

KeyId = Annotated[str, Path(pattern=KEY_ID_PATTERN)]

router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[admin], responses=errors(401, 403))


@router.post("", status_code=201, responses=errors(422))
async def create_key(request: KeyCreate, key_store: KeyStoreDep) -> KeyCreated:
    """A new API key. The key is in this answer only: Chorus stores its hash."""
    key, token = await key_store.create(request.role, request.name)
    return KeyCreated(**key.model_dump(), key=token)


@router.get("", responses=errors(422))
async def list_keys(
    key_store: KeyStoreDep,
    include_revoked: bool = Query(False, description="Also list revoked keys not yet purged."),
) -> KeyList:
    """Live keys, oldest first."""
    return KeyList(keys=await key_store.list(include_revoked=include_revoked))


@router.post(":purge", responses=errors(422))
async def purge_keys(key_store: KeyStoreDep) -> KeysPurged:
    """Delete the records of every revoked key (they are refused either way)."""
    return KeysPurged(purged=await key_store.purge_revoked())


@router.delete("/{key_id}", responses=errors(404, 409))
async def revoke_key(key_id: KeyId, key_store: KeyStoreDep) -> KeyList:
    """Revoke a key; it is refused from the next request on. The last admin key stays."""
    key = await key_store.revoke(key_id)
    if key is None:
        raise ApiError(404, "key_not_found", f"API key {key_id!r} does not exist")
    return KeyList(keys=[key])
