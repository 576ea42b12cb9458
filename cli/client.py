"""Where the API is, the key to it, and the API itself over HTTP and server-sent events.

httpx is imported inside the client, not at the top: commands that make no request (``--help``,
a persona file that fails validation) never pay for it. The URL falls back to Serve's address in
settings rather than ``ops.deploy.api_url``, which imports Ray (seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from chorus.errors import SettingsError
from chorus.settings import Settings, load_settings
from cli.errors import CliError
from serve.api.protocol import ErrorResponse, SseDecoder, SseMessage

if TYPE_CHECKING:
    import httpx

M = TypeVar("M", bound=BaseModel)


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


def cli_settings() -> Settings:
    """The settings, with a broken configuration reported as a one-line CliError."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise CliError(str(exc)) from None


def resolve_url(args: argparse.Namespace) -> str:
    saved = load_credentials()
    url = args.api_url or os.environ.get("CHORUS_API_URL") or (saved.url if saved else None)
    return (url or cli_settings().serve.url).rstrip("/")


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


def client_for(args: argparse.Namespace, timeout_s: float = 30.0) -> ApiClient:
    """The client a command's ``--api-url``/``--key`` (or their fallbacks) point at."""
    return ApiClient(resolve_url(args), resolve_key(args), timeout_s)
