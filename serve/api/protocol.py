"""Request and response bodies of the HTTP API, and its server-sent events format.

The server (`serve/api/routers/`) and its clients (the CLI, tests, benchmarks) share these models, so
both sides read the wire the same way. What the state layer already defines (Job, Post, PostPage,
PersonaStats, PersonaSpec) travels as it is.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chorus.inputs import LABEL_PATTERN, ONLY_NUMBERS, Integer, clean_label
from chorus.models import Account, ApiKey, Engagement, Job, Post, Role
from chorus.persona import PersonaSpec


class _Request(BaseModel):
    # A misspelt field is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable error code (see serve/api/errors.py).")
    message: str
    field: str | None = Field(None, description="The offending input field, when there is one.")
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class GenerateRequest(_Request):
    # "3" or true is a client's mistake, not a count.
    count: Integer = Field(1, ge=1, description="Posts to generate, one job each.")
    source_url: str | None = Field(
        None,
        max_length=2000,
        pattern=r"^https?://[^\s]+$",
        description="A page the posts are about; it becomes their link card on Bluesky.",
    )
    source_title: str | None = Field(None, max_length=300)
    timeout_s: Annotated[float, Field(gt=0), ONLY_NUMBERS] | None = Field(
        None, description="Synchronous mode: how long to wait before answering 202 with the jobs."
    )


class ApproveRequest(_Request):
    text: str | None = Field(
        None,
        min_length=1,
        max_length=5000,
        description="Edited text; reviewed against the persona's rules again.",
    )
    publish_at: datetime | None = Field(
        None, description="When to publish (ISO 8601 or Unix time); default: the persona's next cadence slot."
    )


class RejectRequest(_Request):
    reason: str = Field(min_length=1, max_length=2000)


class RequestChangesRequest(_Request):
    feedback: str = Field(
        min_length=1, max_length=2000, description="What the new draft should do differently."
    )


class InboxResponse(BaseModel):
    posts: list[Post]


class AccountList(BaseModel):
    accounts: list[Account]


class JobDetail(Job):
    post: Post | None = Field(None, description="The job's post, once it is done.")


class GenerateResponse(BaseModel):
    jobs: list[JobDetail]


class PersonaList(BaseModel):
    personas: list[PersonaSpec]


class EngagementList(BaseModel):
    engagements: list[Engagement]


class FleetStatus(BaseModel):
    personas: int
    queue_depth: int = Field(description="Jobs queued or running, fleet-wide.")
    directory: dict[str, Any]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]


class KeyCreate(_Request):
    role: Role
    name: str = Field("", max_length=80, json_schema_extra={"pattern": f"^$|{LABEL_PATTERN}"})

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return clean_label(value) if value else value


class KeyCreated(ApiKey):
    key: str = Field(description="The API key itself. It is shown once and stored only as a hash.")


class KeyList(BaseModel):
    keys: list[ApiKey]


class KeysPurged(BaseModel):
    purged: list[str] = Field(description="Ids of the revoked keys whose records were deleted.")


class SseMessage(BaseModel):
    """One server-sent event."""

    event: str = "message"
    data: str = ""
    id: str | None = None

    def encode(self) -> str:
        head = f"id: {self.id}\n" if self.id is not None else ""
        lines = "".join(f"data: {line}\n" for line in self.data.split("\n"))
        return f"{head}event: {self.event}\n{lines}\n"

    def json_data(self) -> Any:
        return json.loads(self.data)


class SseDecoder:
    """Turns a text/event-stream into messages, fed one line (without its newline) at a time."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SseMessage | None:
        if not line:
            if not self._data and self._event is None:
                return None
            message = SseMessage(event=self._event or "message", data="\n".join(self._data), id=self._id)
            self._reset()
            return message
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None
