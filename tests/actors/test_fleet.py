"""Persona actors on a real local Ray: jobs, events, crash recovery, passivation, serialisation, budgets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import ray

from actors.directory import DIRECTORY_NAME, persona_actor_name
from actors.fleet import Fleet
from actors.gateway import GATEWAY_NAME
from chorus.llm.pricing import PriceTable
from chorus.llm.router import max_prompt_tokens
from chorus.models import PostQuery
from chorus.persona import PersonaSpec
from chorus.settings import Settings
from graphs.content.prompts import hook_messages
from tests.support.api import assert_no_internals
from tests.support.personas import ALL_LOCAL, NO_CACHE, make_persona, unique_id


def persona_processes() -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.startswith("ray::PersonaActor"))


async def _events(fleet: Fleet, job_id: str) -> list[tuple[str, str | None]]:
    return [(e.type, e.data.get("node")) async for e in fleet.events(job_id)]


async def _job_writing_its_body(fleet: Fleet, prefix: str) -> tuple[PersonaSpec, str]:
    """A new persona's job, returned once its hook is done and its body is being written."""
    spec = make_persona(unique_id(prefix), model_policy=ALL_LOCAL, rules=NO_CACHE)
    await fleet.apply(spec)
    [job_id] = await fleet.generate(spec.id, 1)
    async for event in fleet.events(job_id):
        if event.type == "node" and event.data["node"] == "hook":
            break
    return spec, job_id


async def test_generate_stores_a_costed_post_and_streams_every_node(fleet: Fleet) -> None:
    spec = make_persona(unique_id("fleet"), rules=NO_CACHE)  # its cost must be a real call's
    assert await fleet.apply(spec) is True
    [job_id] = await fleet.generate(spec.id, 1)
    job = await fleet.wait(job_id, timeout_s=180)
    assert job.status == "done", job.error
    post = await fleet.post_repo.get(job_id)
    assert post is not None and post.text and post.status in ("accepted", "rejected")
    assert post.cost_usd > 0 and post.prompt_tokens > 0 and post.completion_tokens > 0
    assert post.tiers["hook"] == "premium" and post.tiers["body"] == "local"
    events = await _events(fleet, job_id)
    nodes = [n for kind, n in events if kind == "node"]
    assert nodes[:4] == ["plan", "hook", "body", "review"] and nodes[-1] == "finalize"
    assert [kind for kind, _ in events][-2:] == ["post", "end"]
    stats = await fleet.stats(spec.id)
    assert stats.posts == 1 and stats.cost_usd == pytest.approx(post.cost_usd)


async def test_actor_killed_mid_workflow_restarts_and_stores_exactly_one_post(
    fleet: Fleet, fleet_settings: Settings
) -> None:
    spec, job_id = await _job_writing_its_body(fleet, "crash")
    actor = ray.get_actor(persona_actor_name(spec.id), namespace=fleet_settings.ray_namespace)
    ray.kill(actor, no_restart=False)
    job = await fleet.wait(job_id, timeout_s=180)
    assert job.status == "done", job.error
    assert job.attempts >= 2, "the job should have been re-delivered to the restarted actor"
    page = await fleet.posts(PostQuery(persona_id=spec.id))
    assert [p.id for p in page.posts] == [job_id]
    [post] = page.posts
    assert [n.node for n in post.nodes].count("hook") == 1, "the finished hook must not run again"
    assert (await fleet.stats(spec.id)).posts == 1


async def test_model_gateway_killed_mid_call_restarts_and_the_job_completes(
    fleet: Fleet, fleet_settings: Settings
) -> None:
    spec, job_id = await _job_writing_its_body(fleet, "gwcrash")  # its model call is in the gateway
    gateway = ray.get_actor(GATEWAY_NAME, namespace=fleet_settings.ray_namespace)
    ray.kill(gateway, no_restart=False)
    job = await fleet.wait(job_id, timeout_s=180)
    assert job.status == "done", job.error
    [post] = (await fleet.posts(PostQuery(persona_id=spec.id))).posts
    assert post.id == job_id and [n.node for n in post.nodes].count("hook") == 1
    assert await gateway.ping.remote()  # the gateway is back for everyone else
    # The killed call's reservation was given back by the restarted gateway: what the persona
    # spent is what the stored post's calls cost, with no phantom of the lost call on top.
    stats = await fleet.stats(spec.id)
    assert stats.spend_today_usd == pytest.approx(post.cost_usd, rel=1e-6)
    assert await fleet.ledger(spec).outstanding() == []


