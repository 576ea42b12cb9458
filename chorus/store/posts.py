"""Stored posts, their indexes (all, per persona, per lifecycle state), the persona's counters and
recent texts, and each post's history of lifecycle moves.

A post is saved once per job (its id is the job's) and counted in the same Lua step, so a retried
job never counts twice; deleting a post keeps the counters, which record what was paid for.

A lifecycle move is one optimistic transaction (WATCH the post, check the move, MULTI): two
writers racing on one post (an approver and the publisher, two approvers) cannot both win, and
the post, its state index and its history change together or not at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import WatchError

from chorus.errors import IllegalTransition, UnknownPost
from chorus.lifecycle import ALLOWED_MOVES, LIFECYCLE_STATES, LifecycleState, Transition, check_move
from chorus.models import InboxQuery, PersonaStats, Post, PostHistory, PostPage, PostQuery, parse_cursor
from chorus.store.keys import Keys

if TYPE_CHECKING:
    import redis.asyncio as aioredis


# Stores a post once (the job id keys it), indexes it and counts it, atomically.
_SAVE_POST = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
  redis.call('HINCRBY', KEYS[4], 'posts', 1)
  redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
  redis.call('HINCRBYFLOAT', KEYS[4], 'cost_usd', ARGV[5])
  redis.call('HINCRBY', KEYS[4], 'prompt_tokens', ARGV[6])
  redis.call('HINCRBY', KEYS[4], 'completion_tokens', ARGV[7])
  if ARGV[4] == 'accepted' then
    redis.call('HINCRBYFLOAT', KEYS[4], 'accepted_cost_usd', ARGV[5])
    redis.call('LPUSH', KEYS[5], ARGV[8])
    redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[9]) - 1)
  end
  redis.call('ZADD', KEYS[6], ARGV[2], ARGV[3])
  redis.call('RPUSH', KEYS[7], ARGV[10])
  return 1
end
return 0
"""


# Deletes a post once and unindexes it; its entry in the recent-posts list (what novelty is checked
# against) goes too, so a deleted text no longer shapes new posts.
_DELETE_POST = """
if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('LREM', KEYS[4], 1, ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[6])
return 1
"""


def _changed(post: Post, updates: dict[str, Any]) -> Post:
    # Validated, so an update of the wrong type fails before anything is written.
    return Post.model_validate({**post.model_dump(), **updates})


def _recent_entry(post: Post) -> str:
    # Byte-identical between save and delete: LREM matches the stored string exactly.
    return json.dumps({"text": post.text, "topic": post.topic})


