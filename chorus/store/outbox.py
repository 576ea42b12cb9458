"""The outbox: posts waiting to publish, claimed by the publisher with leases.

Layout (under the key prefix):

    outbox:item:<post>   HASH  item (OutboxItem JSON of what never changes), account_id, due_at,
                               attempts, holder, lease_until, sending_since, last_error
    outbox:due           ZSET  post id -> due time (waiting)
    outbox:leased        ZSET  post id -> lease expiry (claimed by a publisher)
    outbox:inflight      HASH  account id -> the post id it is publishing (one at a time)
    outbox:held          HASH  account id -> why its posts wait (credentials stopped working)

Every change is one Lua step, so a claim, a completion and a lease that expires cannot interleave:
an item is due or leased, never both, and an account never has two posts in flight.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from chorus.models import OutboxItem
from chorus.store.keys import Keys

if TYPE_CHECKING:
    import redis.asyncio as aioredis

_STATIC_FIELDS = {"post_id", "persona_id", "account_id", "platform", "request"}

# KEYS: item, due ; ARGV: item json, account, due_at, post id
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'item', ARGV[1], 'account_id', ARGV[2], 'due_at', ARGV[3], 'attempts', 0)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

# KEYS: due, leased, inflight, held ; ARGV: now, lease_until, holder, batch, item key prefix
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]) * 4)
local claimed = {}
for _, id in ipairs(ids) do
  if #claimed >= tonumber(ARGV[4]) then break end
  local key = ARGV[5] .. id
  local account = redis.call('HGET', key, 'account_id')
  if not account then
    redis.call('ZREM', KEYS[1], id)
  elseif redis.call('HEXISTS', KEYS[4], account) == 0 and redis.call('HSETNX', KEYS[3], account, id) == 1 then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('HSET', key, 'holder', ARGV[3], 'lease_until', ARGV[2])
    claimed[#claimed + 1] = id
  end
end
return claimed
"""

# Back to due (a lease expired, or its holder is gone). KEYS: leased, due, inflight ;
# ARGV: item key prefix, then post ids
_UNLEASE_LIB = """
local function unlease(id)
  local key = ARGV[1] .. id
  local account = redis.call('HGET', key, 'account_id')
  redis.call('ZREM', KEYS[1], id)
  if not account then return end
  if redis.call('HGET', KEYS[3], account) == id then redis.call('HDEL', KEYS[3], account) end
  redis.call('HDEL', key, 'holder', 'lease_until')
  redis.call('ZADD', KEYS[2], redis.call('HGET', key, 'due_at'), id)
end
"""

