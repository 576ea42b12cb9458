"""A local AT Protocol network (PLC, PDS, Bluesky AppView, Ozone) for tests and demos.

The real Bluesky server code from ``@atproto/dev-env`` (pinned in ``package-lock.json``, installed
by ``scripts/setup.sh`` into ``node_modules/``) runs in one node process beside a private Postgres
and Redis:

    with start_devnet(tmp_path / "devnet") as devnet:
        account = create_account(devnet.info, "alice")

`chorus devnet up|status|down` runs a detached one for demos (docs/devnet.md).
"""

from ops.devnet.accounts import (
    DevnetAccount,
    DevnetSession,
    create_account,
    create_app_password,
    login,
    revoke_app_password,
    set_password,
)
from ops.devnet.launcher import (
    DEVNET_DIR,
    FIXED_PORTS,
    Devnet,
    DevnetInfo,
    attach,
    check_installed,
    describe,
    start_devnet,
)
from ops.devnet.services import DevnetError

__all__ = [
    "DEVNET_DIR",
    "FIXED_PORTS",
    "Devnet",
    "DevnetAccount",
    "DevnetError",
    "DevnetInfo",
    "DevnetSession",
    "attach",
    "check_installed",
    "create_account",
    "create_app_password",
    "describe",
    "login",
    "revoke_app_password",
    "set_password",
    "start_devnet",
]