async def test_jobs_of_one_persona_run_one_at_a_time_and_add_up(fleet: Fleet) -> None:
    spec = make_persona(unique_id("serial"), model_policy=ALL_LOCAL)
    await fleet.apply(spec)
    job_ids = await asyncio.gather(*(fleet.generate(spec.id, 1) for _ in range(3)))
    jobs = [await fleet.wait(j, timeout_s=240) for [j] in job_ids]
    assert all(j.status == "done" for j in jobs), [j.error for j in jobs]
    spans = sorted((j.started_at or 0, j.finished_at or 0) for j in jobs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "two jobs of one persona overlapped"
    posts = (await fleet.posts(PostQuery(persona_id=spec.id))).posts
    stats = await fleet.stats(spec.id)
    assert stats.posts == len(posts) == 3
    assert stats.accepted + stats.rejected == 3
    assert stats.cost_usd == pytest.approx(sum(p.cost_usd for p in posts), rel=1e-9)
    assert stats.spend_today_usd == pytest.approx(stats.cost_usd, rel=1e-9)


async def test_tiny_budget_stops_with_budget_exceeded_and_never_overspends(
    fleet: Fleet, fleet_settings: Settings
) -> None:
    # No cache: a free cached answer would let the job finish inside any budget.
    probe = make_persona(unique_id("broke"), model_policy=ALL_LOCAL, rules=NO_CACHE)
    # Room for the hook's worst case and not much more: the body's reservation cannot fit.
    hook_worst = PriceTable(fleet_settings.pricing).cost(
        "local", fleet_settings.local.model, max_prompt_tokens(hook_messages(probe, probe.topics[0])), 40
    )
    spec = probe.model_copy(update={"daily_budget_usd": hook_worst * 1.2})
    await fleet.apply(spec)
    [job_id] = await fleet.generate(spec.id, 1)
    job = await fleet.wait(job_id, timeout_s=120)
    assert job.status == "budget_exceeded"
    assert job.error and "daily budget" in job.error
    stats = await fleet.stats(spec.id)
    assert 0 < stats.spend_today_usd <= spec.daily_budget_usd
    assert stats.posts == 0
    events = await _events(fleet, job_id)
    assert events[-1] == ("end", None)
    # A stable code and one line with the figures and the reset time, not Ray's traceback.
    assert job.error_code == "budget_exceeded"
    assert len(job.error.splitlines()) == 1 and "resets at" in job.error and "UTC" in job.error
    assert_no_internals(job.error)
    # What the job spent before it stopped shows next to the cost of posts (none).
    assert stats.failed_spend_usd == pytest.approx(stats.spend_today_usd, rel=1e-6)
    assert stats.unposted_spend_usd == pytest.approx(stats.spend_today_usd, rel=1e-6)
    assert stats.cost_usd == 0


async def test_directory_caps_live_persona_processes_and_passivates_idle_ones(
    fleet_settings: Settings,
) -> None:
    cap = 2
    settings = fleet_settings.model_copy(
        update={
            "ray_namespace": unique_id("captest"),
            "fleet": fleet_settings.fleet.model_copy(update={"max_active_personas": cap}),
        }
    )
    fleet = Fleet(settings)
    baseline = persona_processes()
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(persona_processes() - baseline)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        specs = [make_persona(unique_id("cap"), model_policy=ALL_LOCAL) for _ in range(cap + 2)]
        for spec in specs:
            await fleet.apply(spec)
        job_ids = [j for spec in specs for j in await fleet.generate(spec.id, 1)]
        jobs = [await fleet.wait(j, timeout_s=300) for j in job_ids]
    finally:
        stop.set()
        sampler.join()
    assert all(j.status == "done" for j in jobs), [j.error for j in jobs]
    assert samples and max(samples) <= cap, f"saw {max(samples)} persona processes, cap {cap}"
    directory = await fleet.directory()
    status = await directory.status.remote()
    assert status["activations"] == cap + 2 and status["peak_active"] == cap
    assert len(status["active"]) <= cap
    passivated = await directory.passivate_idle.remote(0.0)
    assert sorted(passivated) == sorted(status["active"])
    assert (await directory.status.remote())["active"] == []
    ray.kill(ray.get_actor(DIRECTORY_NAME, namespace=settings.ray_namespace))
    await fleet.redis.aclose()


async def test_scheduler_queues_each_due_slot_of_an_autoposting_persona_once(fleet: Fleet) -> None:
    cadence = {"posts_per_day": 4, "active_hours": [8, 16], "timezone": "UTC", "autopost": True}
    # Slots at 09:00 11:00 13:00 15:00; no cache, so no cached answers are left for other tests.
    spec = make_persona(unique_id("auto"), cadence=cadence, rules=NO_CACHE)
    manual = make_persona(unique_id("manual"), cadence={**cadence, "autopost": False})
    await fleet.apply(spec)
    await fleet.apply(manual)
    directory = await fleet.directory()
    day = datetime(2026, 6, 15, tzinfo=UTC)
    at_1330, at_1510 = (
        (day + timedelta(hours=13, minutes=30)).timestamp(),
        (day + timedelta(hours=15.2)).timestamp(),
    )

    async def queued_at(now: float) -> dict[str, list[str]]:
        by_persona: dict[str, list[str]] = {}
        for job_id in await directory.schedule_due.remote(now):
            job = await fleet.job(job_id)
            assert job is not None
            by_persona.setdefault(job.persona_id, []).append(job_id)
        return by_persona

    # 11:00 is more than the catch-up hour late, 13:00 is due; the manual persona gets nothing.
    first = await queued_at(at_1330)
    assert len(first.get(spec.id, [])) == 1 and manual.id not in first
    assert spec.id not in await queued_at(at_1330)  # claimed once, however often it runs
    second = await queued_at(at_1510)
    assert len(second.get(spec.id, [])) == 1
    job_ids = first[spec.id] + second[spec.id]
    for job_id in job_ids:
        job = await fleet.wait(job_id, timeout_s=180)
        assert job.status == "done" and job.source == "schedule", job
    assert sorted(p.id for p in (await fleet.posts(PostQuery(persona_id=spec.id))).posts) == sorted(job_ids)

    schedule = await fleet.schedule(spec.id, now=at_1510)
    assert schedule.autopost and schedule.day == day.date()
    assert [s.at.strftime("%H:%M") for s in schedule.slots] == ["09:00", "11:00", "13:00", "15:00"]
    assert [s.job_id for s in schedule.slots] == [None, None, *job_ids]

    # Turned off by an update, the persona is no longer scheduled: the next day's 09:00 is skipped.
    await fleet.apply(
        spec.model_copy(update={"cadence": spec.cadence.model_copy(update={"autopost": False})})
    )
    assert spec.id not in await queued_at((day + timedelta(days=1, hours=9, minutes=10)).timestamp())


async def test_persona_killed_mid_hook_leaves_no_reservation_and_its_lost_call_shows_as_unposted(
    fleet: Fleet, fleet_settings: Settings
) -> None:
    spec = make_persona(unique_id("hookcrash"), model_policy=ALL_LOCAL, rules=NO_CACHE)
    await fleet.apply(spec)
    [job_id] = await fleet.generate(spec.id, 1)
    async for event in fleet.events(job_id):
        if event.type == "node" and event.data["node"] == "plan":
            break  # the hook's model call is on its way
    actor = ray.get_actor(persona_actor_name(spec.id), namespace=fleet_settings.ray_namespace)
    ray.kill(actor, no_restart=False)
    job = await fleet.wait(job_id, timeout_s=180)
    assert job.status == "done", job.error
    [post] = (await fleet.posts(PostQuery(persona_id=spec.id))).posts
    ledger = fleet.ledger(spec)
    assert await ledger.outstanding() == []
    stats = await fleet.stats(spec.id)
    # Every cent spent is either in the stored post or shown as spend no post accounts for (the
    # lost call's answer, paid for and then asked again by the restarted actor).
    assert stats.spent_usd == pytest.approx(stats.spend_today_usd, rel=1e-6)
    assert stats.spend_today_usd == pytest.approx(post.cost_usd + stats.unposted_spend_usd, rel=1e-6)
    assert stats.unposted_spend_usd >= 0 and stats.failed_spend_usd == 0


def _persona_actors(namespace: str) -> list[str]:
    prefix = persona_actor_name("")
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace and a["name"].startswith(prefix)
    ]


