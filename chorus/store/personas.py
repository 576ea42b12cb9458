"""Persona specs, the index of their ids and the index of those that post on their cadence.

Create, delete and restore are Lua scripts so that each is one step against racing writers: two
creates of one id, or a restore racing a re-create, see all of the other or none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from chorus.persona import PersonaSpec
from chorus.store.keys import Keys

if TYPE_CHECKING:
    import redis.asyncio as aioredis


# Create only a free id: the spec, the index of ids and the autopost index in one step, so two
# concurrent creates of one id cannot both succeed nor the loser overwrite the winner.
_CREATE_PERSONA = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[2])
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[3], ARGV[2])
end
return 1
"""


# Delete a persona: its spec and index entries go; with a retention (ARGV[2] seconds) the spec and
# its engagement reports move aside, restorable until they expire. One script, so a restore or a
# re-create racing the delete sees all of it or none.
_DELETE_PERSONA = """
local spec = redis.call('GET', KEYS[1])
if not spec then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
local retain = tonumber(ARGV[2])
if retain > 0 then
  redis.call('SET', KEYS[6], spec, 'EX', retain)
  if redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('RENAME', KEYS[4], KEYS[7])
    redis.call('EXPIRE', KEYS[7], retain)
  else
    redis.call('DEL', KEYS[7])
  end
else
  redis.call('DEL', KEYS[4])
end
return 1
"""

# Undo a retained delete: -1 nothing retained, 0 the id is taken again, 1 restored.
_RESTORE_PERSONA = """
local spec = redis.call('GET', KEYS[6])
if not spec then
  return -1
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], spec)
redis.call('SADD', KEYS[2], ARGV[1])
local cadence = cjson.decode(spec)['cadence']
if type(cadence) == 'table' and cadence['autopost'] == true then
  redis.call('SADD', KEYS[3], ARGV[1])
end
if redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('RENAME', KEYS[7], KEYS[4])
  redis.call('PERSIST', KEYS[4])
  redis.call('SADD', KEYS[5], ARGV[1])
end
redis.call('DEL', KEYS[6])
return 1
"""

RestoreOutcome = Literal["restored", "taken", "gone"]


class PersonaRepo:
    """Persona specs, the index of their ids, and the index of those that post on their cadence
    (the scheduler reads only these, not every spec, each round)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r, self._k = client, keys
        self._create = client.register_script(_CREATE_PERSONA)
        self._delete = client.register_script(_DELETE_PERSONA)
        self._restore = client.register_script(_RESTORE_PERSONA)

    async def put(self, spec: PersonaSpec) -> bool:
        """Store a spec; returns True when it was new."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self._k("persona", spec.id), spec.model_dump_json())
            pipe.sadd(self._k("personas"), spec.id)
            if spec.cadence.autopost:
                pipe.sadd(self._k("personas", "autopost"), spec.id)
            else:
                pipe.srem(self._k("personas", "autopost"), spec.id)
            _, added, _ = await pipe.execute()
        return bool(added)

    async def create(self, spec: PersonaSpec) -> bool:
        """Store a spec only when its id is free; False (and nothing written) when it is taken."""
        keys = [self._k("persona", spec.id), self._k("personas"), self._k("personas", "autopost")]
        args = [spec.model_dump_json(), spec.id, "1" if spec.cadence.autopost else "0"]
        return bool(await self._create(keys=keys, args=args))

    async def get(self, persona_id: str) -> PersonaSpec | None:
        raw = await self._r.get(self._k("persona", persona_id))
        return PersonaSpec.model_validate_json(raw) if raw else None

    async def ids(self) -> list[str]:
        return await self._members(self._k("personas"))

    async def all(self) -> list[PersonaSpec]:
        return await self._specs(await self.ids())

    async def autoposting(self) -> list[PersonaSpec]:
        """The personas whose cadence has `autopost` on."""
        return await self._specs(await self._members(self._k("personas", "autopost")))

    def _lifecycle_keys(self, persona_id: str) -> list[str]:
        return [
            self._k("persona", persona_id),
            self._k("personas"),
            self._k("personas", "autopost"),
            self._k("engagement", persona_id),
            self._k("engaged"),
            self._k("deleted", "persona", persona_id),
            self._k("deleted", "engagement", persona_id),
        ]

    async def delete(self, persona_id: str, retain_s: float = 0.0) -> bool:
        """Delete a persona and its engagement reports; False when it does not exist.

        With `retain_s` the spec and the reports are kept aside that long for `restore` (a later
        delete of the same id replaces them). Posts, their counters and spend are never touched.
        """
        keys = self._lifecycle_keys(persona_id)
        return bool(await self._delete(keys=keys, args=[persona_id, str(max(0, int(retain_s)))]))

    async def restore(self, persona_id: str) -> tuple[RestoreOutcome, PersonaSpec | None]:
        """Bring back a persona deleted within its retention, with its engagement reports."""
        outcome = int(await self._restore(keys=self._lifecycle_keys(persona_id), args=[persona_id]))
        if outcome == -1:
            return "gone", None
        if outcome == 0:
            return "taken", None
        return "restored", await self.get(persona_id)

    async def _members(self, key: str) -> list[str]:
        members: set[bytes] = await self._r.smembers(key)  # type: ignore[assignment]
        return sorted(m.decode() for m in members)

    async def _specs(self, ids: list[str]) -> list[PersonaSpec]:
        if not ids:
            return []
        raws = await self._r.mget([self._k("persona", i) for i in ids])
        return [PersonaSpec.model_validate_json(r) for r in raws if r]