class PostRepo:
    def __init__(self, client: aioredis.Redis, keys: Keys, recent_window: int = 20) -> None:
        self._r, self._k = client, keys
        self._recent_window = recent_window
        self._save = client.register_script(_SAVE_POST)
        self._delete = client.register_script(_DELETE_POST)

    def _state_index(self, state: str) -> str:
        return self._k("posts", "state", state)

    def _history(self, post_id: str) -> str:
        return self._k("post", post_id, "history")

    async def save(self, post: Post) -> bool:
        """Store a post; False when this job's post was already stored (a retried job)."""
        recent = _recent_entry(post)
        first = Transition(
            from_state=None,
            to_state=post.state,
            actor="system",
            at=post.created_at,
            reason="; ".join(post.reasons) if post.reasons else "review",
        )
        stored = await self._save(
            keys=[
                self._k("post", post.id),
                self._k("posts"),
                self._k("posts", "persona", post.persona_id),
                self._k("stats", post.persona_id),
                self._k("recent", post.persona_id),
                self._state_index(post.state),
                self._history(post.id),
            ],
            args=[
                post.model_dump_json(),
                post.created_at,
                post.id,
                post.status,
                repr(post.cost_usd),
                post.prompt_tokens,
                post.completion_tokens,
                recent,
                self._recent_window,
                first.model_dump_json(),
            ],
        )
        return bool(stored)

    async def get(self, post_id: str) -> Post | None:
        raw = await self._r.get(self._k("post", post_id))
        return Post.model_validate_json(raw) if raw else None

    async def delete(self, post_id: str) -> bool:
        """Delete a post and its index entries; False when there is none.

        The persona's counters (posts, cost, tokens) stay: they record what was generated and
        paid for, which deleting the text does not undo.
        """
        post = await self.get(post_id)
        if post is None:
            return False
        deleted = await self._delete(
            keys=[
                self._k("post", post_id),
                self._k("posts"),
                self._k("posts", "persona", post.persona_id),
                self._k("recent", post.persona_id),
                self._state_index(post.state),
                self._history(post_id),
            ],
            args=[post_id, _recent_entry(post)],
        )
        return bool(deleted)

    async def recent(self, persona_id: str) -> list[dict[str, str]]:
        """The persona's latest accepted posts ({text, topic}), newest first."""
        rows = await self._r.lrange(self._k("recent", persona_id), 0, self._recent_window - 1)
        return [json.loads(r) for r in rows]

    async def page(self, query: PostQuery) -> PostPage:
        """Newest first. The cursor is the (score, id) of the last post returned."""
        persona_id, status, since, until = query.persona_id, query.status, query.since, query.until
        state = query.state
        cursor, limit = query.cursor, query.limit
        index = self._k("posts", "persona", persona_id) if persona_id else self._k("posts")
        top: str = f"({until}" if until is not None else "+inf"
        skip_id: str | None = None
        skip_score = 0.0
        if cursor:
            skip_score, skip_id = parse_cursor(cursor)
            top = repr(skip_score)
        bottom = str(since) if since is not None else "-inf"
        found: list[Post] = []
        # Over-fetch only when a status filter may skip posts; otherwise a page is one read.
        filtered = status is not None or state is not None
        offset, batch = 0, (limit if not filtered else max(limit * 2, 50))
        while len(found) < limit:
            ids: list[Any] = await self._r.zrevrangebyscore(
                index, top, bottom, start=offset, num=batch, withscores=True
            )
            if not ids:
                break
            offset += len(ids)
            wanted = [(m.decode(), s) for m, s in ids]
            if skip_id is not None:
                # Posts sharing the cursor's score come after it only if their id sorts lower.
                wanted = [(i, s) for i, s in wanted if not (s == skip_score and i >= skip_id)]
            raws = await self._r.mget([self._k("post", i) for i, _ in wanted]) if wanted else []
            for raw in raws:
                if raw is None:
                    continue
                post = Post.model_validate_json(raw)
                if (status is None or post.status == status) and (state is None or post.state == state):
                    found.append(post)
                    if len(found) == limit:
                        break
        next_cursor = None
        if len(found) == limit:
            last = found[-1]
            next_cursor = f"{last.created_at!r}:{last.id}"
        return PostPage(posts=found, next_cursor=next_cursor)

    async def transition(
        self,
        post_id: str,
        target: LifecycleState,
        *,
        actor: str,
        reason: str | None = None,
        updates: dict[str, Any] | None = None,
        expect: tuple[LifecycleState, ...] | None = None,
    ) -> Post:
        """Move a post to `target`, recording who, when and why, with `updates` to its fields in
        the same step. Raises UnknownPost, or IllegalTransition (naming the state it is in and
        its allowed moves) when the lifecycle does not lead there from its current state, or
        when `expect` is given and the post is in none of those states."""

        def move(post: Post, pipe: Any) -> Post:
            current = post.state
            if expect is not None and current not in expect:
                raise IllegalTransition(post_id, current, target, list(ALLOWED_MOVES[current]))
            check_move(post_id, current, target)
            now = time.time()
            moved = _changed(post, {**(updates or {}), "state": target, "state_changed_at": now})
            entry = Transition(from_state=current, to_state=target, actor=actor, at=now, reason=reason)
            pipe.zrem(self._state_index(current), post_id)
            pipe.zadd(self._state_index(target), {post_id: now})
            pipe.rpush(self._history(post_id), entry.model_dump_json())
            return moved

        return await self._rewrite(post_id, move)

    async def update_fields(self, post_id: str, expect: tuple[LifecycleState, ...], **updates: Any) -> Post:
        """Change a post's fields without moving it (a new publish time on a scheduled post),
        only while it is in one of the `expect` states."""

        def change(post: Post, pipe: Any) -> Post:
            if post.state not in expect:
                allowed: list[str] = list(ALLOWED_MOVES[post.state])
                raise IllegalTransition(post_id, post.state, " or ".join(expect), allowed)
            return _changed(post, updates)

        return await self._rewrite(post_id, change)

    async def _rewrite(self, post_id: str, change: Callable[[Post, Any], Post]) -> Post:
        """Read the post, let `change` check it, stage its extra writes and return the new post,
        and write it all in one transaction that retries if the post changed meanwhile."""
        key = self._k("post", post_id)
        async with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise UnknownPost(post_id)
                    pipe.multi()
                    changed = change(Post.model_validate_json(raw), pipe)
                    pipe.set(key, changed.model_dump_json())
                    await pipe.execute()
                    return changed
                except WatchError:
                    continue

    async def set_decision(self, post_id: str, decision: dict[str, Any], ttl_s: int) -> None:
        """A reviewer's answer, kept until the paused workflow has read it."""
        await self._r.set(self._k("post", post_id, "decision"), json.dumps(decision), ex=ttl_s)

    async def decision(self, post_id: str) -> dict[str, Any] | None:
        raw = await self._r.get(self._k("post", post_id, "decision"))
        return json.loads(raw) if raw else None

    async def clear_decision(self, post_id: str) -> None:
        await self._r.delete(self._k("post", post_id, "decision"))

    async def history(self, post_id: str) -> PostHistory:
        post = await self.get(post_id)
        if post is None:
            raise UnknownPost(post_id)
        rows = await self._r.lrange(self._history(post_id), 0, -1)
        return PostHistory(
            post_id=post_id, state=post.state, transitions=[Transition.model_validate_json(r) for r in rows]
        )

    async def in_state(self, state: LifecycleState, limit: int = 1000) -> list[Post]:
        """Posts in `state`, longest there first."""
        ids: list[Any] = await self._r.zrange(self._state_index(state), 0, limit - 1)
        return await self._many([i.decode() for i in ids])

    async def _many(self, ids: list[str]) -> list[Post]:
        raws = await self._r.mget([self._k("post", i) for i in ids]) if ids else []
        return [Post.model_validate_json(r) for r in raws if r is not None]

    async def inbox(self, query: InboxQuery, now: float | None = None) -> list[Post]:
        """What waits for approval, longest waiting first, filtered by persona, platform, age."""
        now = time.time() if now is None else now
        top = f"{now - query.older_than_s}" if query.older_than_s is not None else "+inf"
        bottom = f"{now - query.newer_than_s}" if query.newer_than_s is not None else "-inf"
        found: list[Post] = []
        offset, batch = 0, max(query.limit, 100)
        while len(found) < query.limit:
            ids: list[Any] = await self._r.zrangebyscore(
                self._state_index("pending_approval"), bottom, top, start=offset, num=batch
            )
            if not ids:
                break
            offset += len(ids)
            for post in await self._many([i.decode() for i in ids]):
                if query.persona_id is not None and post.persona_id != query.persona_id:
                    continue
                if query.platform is not None and post.platform != query.platform.value:
                    continue
                found.append(post)
                if len(found) == query.limit:
                    break
        return found

    async def count_by_state(self) -> dict[str, int]:
        async with self._r.pipeline(transaction=False) as pipe:
            for state in LIFECYCLE_STATES:
                pipe.zcard(self._state_index(state))
            counts: list[int] = await pipe.execute()
        return dict(zip(LIFECYCLE_STATES, (int(c) for c in counts), strict=True))

    async def lifetime_costs(self, persona_ids: list[str]) -> dict[str, float]:
        """What each persona's posts have cost in all, from the same counters as `stats`."""
        async with self._r.pipeline(transaction=False) as pipe:
            for persona_id in persona_ids:
                pipe.hget(self._k("stats", persona_id), "cost_usd")
            replies: list[bytes | None] = await pipe.execute()
        return {p: float(r or 0) for p, r in zip(persona_ids, replies, strict=True)}

    async def stats(self, persona_id: str, spend_today: float, budget: float) -> PersonaStats:
        fields: dict[Any, Any] = await self._r.hgetall(self._k("stats", persona_id))
        raw = {k.decode(): v.decode() for k, v in fields.items()}
        accepted = int(raw.get("accepted", 0))
        accepted_cost = float(raw.get("accepted_cost_usd", 0))
        cost = float(raw.get("cost_usd", 0))
        spent = float(raw.get("spent_usd", 0))
        return PersonaStats(
            persona_id=persona_id,
            posts=int(raw.get("posts", 0)),
            accepted=accepted,
            rejected=int(raw.get("rejected", 0)),
            cost_usd=cost,
            rejected_cost_usd=max(0.0, cost - accepted_cost),
            spent_usd=spent,
            failed_spend_usd=float(raw.get("failed_spend_usd", 0)),
            # Spend recorded before the ledger counted it (or by calls made without a ledger) is
            # not known: never show a negative remainder.
            unposted_spend_usd=max(0.0, spent - cost),
            spend_today_usd=spend_today,
            daily_budget_usd=budget,
            cost_per_accepted_post_usd=accepted_cost / accepted if accepted else None,
            prompt_tokens=int(raw.get("prompt_tokens", 0)),
            completion_tokens=int(raw.get("completion_tokens", 0)),
        )
