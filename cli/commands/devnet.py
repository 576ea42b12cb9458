"""`chorus devnet up|status|down`: a local AT Protocol network in the background, for demos.

`up` starts the devnet detached (its state in ``<data dir>/devnet/``) and prints its URLs and a
few throwaway test accounts with their passwords: the PLC directory lives in the devnet's memory,
so the accounts exist nowhere else and vanish with `down`. The passwords are shown once, like an
API key; `status` shows the handles only.

ops.devnet and the data dir are imported inside the handlers: every command imports this module
with the parser, and the data dir's module imports Ray.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text

from cli.errors import CliError
from cli.render import console, step

if TYPE_CHECKING:
    from ops.devnet import Devnet, DevnetInfo

ACCOUNT_PREFIXES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")


def _run_dir() -> Path:
    from ops.paths import data_dir

    return data_dir() / "devnet"


def _print_urls(info: DevnetInfo) -> None:
    from ops.devnet import describe

    for name, value in describe(info).items():
        console.print(f"  {name + ':':<13} {value}", soft_wrap=True)


def _print_handles(handles: list[str]) -> None:
    if handles:
        console.print("test accounts: " + ", ".join(handles), soft_wrap=True)


def _recorded() -> Devnet | None:
    from ops.devnet import attach

    return attach(_run_dir())


def cmd_devnet_up(args: argparse.Namespace) -> int:
    from ops.devnet import FIXED_PORTS, DevnetError, create_account, start_devnet

    run_dir = _run_dir()
    existing = _recorded()
    if existing is not None and existing.is_up():
        console.print(f"devnet already up (pid {existing.node_pid}; `chorus devnet down` stops it)")
        _print_urls(existing.info)
        _print_handles(existing.accounts())
        return 0
    if existing is not None:
        step("clearing what is left of a devnet that stopped on its own")
        existing.stop()
    step("starting the local AT Protocol network")
    try:
        devnet = start_devnet(
            run_dir,
            rate_limits=args.rate_limits,
            ports=FIXED_PORTS if args.fixed_ports else None,
            timeout_s=args.timeout,
            detach=True,
        )
    except DevnetError as exc:
        raise CliError(str(exc)) from None
    try:
        prefixes = [ACCOUNT_PREFIXES[i % len(ACCOUNT_PREFIXES)] for i in range(args.accounts)]
        accounts = [create_account(devnet.info, prefix) for prefix in prefixes]
    except DevnetError as exc:
        devnet.stop()
        raise CliError(f"the devnet started but creating a test account failed: {exc}") from None
    devnet.save(accounts=[a.handle for a in accounts])
    info = devnet.info
    console.print(
        f"devnet up in {info.started_in_s:.1f} s (node pid {info.pid}, {info.rss_mib} MiB RSS)", style="green"
    )
    _print_urls(info)
    console.print(f"  {'logs:':<13} {run_dir}", soft_wrap=True)
    if accounts:
        console.print("test accounts (local and throwaway; passwords shown once):")
        for account in accounts:
            console.print(
                Text(f"  {account.handle:<20} {account.did}  password {account.password}"), soft_wrap=True
            )
    console.print("stop it with `chorus devnet down`")
    return 0


def cmd_devnet_status(args: argparse.Namespace) -> int:
    devnet = _recorded()
    if devnet is None:
        console.print("devnet: not running (`chorus devnet up` starts one)")
        return 0
    if not devnet.is_up():
        console.print("devnet: not running; it stopped on its own (`chorus devnet down` clears what is left)")
        return 0
    console.print(f"devnet: up (node pid {devnet.node_pid})", style="green")
    _print_urls(devnet.info)
    _print_handles(devnet.accounts())
    return 0


def cmd_devnet_down(args: argparse.Namespace) -> int:
    devnet = _recorded()
    if devnet is None:
        console.print("devnet: not running")
        return 0
    was_up = devnet.is_up()
    devnet.stop()
    if was_up:
        console.print("devnet stopped: node, postgres, redis-server")
    else:
        console.print("devnet: cleared what was left of it")
    return 0
