"""The local model tier's service key: configured, or generated once by `chorus up` and kept.

Apart from the local stack because more than `chorus up` needs it: the CLI's `status`, and
campaigns in `cluster/` that reach a fleet started on this machine, read the same key file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from chorus.settings import Settings
from ops.local_stack import Log
from ops.paths import data_dir


def _service_key_path() -> Path:
    return data_dir() / "local-tier-key"


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
    path = _service_key_path()
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if not token and not create:
        return settings
    if not token:
        token = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 rather than chmod-ed after: never readable by others, even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        if say is not None:
            say(f"generated the local tier's service key (saved to {path})")
    local = settings.local.model_copy(update={"api_key": SecretStr(token)})
    return settings.model_copy(update={"local": local})

