"""Spend: a persona's daily ledger, the reservations that hold each paid call's worst case,
and giving back what dead calls held.

Reserve, settle and sweep are Lua scripts so that concurrent jobs of one persona can never
reserve past its budget together and a reservation is settled or released exactly once.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chorus.errors import BudgetExceeded
from chorus.models import Reservation
from chorus.persona import PersonaSpec
from chorus.settings import Settings, StoreSettings
from chorus.store.keys import Keys

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis


def _day(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts or time.time(), UTC).strftime("%Y%m%d")


# Reservations: each paid call's worst case is held on the day's spend key under an id, with a
# lease and the process holding it, in the persona's `reservations` hash (JSON records, read in
# Lua with cjson). A call that dies unsettled (its process killed mid-call) would otherwise
# leave its worst case on the ledger for good: an expired lease, or a restart of the process that
# held it, gives the amount back. `reservations` (a set) indexes the personas with any open.
_RESERVATION_FNS = """
local function release(hash, field, raw)
  local r = cjson.decode(raw)
  redis.call('HDEL', hash, field)
  if redis.call('EXISTS', r.key) == 1 then
    redis.call('INCRBYFLOAT', r.key, '-' .. r.amount)
  end
end
local function sweep(hash, now, holder)
  local released = 0
  local all = redis.call('HGETALL', hash)
  for i = 1, #all, 2 do
    local r = cjson.decode(all[i + 1])
    if tonumber(r.expires) <= now or (holder ~= '' and r.holder == holder) then
      release(hash, all[i], all[i + 1])
      released = released + 1
    end
  end
  return released
end
local function unindex(hash, index, persona)
  if redis.call('HLEN', hash) == 0 then
    redis.call('SREM', index, persona)
  end
end
"""

# Reserve only if the worst case still fits the budget; both sides run inside Redis, so
# concurrent jobs of one persona can never reserve past it together. Expired leases go first, so
# a dead call's hold never refuses a live one.
# KEYS: spend key, reservations hash, index.
# ARGV: amount, budget, id, record, now, persona, spend TTL (s).
_RESERVE = (
    _RESERVATION_FNS
    + """
sweep(KEYS[2], tonumber(ARGV[5]), '')
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if spent + amount > tonumber(ARGV[2]) + 1e-12 then
  unindex(KEYS[2], KEYS[3], ARGV[6])
  return {0, tostring(spent)}
end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('SADD', KEYS[3], ARGV[6])
return {1, tostring(spent)}
"""
)

# Replace a reservation by what the call really cost. One already given back (its lease ran out
# or its holder restarted before the answer came) is charged in full: the call was made.
# Lifetime spend (and the job's, when the call was for a job) is counted here, where it is known.
# KEYS: reservations hash, today's spend key, stats hash, job spend key, index.
# ARGV: id, actual, '1' when there is a job, persona, spend TTL (s), job spend TTL (s).
_SETTLE = (
    _RESERVATION_FNS
    + """
local actual = tonumber(ARGV[2])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local r = cjson.decode(raw)
  redis.call('HDEL', KEYS[1], ARGV[1])
  if ARGV[2] ~= r.amount and redis.call('EXISTS', r.key) == 1 then
    redis.call('INCRBYFLOAT', r.key, ARGV[2])
    redis.call('INCRBYFLOAT', r.key, '-' .. r.amount)
  end
  unindex(KEYS[1], KEYS[5], ARGV[4])
elseif actual > 0 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
if actual > 0 then
  redis.call('HINCRBYFLOAT', KEYS[3], 'spent_usd', ARGV[2])
  if ARGV[3] == '1' then
    redis.call('INCRBYFLOAT', KEYS[4], ARGV[2])
    redis.call('EXPIRE', KEYS[4], ARGV[6])
  end
end
return 1
"""
)

# Give back every reservation of one persona whose lease ran out or whose holder is named.
# KEYS: reservations hash, index. ARGV: now, holder ('' for leases only), persona.
_SWEEP = (
    _RESERVATION_FNS
    + """
local released = sweep(KEYS[1], tonumber(ARGV[1]), ARGV[2])
unindex(KEYS[1], KEYS[2], ARGV[3])
return released
"""
)

# A job that ended without a post: move what it spent into the persona's failed-job spend, once.
_CHARGE_FAILED_JOB = """
local spent = redis.call('GET', KEYS[1])
if spent then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBYFLOAT', KEYS[2], 'failed_spend_usd', spent)
  return spent