# KEYS: leased, due, inflight ; ARGV: prefix, now
_EXPIRE = (
    _UNLEASE_LIB
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
for _, id in ipairs(ids) do unlease(id) end
return #ids
"""
)

# KEYS: leased, due, inflight ; ARGV: prefix, holder
_RELEASE_HOLDER = (
    _UNLEASE_LIB
    + """
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('HGET', ARGV[1] .. id, 'holder') == ARGV[2] then unlease(id); n = n + 1 end
end
return n
"""
)

# Done with an item (published, failed, cancelled). KEYS: item, due, leased, inflight ;
# ARGV: post id, holder ('' = whoever holds it)
_FINISH = """
local holder = redis.call('HGET', KEYS[1], 'holder')
if ARGV[2] ~= '' and holder and holder ~= ARGV[2] then return 0 end
local account = redis.call('HGET', KEYS[1], 'account_id')
if account and redis.call('HGET', KEYS[4], account) == ARGV[1] then redis.call('HDEL', KEYS[4], account) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('DEL', KEYS[1])
"""

# Later again (rate limit, backoff, waiting for credentials). KEYS: item, due, leased, inflight ;
# ARGV: post id, holder, due_at, error, count attempt (1/0), keep sending_since (1/0)
_RESCHEDULE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder and holder ~= ARGV[2] then return 0 end
local account = redis.call('HGET', KEYS[1], 'account_id')
if redis.call('HGET', KEYS[4], account) == ARGV[1] then redis.call('HDEL', KEYS[4], account) end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[1], 'holder', 'lease_until')
if ARGV[6] ~= '1' then redis.call('HDEL', KEYS[1], 'sending_since') end
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
redis.call('HSET', KEYS[1], 'due_at', ARGV[3], 'last_error', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# KEYS: item ; ARGV: holder, now
_MARK_SENDING = """
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'sending_since', ARGV[2])
return 1
"""

# Move a waiting item's due time (an approver's new publish time). KEYS: item, due ; ARGV: id, at
_MOVE = """
if redis.call('ZSCORE', KEYS[2], ARGV[1]) == false then return 0 end
redis.call('HSET', KEYS[1], 'due_at', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""


def _decode(row: dict[Any, Any]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in row.items()}


def _item(row: dict[str, str]) -> OutboxItem:
    def number(name: str) -> float | None:
        return float(row[name]) if row.get(name) else None

    return OutboxItem.model_validate(
        {
            **json.loads(row["item"]),
            "due_at": float(row["due_at"]),
            "attempts": int(row.get("attempts", 0)),
            "holder": row.get("holder") or None,
            "lease_until": number("lease_until"),
            "sending_since": number("sending_since"),
            "last_error": row.get("last_error") or None,
        }
    )


class OutboxRepo:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r, self._k = client, keys
        self._prefix = keys("outbox", "item", "")
        self._enqueue = client.register_script(_ENQUEUE)
        self._claim = client.register_script(_CLAIM)
        self._expire = client.register_script(_EXPIRE)
        self._release_holder = client.register_script(_RELEASE_HOLDER)
        self._finish = client.register_script(_FINISH)
        self._reschedule = client.register_script(_RESCHEDULE)
        self._mark_sending = client.register_script(_MARK_SENDING)
        self._move = client.register_script(_MOVE)

    def _key(self, post_id: str) -> str:
        return self._prefix + post_id

    @property
    def _due(self) -> str:
        return self._k("outbox", "due")

    @property
    def _leased(self) -> str:
        return self._k("outbox", "leased")

    @property
    def _inflight(self) -> str:
        return self._k("outbox", "inflight")

    @property
    def _held(self) -> str:
        return self._k("outbox", "held")

    async def enqueue(self, item: OutboxItem) -> bool:
        """Put a post in the outbox, due at `item.due_at`; False (and nothing changed) when it is
        there already, so a workflow step that runs twice queues it once."""
        static = item.model_dump_json(include=_STATIC_FIELDS)
        added = await self._enqueue(
            keys=[self._key(item.post_id), self._due],
            args=[static, item.account_id, repr(item.due_at), item.post_id],
        )
        return bool(added)

    async def get(self, post_id: str) -> OutboxItem | None:
        row = _decode(await self._r.hgetall(self._key(post_id)))
        return _item(row) if row else None

    async def claim(self, holder: str, now: float, lease_s: float, batch: int) -> list[OutboxItem]:
        """Due items, at most one per account and none of a held account, leased to `holder`."""
        ids: list[Any] = await self._claim(
            keys=[self._due, self._leased, self._inflight, self._held],
            args=[repr(now), repr(now + lease_s), holder, batch, self._prefix],
        )
        items = []
        for raw in ids:
            item = await self.get(raw.decode())
            if item is not None:
                items.append(item)
        return items

    async def mark_sending(self, post_id: str, holder: str, now: float) -> bool:
        return bool(await self._mark_sending(keys=[self._key(post_id)], args=[holder, repr(now)]))

    async def complete(self, post_id: str, holder: str = "") -> bool:
        """Remove an item that is done (published, or nothing left to send)."""
        return bool(
            await self._finish(
                keys=[self._key(post_id), self._due, self._leased, self._inflight], args=[post_id, holder]
            )
        )

    async def fail(self, post_id: str, holder: str, message: str) -> bool:
        """Remove an item that failed for good; the post keeps the message (`last_error`)."""
        return await self.complete(post_id, holder)

    async def cancel(self, post_id: str) -> bool:
        """Take a post out of the outbox whoever holds it (rejected or deleted meanwhile)."""
        return await self.complete(post_id, "")

    async def reschedule(
        self,
        post_id: str,
        holder: str,
        due_at: float,
        *,
        error: str,
        count_attempt: bool,
        keep_sending: bool = False,
    ) -> bool:
        """Due again at `due_at`. `keep_sending`: the last send's answer was lost, so the next
        attempt must check the platform first."""
        return bool(
            await self._reschedule(
                keys=[self._key(post_id), self._due, self._leased, self._inflight],
                args=[post_id, holder, repr(due_at), error, int(count_attempt), int(keep_sending)],
            )
        )

    async def move(self, post_id: str, due_at: float) -> bool:
        """A waiting item's new due time; False when it is not waiting (claimed, or absent)."""
        return bool(await self._move(keys=[self._key(post_id), self._due], args=[post_id, repr(due_at)]))

    async def expire_leases(self, now: float | None = None) -> int:
        """Items whose lease ran out (their publisher died) are due again."""
        now = time.time() if now is None else now
        keys = [self._leased, self._due, self._inflight]
        return int(await self._expire(keys=keys, args=[self._prefix, repr(now)]))

    async def release_holder(self, holder: str) -> int:
        """Every item `holder` held is due again (a restarted publisher takes back its own)."""
        keys = [self._leased, self._due, self._inflight]
        return int(await self._release_holder(keys=keys, args=[self._prefix, holder]))

    async def hold_account(self, account_id: str, reason: str) -> None:
        """Claim none of the account's posts until `release_account` (new credentials)."""
        await self._r.hset(self._held, account_id, reason)

    async def release_account(self, account_id: str) -> bool:
        return bool(await self._r.hdel(self._held, account_id))

    async def held_accounts(self) -> dict[str, str]:
        return _decode(await self._r.hgetall(self._held))

    async def waiting_for(self, account_id: str) -> list[str]:
        """The posts of one account in the outbox (waiting or claimed)."""
        ids: list[Any] = await self._r.zrange(self._due, 0, -1)
        ids += await self._r.zrange(self._leased, 0, -1)
        found = []
        for raw in ids:
            post_id = raw.decode()
            if await self._r.hget(self._key(post_id), "account_id") == account_id.encode():
                found.append(post_id)
        return found

    async def depth(self) -> int:
        """Items waiting or claimed."""
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.zcard(self._due)
            pipe.zcard(self._leased)
            due, leased = await pipe.execute()
        return int(due) + int(leased)

    async def oldest_due_age(self, now: float | None = None) -> float | None:
        """How long the longest-overdue waiting item has been due; None when none is due."""
        now = time.time() if now is None else now
        rows: list[Any] = await self._r.zrangebyscore(
            self._due, "-inf", repr(now), start=0, num=1, withscores=True
        )
        return now - float(rows[0][1]) if rows else None
