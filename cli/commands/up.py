"""`chorus up` and `chorus down`: start (or join) the local stack, deploy, load personas; stop it.

The ops modules (Ray, Serve, Redis, Prometheus) are imported inside the functions: the other
commands import this module with the parser and must stay free of Ray (see `cli`).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text

from chorus.settings import Settings
from cli.client import ApiClient, Credentials, cli_settings, load_credentials, save_credentials
from cli.commands.personas import Applied, apply_specs, load_specs
from cli.errors import CliError
from cli.render import console, step

DEFAULT_PERSONAS_DIR = Path("personas")


async def _admin_key(settings: Settings, url: str) -> tuple[str, bool]:
    """The saved admin key if Redis still honours it, else a new one; True when new."""
    from chorus.errors import InvalidKey
    from chorus.store.api_keys import KeyStore
    from chorus.store.client import async_redis
    from chorus.store.keys import keys_for

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

    from ops import local_stack
    from ops.deploy import api_url
    from ops.service_key import with_credentials_key, with_service_key

    settings = cli_settings()
    say = step
    try:
        local_stack.check_serve_port(settings)
        if local_stack.ensure_redis(settings, say) is False:
            say(f"Redis answers at {settings.redis.url}")
        cluster = local_stack.connect(settings, say, start=True)
        assert cluster is not None
        settings = with_credentials_key(with_service_key(settings, say), say)
        if not cluster.started:
            say(f"joined the Ray cluster at {cluster.address}")
        try:
            local_stack.deploy(settings, say, redeploy=args.redeploy)
        finally:
            ray.shutdown()  # the applications live on in the cluster; this process is done with it
    except local_stack.ServiceError as exc:
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
    from ops.local_stack import data_dir, ray_temp_dir
    from ops.prometheus import ray_sd_file, start_local_prometheus

    data = data_dir() / "prometheus"
    try:
        proc = start_local_prometheus(port, data, sd_file=ray_sd_file(ray_temp_dir()), detach=True)
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


def print_urls(result: UpResult) -> None:
    console.print(f"API:            {result.url}/v1")
    console.print(f"API docs:       {result.url}/docs")
    console.print(f"Ray dashboard:  {result.dashboard_url or '(not available)'}")


def cmd_up(args: argparse.Namespace) -> int:
    result = bring_up(args)
    console.print("Chorus is up.", style="green")
    print_urls(result)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from ops.local_stack import data_dir, stop_all
    from ops.prometheus import stop_local_prometheus

    stopped = stop_all(cli_settings(), step)
    if stop_local_prometheus(data_dir() / "prometheus"):
        stopped.append("Prometheus")
    console.print("stopped: " + ("; ".join(stopped) if stopped else "nothing was running"))
    return 0
