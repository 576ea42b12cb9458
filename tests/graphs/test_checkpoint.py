"""RedisCheckpointSaver against a real redis-server, directly and under a compiled StateGraph."""

from __future__ import annotations

import operator
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, TypedDict

import pytest
import redis
import redis.asyncio as aioredis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.serde.types import ERROR
from langgraph.graph import END, START, StateGraph

from graphs.checkpoint import RedisCheckpointSaver


@pytest.fixture()
def prefix() -> str:
    return f"test:ckpt:{uuid.uuid4().hex}"


@pytest.fixture()
def saver(redis_url: str, prefix: str) -> Iterator[RedisCheckpointSaver]:
    client = redis.Redis.from_url(redis_url)
    yield RedisCheckpointSaver(client, key_prefix=prefix)
    client.close()


@pytest.fixture()
async def asaver(redis_url: str, prefix: str) -> AsyncIterator[RedisCheckpointSaver]:
    aclient = aioredis.Redis.from_url(redis_url)
    yield RedisCheckpointSaver(aclient=aclient, key_prefix=prefix)
    await aclient.aclose()


def _checkpoint(**values: Any) -> Checkpoint:
    return Checkpoint(
        v=4,
        id=str(uuid6(clock_seq=-1)),
        ts=datetime.now(UTC).isoformat(),
        channel_values=values,
        channel_versions={k: 1 for k in values},
        versions_seen={},
        updated_channels=None,
    )


def _cfg(thread_id: str, checkpoint_id: str | None = None, ns: str = "") -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def _chain(saver: RedisCheckpointSaver, thread_id: str, n: int) -> list[RunnableConfig]:
    """n checkpoints, each the parent of the next; metadata step = position."""
    configs: list[RunnableConfig] = []
    parent = _cfg(thread_id)
    for step in range(n):
        meta: CheckpointMetadata = {"source": "loop", "step": step}
        parent = saver.put(parent, _checkpoint(n=step), meta, {})
        configs.append(parent)
    return configs


def _ids(configs: Any) -> list[str]:
    return [c["configurable"]["checkpoint_id"] for c in configs]


def test_put_get_round_trip(saver: RedisCheckpointSaver) -> None:
    checkpoint = _checkpoint(text="héllo", items=[1, 2, {"x": b"\x00\xff"}])
    saved = saver.put(_cfg("t"), checkpoint, {"source": "input", "step": -1}, {})
    assert saved == _cfg("t", checkpoint["id"])
    tup = saver.get_tuple(saved)
    assert tup is not None
    assert tup.checkpoint == checkpoint
    assert tup.metadata == {"source": "input", "step": -1}
    assert tup.parent_config is None
    assert tup.pending_writes == []
    assert saver.get_tuple(_cfg("t", str(uuid6()))) is None
    assert saver.get_tuple(_cfg("other")) is None


async def test_async_round_trip(asaver: RedisCheckpointSaver) -> None:
    first, second = _checkpoint(n=1), _checkpoint(n=2)
    c1 = await asaver.aput(_cfg("t"), first, {"step": 0}, {})
    c2 = await asaver.aput(c1, second, {"step": 1}, {})
    await asaver.aput_writes(c2, [("n", 3)], task_id="task")
    latest = await asaver.aget_tuple(_cfg("t"))
    assert latest is not None
    assert latest.checkpoint == second
    assert latest.parent_config == c1
    assert latest.pending_writes == [("task", "n", 3)]
    assert _ids([t.config async for t in asaver.alist(_cfg("t"))]) == _ids([c2, c1])
    assert _ids([t.config async for t in asaver.alist(_cfg("t"), limit=1)]) == _ids([c2])
    filtered = [t.config async for t in asaver.alist(_cfg("t"), filter={"step": 0})]
    assert _ids(filtered) == _ids([c1])
    await asaver.adelete_thread("t")
    assert await asaver.aget_tuple(_cfg("t")) is None


def test_latest_by_default_and_parent_config(saver: RedisCheckpointSaver) -> None:
    configs = _chain(saver, "t", 3)
    latest = saver.get_tuple(_cfg("t"))
    assert latest is not None
    assert latest.config == configs[2]
    assert latest.checkpoint["channel_values"] == {"n": 2}
    assert latest.parent_config == configs[1]
    middle = saver.get_tuple(configs[1])
    assert middle is not None and middle.parent_config == configs[0]


def test_list_order_before_limit_filter(saver: RedisCheckpointSaver) -> None:
    configs = _chain(saver, "t", 5)
    _chain(saver, "unrelated", 2)
    newest_first = _ids(reversed(configs))
    assert _ids(t.config for t in saver.list(_cfg("t"))) == newest_first
    assert _ids(t.config for t in saver.list(_cfg("t"), limit=2)) == newest_first[:2]
    assert list(saver.list(_cfg("t"), limit=0)) == []
    before = [t.config for t in saver.list(_cfg("t"), before=configs[3])]
    assert _ids(before) == newest_first[2:]
    assert _ids(t.config for t in saver.list(_cfg("t"), before=configs[3], limit=1)) == [newest_first[2]]
    assert _ids(t.config for t in saver.list(_cfg("t"), filter={"step": 3})) == [newest_first[1]]
    assert list(saver.list(_cfg("t"), filter={"step": 3, "source": "input"})) == []
    assert _ids(t.config for t in saver.list(configs[1])) == [newest_first[3]]


