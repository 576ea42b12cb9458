"""Accounts on a devnet's PDS: create one, log in, app passwords, the admin's password reset.

Plain XRPC over httpx rather than an AT Protocol SDK: these are the few calls tests and
`chorus devnet up` need, and a failure should carry the PDS's own error name and message. The
accounts are throwaway: the PLC directory lives in the devnet's memory and vanishes with it.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
from pydantic import BaseModel, Field

from ops.devnet.launcher import DevnetInfo
from ops.devnet.services import DevnetError

_PREFIX = re.compile(r"[a-z][a-z0-9-]{0,11}")
_TIMEOUT_S = 30.0


class DevnetAccount(BaseModel):
    handle: str
    did: str
    password: str = Field(repr=False)
    email: str


class DevnetSession(BaseModel):
    did: str
    handle: str
    access_jwt: str = Field(repr=False)
    refresh_jwt: str = Field(repr=False)


def _xrpc(
    info: DevnetInfo,
    method: str,
    body: dict[str, Any],
    *,
    token: str | None = None,
    admin: bool = False,
) -> dict[str, Any]:
    """POST an XRPC procedure to the PDS; DevnetError with the PDS's error on anything but 2xx."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    auth = ("admin", info.admin_password) if admin else None
    try:
        response = httpx.post(
            f"{info.pds}/xrpc/{method}", json=body, headers=headers, auth=auth, timeout=_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        raise DevnetError(f"{method} on the devnet PDS at {info.pds} failed: {exc}") from exc
    if response.is_success:
        return response.json() if response.content else {}
    try:
        error = response.json()
        detail = f"{error.get('error', '')}: {error.get('message', '')}"
    except ValueError:
        detail = response.text[:200]
    raise DevnetError(f"{method} on the devnet PDS answered {response.status_code} {detail}")


def create_account(info: DevnetInfo, handle_prefix: str, *, password: str | None = None) -> DevnetAccount:
    """A new account ``<prefix><6 hex>.test`` with a random password (or ``password``).

    ``handle_prefix``: a lowercase letter, then up to 11 letters, digits or hyphens (the PDS
    allows 3 to 18 characters before the domain, and the suffix keeps handles unique).
    """
    if not _PREFIX.fullmatch(handle_prefix):
        raise ValueError(
            f"handle prefix {handle_prefix!r}: use a lowercase letter then up to 11 of a-z, 0-9 or '-'"
        )
    handle = f"{handle_prefix}{secrets.token_hex(3)}{info.handle_domain}"
    password = password or secrets.token_urlsafe(12)
    email = f"{handle}@example.com"
    answer = _xrpc(
        info,
        "com.atproto.server.createAccount",
        {"handle": handle, "email": email, "password": password},
    )
    return DevnetAccount(handle=answer["handle"], did=answer["did"], password=password, email=email)


def login(info: DevnetInfo, identifier: str, password: str) -> DevnetSession:
    """``com.atproto.server.createSession`` with a handle or DID and a password or app password."""
    answer = _xrpc(info, "com.atproto.server.createSession", {"identifier": identifier, "password": password})
    return DevnetSession(
        did=answer["did"],
        handle=answer["handle"],
        access_jwt=answer["accessJwt"],
        refresh_jwt=answer["refreshJwt"],
    )


def create_app_password(info: DevnetInfo, account: DevnetAccount, name: str) -> str:
    """A new app password called ``name`` for ``account`` (what a persona's account would hold)."""
    session = login(info, account.did, account.password)
    answer = _xrpc(info, "com.atproto.server.createAppPassword", {"name": name}, token=session.access_jwt)
    return str(answer["password"])


def revoke_app_password(info: DevnetInfo, account: DevnetAccount, name: str) -> None:
    """Revoke the app password ``name``: logging in with it fails from then on, and the sessions
    made with it can no longer be refreshed (an access token already issued lives out its
    short lifetime)."""
    session = login(info, account.did, account.password)
    _xrpc(info, "com.atproto.server.revokeAppPassword", {"name": name}, token=session.access_jwt)


def set_password(info: DevnetInfo, did: str, password: str) -> None:
    """The PDS admin sets an account's main password (its refresh tokens are revoked with it)."""
    _xrpc(info, "com.atproto.admin.updateAccountPassword", {"did": did, "password": password}, admin=True)
