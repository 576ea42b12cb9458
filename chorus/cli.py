"""`chorus`: the command line, a client of the HTTP API (plus `up`/`down`, which start the stack).

Where it finds the API and its key, first match wins:

* URL: ``--api-url``, ``CHORUS_API_URL``, the credentials file, then Serve's address from settings;
* key: ``--key``, ``CHORUS_API_KEY``, then the credentials file.

`chorus up` creates an admin key when it has none that works, prints it once and saves it with the
URL in ``$XDG_CONFIG_HOME/chorus/credentials`` (``~/.config/chorus/credentials``, mode 0600), so
every later command works with no configuration. Any failure prints one line and exits 1.

Importing this module imports no Ray, Serve, Redis client or HTTP client: `chorus --help` and the
API commands start in a fraction of a second, and `up`/`down` import what they need themselves.
Output is printed with rich markup off, so a `[...]` in an id, a post or an error message (a
regex such as `^[a-z0-9]`) is shown as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from chorus.auth import ROLES
from chorus.persona import PersonaSpec, PersonaSpecError, Platform, load_persona_dir, load_persona_file
from chorus.settings import Settings, SettingsError, load_settings
from chorus.state import (
    Engagement,
    EngagementReport,
    NodeRecord,
    PersonaStats,
    Post,
    PostPage,
    Schedule,
    usd,
)
from serve.schemas import (
    ErrorResponse,
    FleetStatus,
    GenerateResponse,
    KeyCreated,
    KeyList,
    KeysPurged,
    PersonaList,
    SseDecoder,
    SseMessage,
)

if TYPE_CHECKING:
    import httpx

# markup=False: what is printed is data (ids, posts, server messages), never rich markup.
console = Console(highlight=False, markup=False)
errors = Console(stderr=True, highlight=False, markup=False)
M = TypeVar("M", bound=BaseModel)

DEFAULT_PERSONAS_DIR = Path("personas")


class CliError(Exception):
    """A failure the user can act on; printed as one line."""


# --- where the API is, and the key ----------------------------------------------------------------


class Credentials(BaseModel):
    url: str
    key: str


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "chorus" / "credentials"


def load_credentials() -> Credentials | None:
    try:
        return Credentials.model_validate_json(credentials_path().read_text())
    except (OSError, ValidationError):
        return None


def save_credentials(credentials: Credentials) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 rather than chmod-ed after: the key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(credentials.model_dump_json(indent=2))
    os.chmod(path, 0o600)
    return path


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise CliError(str(exc)) from None


def resolve_url(args: argparse.Namespace) -> str:
    saved = load_credentials()
    url = args.api_url or os.environ.get("CHORUS_API_URL") or (saved.url if saved else None)
    # settings.serve.url, not chorus.runtime.api_url: that module imports Ray (seconds).
    return (url or _settings().serve.url).rstrip("/")


def resolve_key(args: argparse.Namespace) -> str | None:
    saved = load_credentials()
    return args.key or os.environ.get("CHORUS_API_KEY") or (saved.key if saved else None)


# --- the HTTP client ------------------------------------------------------------------------------


class ApiClient:
    """The API over httpx; errors come back as CliError with the server's one-line message."""

    def __init__(self, url: str, key: str | None, timeout_s: float = 30.0) -> None:
        import httpx  # here, not at the top: commands that make no request never pay for it

        self.url = url
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=5.0)
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.aclose()

    def _failure(self, response: httpx.Response) -> CliError:
        try:
            error = ErrorResponse.model_validate_json(response.content).error
        except ValidationError:
            return CliError(f"HTTP {response.status_code} from {response.request.url}")
        message = f"{error.message} ({response.status_code} {error.code})"
        if error.code == "missing_key":
            message += "; pass --key, set CHORUS_API_KEY or run `chorus up`"
        return CliError(message)

    def _unreachable(self, exc: httpx.TransportError) -> CliError:
        return CliError(
            f"cannot reach the Chorus API at {self.url} ({type(exc).__name__}); is it up? (`chorus up`)"
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        import httpx

        extra: dict[str, Any] = {"timeout": timeout_s} if timeout_s is not None else {}
        try:
            response = await self._http.request(method, path, json=json, params=params, **extra)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self._failure(response)
        return response

    async def get(self, model: type[M], path: str, **params: Any) -> M:
        query = {k: v for k, v in params.items() if v is not None}
        return model.model_validate_json((await self.call("GET", path, params=query)).content)

    async def events(self, job_id: str, *, retries: int = 5) -> AsyncIterator[SseMessage]:
        """A job's events to the end, resuming after the last one seen if the stream breaks."""
        import httpx

        last: str | None = None
        for _ in range(retries + 1):
            headers = {"Last-Event-ID": last} if last else {}
            try:
                async with self._http.stream(
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    headers=headers,
                    # The server sends a keep-alive every few seconds; silence means it is gone.
                    timeout=httpx.Timeout(60.0, connect=5.0),
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise self._failure(response)
                    decoder = SseDecoder()
                    async for line in response.aiter_lines():
                        message = decoder.feed(line)
                        if message is None:
                            continue
                        if message.event == "error":
                            break  # the server lost the stream: resume after the last event
                        last = message.id or last
                        yield message
                        if message.event == "end":
                            return
            except httpx.TransportError:
                pass
            await asyncio.sleep(1.0)
        raise CliError(f"the event stream of job {job_id} kept breaking before the job ended")


# --- output ---------------------------------------------------------------------------------------


# A figure that does not exist (no followers to divide by, no accepted post yet), not a zero.
NO_FIGURE = "—"


def _money(amount: float | None) -> str:
    # The API's money format (significant digits however small), so both read the same.
    return NO_FIGURE if amount is None else usd(amount)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _node_line(node: NodeRecord) -> str:
    tier = node.tier or "rules"
    tokens = f"{node.prompt_tokens}+{node.completion_tokens} tok" if node.tier else ""
    extra = " (cache)" if node.cache_hit else ""
    extra += f" (fallback: {node.fallback_reason})" if node.fallback_reason else ""
    return f"{node.node:<9} {tier:<8} {node.duration_s:6.2f}s {tokens:>14} {_money(node.cost_usd)}{extra}"


def _post_panel(post: Post) -> Panel:
    style = "green" if post.status == "accepted" else "yellow"
    body = Text(post.text)
    if post.reasons:
        body.append("\n\nreasons: " + "; ".join(post.reasons), style="dim")
    subtitle = (
        f"{post.id} · {post.status} · {post.prompt_tokens + post.completion_tokens} tokens"
        f" · {_money(post.cost_usd)} · tiers {', '.join(f'{k}={v}' for k, v in post.tiers.items())}"
    )
    # Text, not str: a Panel parses a str title as markup whatever the console says.
    return Panel(
        body, title=Text(f"{post.persona_id} · {post.platform}"), subtitle=Text(subtitle), border_style=style
    )


def _id_column(table: Table, header: str, ids: Sequence[str]) -> None:
    """A column that never cuts an id: as wide as the longest, other columns wrap instead."""
    table.add_column(header, no_wrap=True, min_width=max((len(i) for i in ids), default=len(header)))


def _post_block(post: Post) -> RenderableType:
    """A post as a line of its facts (id whole) over its text, wrapped and indented: a table's
    columns would leave the text a sliver of an 80-column terminal."""
    style = "green" if post.status == "accepted" else "yellow"
    head = Text.assemble(
        (post.id, "bold"),
        "  ",
        post.persona_id,
        "  ",
        (post.status, style),
        f"  {_money(post.cost_usd)}  {post.prompt_tokens + post.completion_tokens} tokens  "
        f"{_when(post.created_at)} UTC",
    )
    return Group(head, Padding(Text(post.text), (0, 0, 1, 4)))


# --- following jobs -------------------------------------------------------------------------------


@dataclass
class JobRun:
    persona_id: str
    job_id: str
    started: float = field(default_factory=time.monotonic)
    nodes: list[NodeRecord] = field(default_factory=list)
    post: Post | None = None
    status: str = "queued"
    error: str | None = None
    error_code: str | None = None
    finished: float | None = None

    @property
    def current(self) -> str:
        return self.nodes[-1].node if self.nodes else "waiting"

    @property
    def reason(self) -> str:
        """Why the job did not finish: its stable code, then the server's one-line message."""
        return ": ".join(part for part in (self.error_code, self.error) if part) or "no reason given"


async def follow(client: ApiClient, run: JobRun, on_change: Callable[[JobRun, str], None]) -> JobRun:
    """Reads a job's event stream into `run`, calling `on_change` with each event's type."""
    async for message in client.events(run.job_id):
        data = message.json_data()
        if message.event == "node":
            run.status = "running"
            run.nodes.append(NodeRecord.model_validate(data))
        elif message.event == "post":
            run.post = Post.model_validate(data)
        elif message.event == "end":
            run.status = str(data.get("status", "done"))
            run.error = data.get("error")
            run.error_code = data.get("error_code")
            run.finished = time.monotonic()
        on_change(run, message.event)
    return run


async def start_jobs(client: ApiClient, persona_id: str, count: int) -> list[JobRun]:
    response = await client.call(
        "POST", f"/v1/personas/{persona_id}/posts:generate", params={"async": "true"}, json={"count": count}
    )
    jobs = GenerateResponse.model_validate_json(response.content).jobs
    return [JobRun(persona_id=persona_id, job_id=job.id) for job in jobs]


def _printer(prefix: Callable[[JobRun], str]) -> Callable[[JobRun, str], None]:
    def on_change(run: JobRun, event: str) -> None:
        if event == "node":
            console.print(f"{prefix(run)}{_node_line(run.nodes[-1])}")
        elif event == "end" and run.status != "done":
            console.print(Text.assemble(prefix(run), (run.status, "red"), f" ({run.reason})"))

    return on_change


# --- commands -------------------------------------------------------------------------------------


def _client(args: argparse.Namespace, timeout_s: float = 30.0) -> ApiClient:
    return ApiClient(resolve_url(args), resolve_key(args), timeout_s)


async def cmd_status(args: argparse.Namespace) -> int:
    from chorus.services import describe

    async with _client(args) as client:
        try:
            ready = (await client.call("GET", "/readyz")).json()
        except CliError:
            ready = None
        fleet = await client.get(FleetStatus, "/v1/status")
    table = Table(title=f"Chorus at {client.url}", show_header=False)
    table.add_row("API", f"{client.url} (docs: {client.url}/docs)")
    # One row per component: what the API checked, then what `chorus up` started of it here.
    rows: dict[str, str] = dict(ready["checks"]) if ready is not None else {}
    for name, state in describe().items():
        rows[name] = f"{rows[name]}; {state}" if name in rows else state
    if ready is None:
        table.add_row("ready", Text("no (see /readyz)", style="red"))
    for name, state in rows.items():
        table.add_row(name, state)
    table.add_row("personas", str(fleet.personas))
    table.add_row("jobs queued or running", str(fleet.queue_depth))
    table.add_row("active persona actors", str(len(fleet.directory.get("active", []))))
    console.print(table)
    return 0


async def cmd_personas_list(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        personas = (await client.get(PersonaList, "/v1/personas")).personas
    table = Table(title=f"{len(personas)} personas")
    _id_column(table, "id", [spec.id for spec in personas])
    for column in ("name", "platforms", "hook/body/rewrite", "budget/day"):
        table.add_column(column, overflow="fold")
    for spec in personas:
        policy = spec.model_policy
        table.add_row(
            spec.id,
            spec.display_name,
            ", ".join(p.name.value for p in spec.platforms),
            f"{policy.hook}/{policy.body}/{policy.rewrite}",
            "default" if spec.daily_budget_usd is None else _money(spec.daily_budget_usd),
        )
    console.print(table)
    return 0


def load_specs(paths: Sequence[str]) -> list[PersonaSpec]:
    """Persona files (or folders of them), validated here first so errors name the file."""
    specs: list[PersonaSpec] = []
    try:
        for path in map(Path, paths):
            specs.extend(load_persona_dir(path) if path.is_dir() else [load_persona_file(path)])
    except PersonaSpecError as exc:
        raise CliError(str(exc)) from None
    return specs


Applied = tuple[str, str]  # (persona id, "created" | "updated" | "unchanged")


async def apply_specs(client: ApiClient, specs: Sequence[PersonaSpec]) -> list[Applied]:
    """PUT the specs that differ from the stored ones; one listing finds those that do not."""
    stored = {spec.id: spec for spec in (await client.get(PersonaList, "/v1/personas")).personas}

    async def put(spec: PersonaSpec) -> Applied:
        if stored.get(spec.id) == spec:
            return spec.id, "unchanged"
        response = await client.call("PUT", f"/v1/personas/{spec.id}", json=spec.model_dump(mode="json"))
        return spec.id, "created" if response.status_code == 201 else "updated"

    return list(await asyncio.gather(*(put(spec) for spec in specs)))


async def cmd_personas_apply(args: argparse.Namespace) -> int:
    specs = load_specs(args.files)
    async with _client(args) as client:
        for persona_id, outcome in await apply_specs(client, specs):
            console.print(f"{outcome} {persona_id}")
    return 0


async def cmd_personas_delete(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.call("DELETE", f"/v1/personas/{args.id}")
    console.print(f"deleted {args.id} (restorable for a while: chorus personas restore {args.id})")
    return 0


async def cmd_personas_restore(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.call("POST", f"/v1/personas/{args.id}:restore")
    console.print(f"restored {args.id}")
    return 0


async def cmd_personas_stats(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        stats = await client.get(PersonaStats, f"/v1/personas/{args.id}/stats")
    table = Table(title=f"{args.id}", show_header=False)
    rate = NO_FIGURE if stats.engagement_rate is None else f"{stats.engagement_rate:.2%}"
    for name, value in (
        ("posts (accepted / rejected)", f"{stats.posts} ({stats.accepted} / {stats.rejected})"),
        ("tokens in / out", f"{stats.prompt_tokens} / {stats.completion_tokens}"),
        ("cost to date", _money(stats.cost_usd)),
        ("cost per accepted post", _money(stats.cost_per_accepted_post_usd)),
        ("spend today / budget", f"{_money(stats.spend_today_usd)} / {_money(stats.daily_budget_usd)}"),
        ("followers", NO_FIGURE if stats.followers is None else str(stats.followers)),
        ("engagement rate", rate),
        ("cost per follower", _money(stats.cost_per_follower_usd)),
    ):
        table.add_row(name, value)
    console.print(table)
    return 0


async def cmd_personas_schedule(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        schedule = await client.get(Schedule, f"/v1/personas/{args.id}/schedule")
    tz = ZoneInfo(schedule.timezone)
    mode = "autopost on" if schedule.autopost else "autopost off: posts only on request"
    table = Table(title=f"{args.id} on {schedule.day} ({schedule.timezone}, {mode})")
    for column in ("slot", "local time", "job"):
        table.add_column(column)
    for number, slot in enumerate(schedule.slots, start=1):
        table.add_row(str(number), slot.at.astimezone(tz).strftime("%H:%M"), slot.job_id or "-")
    console.print(table)
    return 0


async def cmd_personas_engagement(args: argparse.Namespace) -> int:
    report = EngagementReport(
        platform=args.platform,
        followers=args.followers,
        impressions=args.impressions,
        engagements=args.engagements,
    )
    async with _client(args) as client:
        response = await client.call(
            "POST", f"/v1/personas/{args.id}/engagement", json=report.model_dump(mode="json")
        )
    recorded = Engagement.model_validate_json(response.content)
    rate = "-" if recorded.engagement_rate is None else f"{recorded.engagement_rate:.2%}"
    console.print(
        f"recorded {recorded.platform.value} for {args.id}: {recorded.followers} followers, "
        f"engagement rate {rate}"
    )
    return 0


async def cmd_generate(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        runs = await start_jobs(client, args.id, args.count)
        console.print(f"{args.id}: {len(runs)} job(s) queued: {', '.join(r.job_id for r in runs)}")
        prefix: Callable[[JobRun], str] = (lambda r: f"{r.job_id} ") if len(runs) > 1 else (lambda r: "  ")
        with console.status(f"generating {len(runs)} post(s) for {args.id}…"):
            await asyncio.gather(*(follow(client, run, _printer(prefix)) for run in runs))
    for run in runs:
        if run.post is not None:
            console.print(_post_panel(run.post))
    failed = [run for run in runs if run.status != "done"]
    if failed:
        raise CliError(
            f"{len(failed)} of {len(runs)} job(s) did not finish: {failed[0].status} ({failed[0].reason})"
        )
    return 0


async def cmd_posts(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        page = await client.get(
            PostPage,
            "/v1/posts",
            persona=args.persona,
            status=args.status,
            limit=args.limit,
            cursor=args.cursor,
        )
    console.print(f"{len(page.posts)} posts", style="bold")
    for post in page.posts:
        console.print(_post_block(post))
    if page.next_cursor:
        console.print(f"more: chorus posts --cursor '{page.next_cursor}'", style="dim")
    return 0


async def cmd_keys_create(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        response = await client.call("POST", "/v1/keys", json={"role": args.role, "name": args.name})
    created = KeyCreated.model_validate_json(response.content)
    console.print(f"created {created.role} key {created.id}; it is shown once, store it now:")
    console.print(created.key, soft_wrap=True)
    return 0


async def cmd_posts_delete(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.call("DELETE", f"/v1/posts/{args.id}")
    console.print(f"deleted post {args.id}")
    return 0


async def cmd_keys_list(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        keys = (await client.get(KeyList, "/v1/keys", include_revoked=args.all or None)).keys
    table = Table(title=f"{len(keys)} {'API keys' if args.all else 'live API keys (--all: revoked too)'}")
    _id_column(table, "id", [key.id for key in keys])
    for column in ("role", "name", "created (UTC)", *(("revoked (UTC)",) if args.all else ())):
        table.add_column(column, overflow="fold")
    for key in keys:
        revoked = (_when(key.revoked_at) if key.revoked_at else "",) if args.all else ()
        table.add_row(key.id, key.role, key.name, _when(key.created_at), *revoked)
    console.print(table)
    return 0


async def cmd_keys_purge(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        response = await client.call("POST", "/v1/keys:purge")
    purged = KeysPurged.model_validate_json(response.content).purged
    console.print(f"purged {len(purged)} revoked key(s)")
    return 0


async def cmd_keys_revoke(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.call("DELETE", f"/v1/keys/{args.id}")
    console.print(f"revoked {args.id}")
    return 0


# --- up, down, demo -------------------------------------------------------------------------------


async def _admin_key(settings: Settings, url: str) -> tuple[str, bool]:
    """The saved admin key if Redis still honours it, else a new one; True when new."""
    from chorus.auth import InvalidKey, KeyStore
    from chorus.store import async_redis, keys_for

    client = async_redis(settings)
    try:
        store = KeyStore(client, keys_for(settings))
        saved = load_credentials()
        if saved is not None and saved.url == url:
            try:
                if (await store.verify(saved.key)).role == "admin":
                    return saved.key, False
            except InvalidKey:
                pass
        _, token = await store.create("admin", "chorus up")
        return token, True
    finally:
        await client.aclose()


@dataclass
class UpResult:
    url: str
    key: str
    dashboard_url: str | None
    personas: list[str]


def bring_up(args: argparse.Namespace) -> UpResult:
    import ray

    from chorus import services
    from chorus.runtime import api_url

    settings = _settings()

    def say(line: str) -> None:
        console.print(Text.assemble(("·", "dim"), f" {line}"))

    try:
        services.check_serve_port(settings)
        if services.ensure_redis(settings, say) is False:
            say(f"Redis answers at {settings.redis.url}")
        cluster = services.connect(settings, say, start=True)
        assert cluster is not None
        settings = services.with_service_key(settings, say)
        if not cluster.started:
            say(f"joined the Ray cluster at {cluster.address}")
        try:
            services.deploy(settings, say, redeploy=args.redeploy)
        finally:
            ray.shutdown()  # the applications live on in the cluster; this process is done with it
    except services.ServiceError as exc:
        raise CliError(str(exc)) from None
    if getattr(args, "with_prometheus", False):
        _start_prometheus(say, args.prometheus_port)
    url = api_url(settings)
    key, created = asyncio.run(_admin_key(settings, url))
    path = save_credentials(Credentials(url=url, key=key))
    if created:
        console.print(f"admin API key (shown once; saved to {path}):")
        console.print(Text(f"  {key}", style="bold"), soft_wrap=True)
    else:
        say(f"using the admin key saved in {path}")
    personas: list[str] = []
    folder = Path(args.personas)
    if folder.is_dir():
        specs = load_specs([str(folder)])

        async def load() -> list[Applied]:
            async with ApiClient(url, key) as client:
                return await apply_specs(client, specs)

        personas = [persona_id for persona_id, _ in asyncio.run(load())]
        say(f"loaded {len(personas)} personas from {folder}/")
    return UpResult(url, key, cluster.dashboard_url, personas)


def _start_prometheus(say: Callable[[str], None], port: int) -> None:
    """A local Prometheus scraping this Ray through its service-discovery file, if installed."""
    from chorus import services
    from chorus.prometheus import ray_sd_file, start_local_prometheus

    data = services.data_dir() / "prometheus"
    try:
        proc = start_local_prometheus(port, data, sd_file=ray_sd_file(services.ray_temp_dir()), detach=True)
    except (OSError, RuntimeError) as exc:
        say(f"Prometheus not started: {exc}")
        return
    if proc is None:
        say("Prometheus not started: the `prometheus` binary is not installed (apt-get install prometheus)")
        return
    say(
        f"Prometheus at http://127.0.0.1:{port} (for the Ray dashboard: "
        f"RAY_PROMETHEUS_HOST=http://127.0.0.1:{port})"
    )


def _urls(result: UpResult) -> None:
    console.print(f"API:            {result.url}/v1")
    console.print(f"API docs:       {result.url}/docs")
    console.print(f"Ray dashboard:  {result.dashboard_url or '(not available)'}")


def cmd_up(args: argparse.Namespace) -> int:
    result = bring_up(args)
    console.print("Chorus is up.", style="green")
    _urls(result)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from chorus import services
    from chorus.prometheus import stop_local_prometheus

    stopped = services.stop_all(
        _settings(), lambda line: console.print(Text.assemble(("·", "dim"), f" {line}"))
    )
    if stop_local_prometheus(services.data_dir() / "prometheus"):
        stopped.append("Prometheus")
    console.print("stopped: " + ("; ".join(stopped) if stopped else "nothing was running"))
    return 0


def _progress_table(runs: Sequence[JobRun]) -> Table:
    table = Table(title="generating", expand=False)
    _id_column(table, "persona", [run.persona_id for run in runs])
    _id_column(table, "job", [run.job_id for run in runs])
    for column in ("nodes done", "last", "elapsed", "status"):
        table.add_column(column, overflow="fold")
    for run in runs:
        style = {"done": "green", "running": "cyan", "queued": "dim"}.get(run.status, "red")
        table.add_row(
            run.persona_id,
            run.job_id,
            " ".join(n.node for n in run.nodes),
            run.current,
            f"{(run.finished or time.monotonic()) - run.started:5.1f}s",
            Text(run.status, style=style),
        )
    return table


def _persona_report(persona_id: str, runs: Sequence[JobRun], stats: PersonaStats) -> Group:
    posts = [run.post for run in runs if run.post is not None]
    nodes: dict[tuple[str, str], list[NodeRecord]] = {}
    for post in posts:
        for node in post.nodes:
            nodes.setdefault((node.node, node.tier or "rules"), []).append(node)
    accepted = sum(post.status == "accepted" for post in posts)
    tokens = sum(post.prompt_tokens + post.completion_tokens for post in posts)
    cost = sum(post.cost_usd for post in posts)
    table = Table(
        title=f"{persona_id}",
        caption=(
            f"this run: {len(posts)} posts, {accepted} accepted / {len(posts) - accepted} rejected, "
            f"{tokens} tokens, {_money(cost)} · all time: {stats.posts} posts, "
            f"spend today {_money(stats.spend_today_usd)} of {_money(stats.daily_budget_usd)}, "
            f"per accepted post {_money(stats.cost_per_accepted_post_usd)}"
        ),
    )
    for column in ("node", "tier", "calls", "latency (mean)", "tokens in+out", "cost"):
        table.add_column(column, justify="left" if column in ("node", "tier") else "right")
    for (name, tier), records in nodes.items():
        table.add_row(
            name,
            tier,
            str(len(records)),
            f"{sum(r.duration_s for r in records) / len(records):.2f}s",
            f"{sum(r.prompt_tokens for r in records)}+{sum(r.completion_tokens for r in records)}",
            _money(sum(r.cost_usd for r in records)),
        )
    failures = [f"{run.job_id}: {run.status} ({run.reason})" for run in runs if run.status != "done"]
    return Group(table, *(Text(line, style="red") for line in failures))


async def _demo_generate(result: UpResult, persona_ids: Sequence[str], count: int) -> list[JobRun]:
    async with ApiClient(result.url, result.key) as client:
        batches = await asyncio.gather(*(start_jobs(client, pid, count) for pid in persona_ids))
        runs = [run for batch in batches for run in batch]
        if console.is_terminal:
            from rich.live import Live

            # Redrawn on every refresh, not only on events, so the elapsed times keep moving.
            with Live(console=console, refresh_per_second=4, get_renderable=lambda: _progress_table(runs)):
                await asyncio.gather(*(follow(client, run, lambda _run, _event: None) for run in runs))
        else:
            printer = _printer(lambda r: f"{r.persona_id:<28} ")
            await asyncio.gather(*(follow(client, run, printer) for run in runs))
        for persona_id in persona_ids:
            stats = await client.get(PersonaStats, f"/v1/personas/{persona_id}/stats")
            console.print(_persona_report(persona_id, [r for r in runs if r.persona_id == persona_id], stats))
            for run in runs:
                if run.persona_id == persona_id and run.post is not None:
                    console.print(_post_panel(run.post))
    return runs


def cmd_demo(args: argparse.Namespace) -> int:
    result = bring_up(args)
    if not result.personas:
        raise CliError(f"no personas in {args.personas}/ to run the demo with")
    console.print(f"generating {args.count} post(s) for each of {len(result.personas)} personas in parallel")
    started = time.monotonic()
    runs = asyncio.run(_demo_generate(result, result.personas, args.count))
    done = sum(run.status == "done" for run in runs)
    console.print(f"{done}/{len(runs)} jobs done in {time.monotonic() - started:.1f}s")
    _urls(result)
    return 0 if done == len(runs) else 1


# --- argument parsing -----------------------------------------------------------------------------


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}")
        return value

    return parse


_positive = _at_least(1)
_count = _at_least(0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus", description="A fleet of AI social-media personas.")
    parser.add_argument("--api-url", help="the API's base URL (default: CHORUS_API_URL, saved, settings)")
    parser.add_argument("--key", help="API key (default: CHORUS_API_KEY, then the saved one)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], Any], help: str, parent: Any = commands
    ) -> Any:
        sub = parent.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    for name, handler, text in (
        ("up", cmd_up, "start Redis, Ray and the Serve apps if needed, load personas/"),
        ("demo", cmd_demo, "`up`, then generate posts for every persona in parallel and report"),
    ):
        sub = add(name, handler, text)
        sub.add_argument("--personas", default=str(DEFAULT_PERSONAS_DIR), help="folder of persona files")
        sub.add_argument("--redeploy", action="store_true", help="redeploy the Serve apps even if running")
        sub.add_argument(
            "--with-prometheus", action="store_true", help="also start a local Prometheus scraping Ray"
        )
        sub.add_argument(
            "--prometheus-port", type=_positive, default=9090, help="its loopback port (default 9090)"
        )
        if name == "demo":
            sub.add_argument("--count", type=_positive, default=1, help="posts per persona (default 1)")
    add("down", cmd_down, "stop what `chorus up` started")
    add("status", cmd_status, "health of the API, its dependencies and the fleet")

    personas = commands.add_parser("personas", help="list, apply or delete personas").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add("list", cmd_personas_list, "list personas", personas)
    add(
        "apply", cmd_personas_apply, "create or update personas from YAML files or folders", personas
    ).add_argument("files", nargs="+", metavar="FILE")
    add(
        "delete",
        cmd_personas_delete,
        "delete a persona (restorable for fleet.deleted_retention_days)",
        personas,
    ).add_argument("id")
    add(
        "restore", cmd_personas_restore, "bring back a deleted persona with its engagement history", personas
    ).add_argument("id")
    add(
        "stats", cmd_personas_stats, "posts, spend, cost per post and audience of a persona", personas
    ).add_argument("id")
    add(
        "schedule", cmd_personas_schedule, "today's cadence slots and the jobs queued for them", personas
    ).add_argument("id")
    engagement = add(
        "engagement",
        cmd_personas_engagement,
        "record what a platform reports of a persona's account (the latest report counts)",
        personas,
    )
    engagement.add_argument("id")
    engagement.add_argument("--platform", required=True, choices=[p.value for p in Platform])
    engagement.add_argument("--followers", required=True, type=_count, help="followers now")
    engagement.add_argument(
        "--impressions", required=True, type=_count, help="views of its posts in the period"
    )
    engagement.add_argument(
        "--engagements", required=True, type=_count, help="likes, reposts, replies, clicks in the period"
    )

    generate = add("generate", cmd_generate, "generate posts for a persona, with live per-node progress")
    generate.add_argument("id")
    generate.add_argument("--count", type=_positive, default=1)

    posts = add("posts", cmd_posts, "list posts, newest first (or `posts delete ID`)")
    posts.add_argument("--persona")
    posts.add_argument("--status", choices=("accepted", "rejected"))
    posts.add_argument("--limit", type=_positive, default=20)
    posts.add_argument("--cursor")
    post_actions = posts.add_subparsers(dest="action", required=False, metavar="ACTION")
    add("delete", cmd_posts_delete, "delete a post (editor)", post_actions).add_argument("id")

    keys = commands.add_parser("keys", help="create, list, revoke or purge API keys (admin)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = add("create", cmd_keys_create, "create a key (printed once)", keys)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", default="")
    add("list", cmd_keys_list, "list live keys", keys).add_argument(
        "--all", action="store_true", help="revoked keys too, until purged"
    )
    add("revoke", cmd_keys_revoke, "revoke a key (not the last admin key)", keys).add_argument("id")
    add("purge", cmd_keys_purge, "delete the records of revoked keys", keys)
    return parser


def _fail(message: str) -> NoReturn:
    errors.print(f"error: {message}", soft_wrap=True)
    raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        outcome = args.handler(args)
        code = asyncio.run(outcome) if asyncio.iscoroutine(outcome) else outcome
    except CliError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")
    except Exception as exc:
        # Still one line; CHORUS_DEBUG=1 shows where it came from.
        if os.environ.get("CHORUS_DEBUG"):
            raise
        # Errors raised inside Ray carry the remote traceback in their text: its last line is
        # the error itself.
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        _fail(f"{type(exc).__name__}: {lines[-1] if lines else ''} (CHORUS_DEBUG=1 shows the traceback)")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