def test_list_spans_namespaces_unless_one_is_given(saver: RedisCheckpointSaver) -> None:
    root = saver.put(_cfg("t"), _checkpoint(), {"step": 0}, {})
    child = saver.put(_cfg("t", ns="sub:1"), _checkpoint(), {"step": 0}, {})
    assert _ids(t.config for t in saver.list({"configurable": {"thread_id": "t"}})) == _ids([root, child])
    assert _ids(t.config for t in saver.list(_cfg("t", ns="sub:1"))) == _ids([child])


def test_put_writes_become_pending_writes(saver: RedisCheckpointSaver) -> None:
    [cfg] = _chain(saver, "t", 1)
    saver.put_writes(cfg, [("a", 1), ("b", {"k": "v"})], task_id="t2", task_path="~b")
    saver.put_writes(cfg, [("a", 0)], task_id="t1", task_path="~a")
    # A regular write already stored is kept; a special write replaces the previous one.
    saver.put_writes(cfg, [("a", 99)], task_id="t1", task_path="~a")
    saver.put_writes(cfg, [(ERROR, "first")], task_id="t3", task_path="~c")
    saver.put_writes(cfg, [(ERROR, "second")], task_id="t3", task_path="~c")
    tup = saver.get_tuple(_cfg("t"))
    assert tup is not None
    # Ordered by (task_path, task_id, idx), as LangGraph replays them.
    assert tup.pending_writes == [
        ("t1", "a", 0),
        ("t2", "a", 1),
        ("t2", "b", {"k": "v"}),
        ("t3", ERROR, "second"),
    ]


def test_delete_thread_removes_every_key(saver: RedisCheckpointSaver, redis_url: str, prefix: str) -> None:
    configs = _chain(saver, "t", 3)
    saver.put_writes(configs[-1], [("n", 1)], task_id="task")
    _chain(saver, "keep", 1)
    saver.delete_thread("t")
    assert saver.get_tuple(_cfg("t")) is None
    assert list(saver.list(_cfg("t"))) == []
    client = redis.Redis.from_url(redis_url)
    assert (
        {k.decode() for k in client.scan_iter(f"{prefix}:*")}
        == {k.decode() for k in client.scan_iter(f"{prefix}:{{keep}}:*")}
        != set()
    )


def test_ttl_refreshes_the_whole_thread(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    saver = RedisCheckpointSaver(client, key_prefix=prefix, ttl_s=1000)
    configs = _chain(saver, "t", 2)
    client.expire(f"{prefix}:{{t}}:cp::{configs[0]['configurable']['checkpoint_id']}", 5)
    saver.put_writes(configs[1], [("n", 1)], task_id="task")
    ttls = [client.ttl(k) for k in client.scan_iter(f"{prefix}:*")]
    # Two checkpoints, their index, namespaces, registry and one writes hash.
    assert len(ttls) == 6 and all(900 < t <= 1000 for t in ttls)


def test_rejects_decoding_clients(redis_url: str) -> None:
    with pytest.raises(ValueError):
        RedisCheckpointSaver(redis.Redis.from_url(redis_url, decode_responses=True))


# --- a real graph: a failed node resumes from the last checkpoint --------------------------


class State(TypedDict):
    trail: Annotated[list[str], operator.add]


def _flaky_graph(calls: Counter[str], *, is_async: bool) -> StateGraph[State]:
    def step(name: str) -> dict[str, list[str]]:
        calls[name] += 1
        if name == "b" and calls[name] == 1:
            raise RuntimeError("b fails once")
        return {"trail": [name]}

    def node(name: str) -> Any:
        # LangGraph runs a node on the event loop only if it is a real coroutine function.
        async def arun(_state: State) -> dict[str, list[str]]:
            return step(name)

        def run(_state: State) -> dict[str, list[str]]:
            return step(name)

        return arun if is_async else run

    builder = StateGraph(State)
    for name in "abc":
        builder.add_node(name, node(name))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder


def test_graph_resumes_after_failure_without_rerunning(saver: RedisCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    graph = _flaky_graph(calls, is_async=False).compile(checkpointer=saver)
    config: RunnableConfig = {"configurable": {"thread_id": "run-1"}}
    with pytest.raises(RuntimeError, match="b fails once"):
        graph.invoke({"trail": []}, config)
    assert calls == {"a": 1, "b": 1}
    stalled = saver.get_tuple(config)
    assert stalled is not None and stalled.pending_writes
    assert any(channel == ERROR for _, channel, _ in stalled.pending_writes)

    assert graph.invoke(None, config) == {"trail": ["a", "b", "c"]}
    assert calls == {"a": 1, "b": 2, "c": 1}
    history = list(graph.get_state_history(config))
    assert history[0].values == {"trail": ["a", "b", "c"]} and not history[0].next


async def test_graph_resumes_through_ainvoke(asaver: RedisCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    graph = _flaky_graph(calls, is_async=True).compile(checkpointer=asaver)
    config: RunnableConfig = {"configurable": {"thread_id": "run-1"}}
    with pytest.raises(RuntimeError, match="b fails once"):
        await graph.ainvoke({"trail": []}, config)
    assert await graph.ainvoke(None, config) == {"trail": ["a", "b", "c"]}
    assert calls == {"a": 1, "b": 2, "c": 1}
    state = await graph.aget_state(config)
    assert state.values == {"trail": ["a", "b", "c"]} and not state.next
