"""A LangGraph checkpoint saver on plain Redis commands (no RedisJSON or RediSearch needed).

Key layout, for prefix P, thread T, namespace N and checkpoint C:

    P:{T}:cp:N:C   HASH  checkpoint, metadata (serde-typed blobs), parent (checkpoint id or "")
    P:{T}:w:N:C    HASH  "<task_id>:<idx>" -> one pending write (task path, task id, channel, blob)
    P:{T}:idx:N    ZSET  checkpoint ids, all scored 0 so they sort by id, i.e. by creation time
    P:{T}:ns       SET   the namespaces the thread has checkpoints in
    P:{T}:keys     SET   every key above, so a thread can be deleted or expired without SCAN
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

Pipe = redis.client.Pipeline | aioredis.client.Pipeline
Raw = bytes | str


def _str(value: Raw) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pack(head: list[Any], typed: tuple[str, bytes]) -> bytes:
    # JSON never contains a raw newline, so the first b"\n" always ends the header.
    return json.dumps([*head, typed[0]]).encode() + b"\n" + typed[1]


def _unpack(raw: Raw) -> tuple[list[Any], tuple[str, bytes]]:
    assert isinstance(raw, bytes), "the Redis client must not use decode_responses=True"
    head, _, data = raw.partition(b"\n")
    *fields, type_ = json.loads(head)
    return fields, (type_, data)


def _config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def _upper(before: RunnableConfig | None) -> str:
    before_id = get_checkpoint_id(before) if before else None
    return f"({before_id}" if before_id else "+"


def _matches(tup: CheckpointTuple, filter: dict[str, Any] | None) -> bool:
    metadata: dict[str, Any] = dict(tup.metadata)
    return all(metadata.get(k) == v for k, v in (filter or {}).items())


class RedisCheckpointSaver(BaseCheckpointSaver[str]):
    """Checkpoints in Redis; sync methods use `client`, async ones `aclient`."""

    def __init__(
        self,
        client: redis.Redis | None = None,
        aclient: aioredis.Redis | None = None,
        *,
        key_prefix: str = "chorus:ckpt",
        ttl_s: int | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        for c in (client, aclient):
            # Serialized checkpoints are binary; a decoding client would corrupt them.
            if c is not None and c.get_connection_kwargs().get("decode_responses"):
                raise ValueError("RedisCheckpointSaver needs clients with decode_responses=False")
        self.client, self.aclient = client, aclient
        self.key_prefix, self.ttl_s = key_prefix, ttl_s

    # --- keys and staging, shared by the sync and async paths --------------------------------

    def _key(self, thread_id: str, *parts: str) -> str:
        # Braces make the thread a Redis Cluster hash tag, so one MULTI can span all its keys.
        return ":".join([self.key_prefix, f"{{{thread_id}}}", *parts])

    def _sync(self) -> redis.Redis:
        if self.client is None:
            raise RuntimeError("sync methods need RedisCheckpointSaver(client=...)")
        return self.client

    def _async(self) -> aioredis.Redis:
        if self.aclient is None:
            raise RuntimeError("async methods need RedisCheckpointSaver(aclient=...)")
        return self.aclient

    def _registry(self, config: RunnableConfig) -> str:
        return self._key(config["configurable"]["thread_id"], "keys")

    def _register(self, pipe: Pipe, thread_id: str, keys: list[str], old: set[Raw]) -> None:
        registry = self._key(thread_id, "keys")
        pipe.sadd(registry, *keys)
        if self.ttl_s is not None:
            # Refresh the whole thread so a checkpoint never outlives its parents or writes.
            for key in {registry, *keys, *map(_str, old)}:
                pipe.expire(key, self.ttl_s)

    def _stage_put(
        self,
        pipe: Pipe,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        old: set[Raw],
    ) -> RunnableConfig:
        conf = config["configurable"]
        thread_id, ns, cid = conf["thread_id"], conf.get("checkpoint_ns", ""), checkpoint["id"]
        cp_key, idx_key, ns_key = (
            self._key(thread_id, "cp", ns, cid),
            self._key(thread_id, "idx", ns),
            self._key(thread_id, "ns"),
        )
        full_metadata = get_checkpoint_metadata(config, metadata)
        pipe.hset(
            cp_key,
            mapping={
                "checkpoint": _pack([], self.serde.dumps_typed(checkpoint)),
                "metadata": _pack([], self.serde.dumps_typed(full_metadata)),
                "parent": conf.get("checkpoint_id") or "",
            },
        )
        pipe.zadd(idx_key, {cid: 0})
        pipe.sadd(ns_key, ns)
        self._register(pipe, thread_id, [cp_key, idx_key, ns_key], old)
        return _config(thread_id, ns, cid)

    def _stage_writes(
        self,
        pipe: Pipe,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
        old: set[Raw],
    ) -> None:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        key = self._key(thread_id, "w", conf.get("checkpoint_ns", ""), conf["checkpoint_id"])
        for i, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, i)
            raw = _pack([task_path, task_id, idx, channel], self.serde.dumps_typed(value))
            # As in InMemorySaver: special writes (error, interrupt, resume) keep the newest,
            # regular ones the first, so a replayed task cannot rewrite what was recorded.
            if idx < 0:
                pipe.hset(key, f"{task_id}:{idx}", raw)
            else:
                pipe.hsetnx(key, f"{task_id}:{idx}", raw)
        self._register(pipe, thread_id, [key], old)

    def _stage_read(self, pipe: Pipe, thread_id: str, ns: str, cid: str) -> None:
        pipe.hgetall(self._key(thread_id, "cp", ns, cid))
        pipe.hgetall(self._key(thread_id, "w", ns, cid))

    def _tuple(
        self, thread_id: str, ns: str, cid: str, cp: dict[Raw, Raw], writes: dict[Raw, Raw]
    ) -> CheckpointTuple | None:
        if not cp:
            return None
        decoded = sorted(
            (_unpack(raw) for raw in writes.values()),
            key=lambda w: writes_sort_key(w[0][0], w[0][1], w[0][2]),
        )
        parent = _str(cp[b"parent"])
        return CheckpointTuple(
            config=_config(thread_id, ns, cid),
            checkpoint=self.serde.loads_typed(_unpack(cp[b"checkpoint"])[1]),
            metadata=self.serde.loads_typed(_unpack(cp[b"metadata"])[1]),
            parent_config=_config(thread_id, ns, parent) if parent else None,
            pending_writes=[(h[1], h[3], self.serde.loads_typed(typed)) for h, typed in decoded],
        )

    @staticmethod
    def _target(config: RunnableConfig | None) -> tuple[str, str | None, str | None]:
        if config is None:
            # Listing every thread would need a global index that TTLs cannot keep clean.
            raise ValueError("RedisCheckpointSaver needs a thread_id to look up checkpoints")
        conf = config["configurable"]
        return conf["thread_id"], conf.get("checkpoint_ns"), get_checkpoint_id(config)

    # --- sync ---------------------------------------------------------------------------------

    def _fetch(self, thread_id: str, ns: str, cid: str) -> CheckpointTuple | None:
        pipe = self._sync().pipeline(transaction=True)
        self._stage_read(pipe, thread_id, ns, cid)
        cp, writes = pipe.execute()
        return self._tuple(thread_id, ns, cid, cp, writes)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns, cid = self._target(config)
        ns = ns or ""
        if cid is None:
            latest = self._sync().zrevrangebylex(self._key(thread_id, "idx", ns), "+", "-", 0, 1)
            if not latest:
                return None
            cid = _str(latest[0])
        return self._fetch(thread_id, ns, cid)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        thread_id, ns, only = self._target(config)
        client = self._sync()
        spaces = [ns] if ns is not None else client.smembers(self._key(thread_id, "ns"))
        found = (
            tup
            for space in sorted(map(_str, spaces))
            for raw in client.zrevrangebylex(self._key(thread_id, "idx", space), _upper(before), "-")
            if only in (None, _str(raw))
            and (tup := self._fetch(thread_id, space, _str(raw))) is not None
            and _matches(tup, filter)
        )
        yield from itertools.islice(found, limit)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        client = self._sync()
        old = client.smembers(self._registry(config)) if self.ttl_s else set()
        pipe = client.pipeline(transaction=True)
        saved = self._stage_put(pipe, config, checkpoint, metadata, old)
        pipe.execute()
        return saved

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        client = self._sync()
        old = client.smembers(self._registry(config)) if self.ttl_s else set()
        pipe = client.pipeline(transaction=True)
        self._stage_writes(pipe, config, writes, task_id, task_path, old)
        pipe.execute()

    def delete_thread(self, thread_id: str) -> None:
        registry = self._key(thread_id, "keys")
        client = self._sync()
        client.unlink(registry, *client.smembers(registry))

    # --- async: the same staging, awaited ----------------------------------------------------

    async def _afetch(self, thread_id: str, ns: str, cid: str) -> CheckpointTuple | None:
        pipe = self._async().pipeline(transaction=True)
        self._stage_read(pipe, thread_id, ns, cid)
        cp, writes = await pipe.execute()
        return self._tuple(thread_id, ns, cid, cp, writes)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns, cid = self._target(config)
        ns = ns or ""
        if cid is None:
            idx_key = self._key(thread_id, "idx", ns)
            latest = await self._async().zrevrangebylex(idx_key, "+", "-", 0, 1)
            if not latest:
                return None
            cid = _str(latest[0])
        return await self._afetch(thread_id, ns, cid)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        thread_id, ns, only = self._target(config)
        client = self._async()
        spaces = [ns] if ns is not None else await client.smembers(self._key(thread_id, "ns"))
        left = limit
        for space in sorted(map(_str, spaces)):
            idx_key = self._key(thread_id, "idx", space)
            for raw in await client.zrevrangebylex(idx_key, _upper(before), "-"):
                if left is not None and left <= 0:
                    return
                if only not in (None, _str(raw)):
                    continue
                tup = await self._afetch(thread_id, space, _str(raw))
                if tup is not None and _matches(tup, filter):
                    left = None if left is None else left - 1
                    yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        client = self._async()
        old = await client.smembers(self._registry(config)) if self.ttl_s else set()
        pipe = client.pipeline(transaction=True)
        saved = self._stage_put(pipe, config, checkpoint, metadata, old)
        await pipe.execute()
        return saved

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        client = self._async()
        old = await client.smembers(self._registry(config)) if self.ttl_s else set()
        pipe = client.pipeline(transaction=True)
        self._stage_writes(pipe, config, writes, task_id, task_path, old)
        await pipe.execute()

    async def adelete_thread(self, thread_id: str) -> None:
        registry = self._key(thread_id, "keys")
        client = self._async()
        await client.unlink(registry, *await client.smembers(registry))

    async def aexpire_thread(self, thread_id: str, ttl_s: int) -> None:
        """Keep a thread `ttl_s` from now (a workflow paused for a person outlives `ttl_s` of
        the saver, which every later write refreshes again)."""
        registry = self._key(thread_id, "keys")
        client = self._async()
        async with client.pipeline(transaction=True) as pipe:
            for key in {registry.encode(), *await client.smembers(registry)}:
                pipe.expire(key, ttl_s)
            await pipe.execute()

    def get_next_version(self, current: str | None, channel: None) -> str:
        # InMemorySaver's scheme: the zero-padded counter keeps string versions in order.
        number = 0 if current is None else int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"