end
return '0'
"""

# Long enough for a call with all its retries at the router's default timeout; a live call past
# it is still charged in full when it settles.
DEFAULT_LEASE_S = 300.0


class SpendLedger:
    """A persona's spend for today (UTC) in Redis; implements the router's SpendGuard.

    `job_id` names the job the calls are for (its spend is then counted per job), `holder` the
    process making them (so a restart of that process can release what its dead calls held),
    `lease_s` how long a reservation may stay unsettled before it is given back.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        persona_id: str,
        budget_usd: float,
        *,
        job_id: str | None = None,
        holder: str = "",
        lease_s: float = DEFAULT_LEASE_S,
        store: StoreSettings | None = None,
    ):
        self._r, self._k = client, keys
        self.persona_id = persona_id
        self.budget_usd = budget_usd
        self.job_id = job_id
        self.holder = holder
        self.lease_s = lease_s
        store = store or StoreSettings()
        self._spend_ttl_s, self._job_spend_ttl_s = store.spend_ttl_s, store.job_spend_ttl_s
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._sweep = client.register_script(_SWEEP)
        self._charge_failed = client.register_script(_CHARGE_FAILED_JOB)

    @classmethod
    def for_persona(
        cls, client: aioredis.Redis, keys: Keys, spec: PersonaSpec, settings: Settings
    ) -> SpendLedger:
        """The persona's ledger, with its own budget or the fleet's default."""
        budget = spec.budget_usd(settings.budget.default_daily_usd)
        return cls(client, keys, spec.id, budget, store=settings.store)

    async def exhausted(self) -> bool:
        return await self.spent_today() >= self.budget_usd

    def _key(self) -> str:
        return self._k("spend", self.persona_id, _day())

    def _reservations(self) -> str:
        return self._k("reservations", self.persona_id)

    def _job_key(self, job_id: str) -> str:
        return self._k("jobspend", job_id)

    async def spent_today(self) -> float:
        # Giving back reservations leaves float dust: a ledger is never below zero.
        return max(0.0, float(await self._r.get(self._key()) or 0))

    async def reserve(self, amount_usd: float) -> str:
        """Hold the call's worst case; returns the reservation's id for `settle`."""
        reservation = uuid.uuid4().hex
        now = time.time()
        record = json.dumps(
            {
                # As text, the way Redis adds it: Lua numbers would round it to 14 digits.
                "amount": repr(amount_usd),
                "key": self._key(),
                "expires": now + self.lease_s,
                "holder": self.holder,
                "job": self.job_id,
            }
        )
        ok, spent = await self._reserve(
            keys=[self._key(), self._reservations(), self._k("reservations")],
            args=[
                repr(amount_usd),
                repr(self.budget_usd),
                reservation,
                record,
                repr(now),
                self.persona_id,
                self._spend_ttl_s,
            ],
        )
        if not int(ok):
            raise BudgetExceeded(self.persona_id, float(spent), self.budget_usd, amount_usd)
        return reservation

    async def settle(self, reservation: str, actual_usd: float) -> None:
        """Replace the reservation by the call's real cost (0 for a call that failed unpaid)."""
        job_key = self._job_key(self.job_id) if self.job_id else self._k("jobspend", "-")
        await self._settle(
            keys=[
                self._reservations(),
                self._key(),
                self._k("stats", self.persona_id),
                job_key,
                self._k("reservations"),
            ],
            args=[
                reservation,
                repr(actual_usd),
                "1" if self.job_id else "0",
                self.persona_id,
                self._spend_ttl_s,
                self._job_spend_ttl_s,
            ],
        )

    async def outstanding(self) -> list[Reservation]:
        """The reservations not settled yet (calls in flight, or dead ones not yet given back)."""
        rows: dict[bytes, bytes] = await self._r.hgetall(self._reservations())  # type: ignore[assignment]
        out = []
        for rid, raw in rows.items():
            r = json.loads(raw)
            out.append(
                Reservation(
                    id=rid.decode(),
                    persona_id=self.persona_id,
                    amount_usd=r["amount"],
                    expires_at=r["expires"],
                    holder=r["holder"],
                    job_id=r["job"],
                )
            )
        return out

    async def release_expired(self, now: float | None = None) -> int:
        """Give back the reservations whose lease ran out; returns how many."""
        return await release_reservations(self._r, self._k, [self.persona_id], now=now)

    async def charge_failed_job(self, job_id: str) -> float:
        """Count what a job that stored no post spent as failed-job spend (once); returns it."""
        spent = await self._charge_failed(keys=[self._job_key(job_id), self._k("stats", self.persona_id)])
        return float(spent)

    async def job_spend(self, job_id: str) -> float:
        """What the job's model calls have cost so far."""
        return float(await self._r.get(self._job_key(job_id)) or 0)


async def release_reservations(
    client: aioredis.Redis,
    keys: Keys,
    persona_ids: list[str] | None = None,
    *,
    holder: str = "",
    now: float | None = None,
) -> int:
    """Give back the reservations of dead calls: those past their lease and, when `holder` is
    given, every one that process held (it restarted: none of its calls is still running).
    Covers the named personas, or every persona with an open reservation; returns how many."""
    if persona_ids is None:
        members: set[bytes] = await client.smembers(keys("reservations"))  # type: ignore[assignment]
        persona_ids = sorted(m.decode() for m in members)
    sweep = client.register_script(_SWEEP)
    now = time.time() if now is None else now
    released = 0
    for persona_id in persona_ids:
        released += int(
            await sweep(
                keys=[keys("reservations", persona_id), keys("reservations")],
                args=[repr(now), holder, persona_id],
            )
        )
    return released


def take_over_reservations(client: redis.Redis, keys: Keys, role: str, holder: str) -> int:
    """Make `holder` the process playing `role` (one per role, e.g. a namespace's model gateway)
    and give back every reservation the previous holder of the role left: that process is gone,
    so none of its calls will settle. Synchronous, for a Ray actor's `__init__`; returns how many."""
    previous: bytes | None = client.getset(keys("holder", role), holder)  # type: ignore[assignment]
    if previous is None:
        return 0
    members: set[bytes] = client.smembers(keys("reservations"))  # type: ignore[assignment]
    sweep = client.register_script(_SWEEP)
    now = time.time()
    released = 0
    for persona_id in sorted(m.decode() for m in members):
        released += int(
            sweep(
                keys=[keys("reservations", persona_id), keys("reservations")],
                args=[repr(now), previous.decode(), persona_id],
            )
        )
    return released
