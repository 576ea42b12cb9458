"""The local AT Protocol network as pytest fixtures: `devnet` (one per session) and
`devnet_rate_limited` (one per module, the PDS's production rate limits on).

Both return the network's `DevnetInfo` (PDS, AppView, PLC URLs and DIDs); make accounts with
`ops.devnet.create_account(info, "prefix")`. A devnet that cannot start fails the tests that use
it, with the reason, rather than skipping them: CI installs everything (`scripts/setup.sh`).
tests/conftest.py imports these and counts them among the integration fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ops.devnet import Devnet, DevnetError, DevnetInfo, start_devnet

# Generous: startup is 5-8 s on an idle 2-core machine, and CI machines are busy.
START_TIMEOUT_S = 120.0


def _start(factory: pytest.TempPathFactory, name: str, *, rate_limits: bool) -> Devnet:
    try:
        return start_devnet(factory.mktemp(name), rate_limits=rate_limits, timeout_s=START_TIMEOUT_S)
    except DevnetError as exc:
        reason = str(exc)
    # Outside the except block: the one-line reason, without the chained traceback.
    pytest.fail(f"the local AT Protocol network did not start: {reason}", pytrace=False)


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetInfo]:
    """A local AT Protocol network shared by the session (rate limits off)."""
    with _start(tmp_path_factory, "devnet", rate_limits=False) as running:
        yield running.info


@pytest.fixture(scope="module")
def devnet_rate_limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetInfo]:
    """A network of the module's own with the PDS's rate limits on (kept in memory, so a fresh
    one per module starts every module's budget from zero)."""
    with _start(tmp_path_factory, "devnet-rate-limited", rate_limits=True) as running:
        yield running.info
