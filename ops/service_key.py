"""The secrets `chorus up` generates once and keeps when none is configured: the local model
tier's service key, and the key platform credentials are encrypted with.

Apart from the local stack because more than `chorus up` needs it: the CLI's `status`, and
campaigns in `cluster/` that reach a fleet started on this machine, read the same key file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from chorus.settings import Settings
from ops.local_stack import Log
from ops.paths import data_dir


def _service_key_path() -> Path:
    return data_dir() / "local-tier-key"


def _kept(path: Path, generate: Callable[[], str], say: Log | None, label: str, create: bool) -> str:
    """The secret kept at `path`, else (`create`) a new one written there; "" otherwise."""
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if token or not create:
        return token
    token = generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 rather than chmod-ed after: never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    if say is not None:
        say(f"generated {label} (saved to {path})")
    return token


def with_credentials_key(settings: Settings, say: Log | None = None, *, create: bool = True) -> Settings:
    """Settings carrying `publishing.credentials_key`: the configured one, else the one kept by
    an earlier `chorus up`, else (`create`) a new Fernet key, kept. The same key every run: the
    credentials stored under it stay readable."""
    if settings.publishing.credentials_key.get_secret_value().strip():
        return settings
    from chorus.crypto import new_key

    key = _kept(data_dir() / "credentials-key", new_key, say, "the platform credentials key", create)
    if not key:
        return settings
    publishing = settings.publishing.model_copy(update={"credentials_key": SecretStr(key)})
    return settings.model_copy(update={"publishing": publishing})


def with_service_key(settings: Settings, say: Log | None = None, *, create: bool = True) -> Settings:
    """Settings carrying the local tier's service key: the configured one (CHORUS_LOCAL__API_KEY),
    else the one an earlier `chorus up` generated, else (`create`) a new one, kept for the next
    `chorus up`. Without `create` the settings may come back without a key.

    Kept as the key itself (mode 0600, like the CLI's credentials) because the model gateway must
    send it; the tier holds only its digest. The same key on every run keeps a running fleet's
    gateway and tier agreeing when `chorus up` redeploys only one of them.
    """
    if settings.local.service_token().strip():
        return settings
    token = _kept(
        _service_key_path(), lambda: secrets.token_urlsafe(32), say, "the local tier's service key", create
    )
    if not token:
        return settings
    local = settings.local.model_copy(update={"api_key": SecretStr(token)})
    return settings.model_copy(update={"local": local})