async def test_directory_killed_three_times_resumes_its_jobs_and_loops_by_itself(
    fleet_settings: Settings,
) -> None:
    # A fleet of its own (namespace and Redis prefix): its restarted directory resumes only its jobs.
    namespace = unique_id("dirkill")
    settings = fleet_settings.model_copy(
        update={
            "ray_namespace": namespace,
            "redis": fleet_settings.redis.model_copy(update={"key_prefix": namespace}),
            "fleet": fleet_settings.fleet.model_copy(
                update={"idle_passivate_s": 2, "schedule_interval_s": 1, "schedule_catch_up_s": 900}
            ),
        }
    )
    fleet = Fleet(settings)
    try:
        spec = make_persona(unique_id("dirkill"), model_policy=ALL_LOCAL, rules=NO_CACHE)
        await fleet.apply(spec)
        running, queued = await fleet.generate(spec.id, 2)  # one persona: the second one waits
        async for event in fleet.events(running):
            if event.type == "node" and event.data["node"] == "hook":
                break
        directory = ray.get_actor(DIRECTORY_NAME, namespace=namespace)
        for _ in range(3):
            ray.kill(directory, no_restart=False)
            assert await directory.ping.remote()  # Ray restarted it; nobody called start()
            await asyncio.sleep(1.0)
        jobs = [await fleet.wait(j, timeout_s=300) for j in (running, queued)]
        assert [j.status for j in jobs] == ["done", "done"], [j.error for j in jobs]
        assert [j.attempts for j in jobs] == [1, 1], "a job ran more than once"
        assert sorted(p.id for p in (await fleet.posts(PostQuery(persona_id=spec.id))).posts) == sorted(
            [running, queued]
        )
        for job_id in (running, queued):
            events = await _events(fleet, job_id)
            assert [kind for kind, _ in events].count("end") == 1
            assert [n for kind, n in events if kind == "node"].count("hook") == 1
        stats = await fleet.stats(spec.id)
        assert stats.posts == 2 and await fleet.queue_depth() == 0

        # The restarted directory's scheduler runs: an autoposting persona gets its due slot
        # (96 a day over the whole day: one slot in every 15-minute catch-up window).
        cadence = {"posts_per_day": 96, "active_hours": [0, 24], "timezone": "UTC", "autopost": True}
        auto = make_persona(unique_id("dirauto"), model_policy=ALL_LOCAL, cadence=cadence)
        await fleet.apply(auto)
        deadline = time.monotonic() + 60
        scheduled: list[str] = []
        while not scheduled and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            scheduled = [s.job_id for s in (await fleet.schedule(auto.id)).slots if s.job_id]
        assert len(scheduled) == 1, "the restarted directory's scheduler queued nothing"
        await fleet.apply(
            auto.model_copy(update={"cadence": auto.cadence.model_copy(update={"autopost": False})})
        )
        auto_job = await fleet.wait(scheduled[0], timeout_s=180)
        assert auto_job.status == "done" and auto_job.source == "schedule", auto_job

        # And its passivation: every persona actor, those a dead directory started included, is
        # stopped once idle.
        deadline = time.monotonic() + 60
        while _persona_actors(namespace) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert _persona_actors(namespace) == []
        assert (await directory.status.remote())["active"] == []
    finally:
        for name in (DIRECTORY_NAME, GATEWAY_NAME):
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        for name in _persona_actors(namespace):
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        await fleet.redis.aclose()
