"""Following generation jobs: start them, read each one's event stream, report as nodes finish.

Shared by `chorus generate` (one persona, lines as they come) and `chorus demo` (every persona,
a live table), which differ only in what they do on each event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.text import Text

from chorus.models import NodeRecord, Post
from cli.client import ApiClient
from cli.render import console, node_line
from serve.api.protocol import GenerateResponse


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


async def start_jobs(
    client: ApiClient,
    persona_id: str,
    count: int,
    source_url: str | None = None,
    source_title: str | None = None,
) -> list[JobRun]:
    body: dict[str, object] = {"count": count}
    if source_url:
        body["source_url"] = source_url
    if source_title:
        body["source_title"] = source_title
    response = await client.call(
        "POST", f"/v1/personas/{persona_id}/posts:generate", params={"async": "true"}, json=body
    )
    jobs = GenerateResponse.model_validate_json(response.content).jobs
    return [JobRun(persona_id=persona_id, job_id=job.id) for job in jobs]


def progress_printer(prefix: Callable[[JobRun], str]) -> Callable[[JobRun, str], None]:
    """An `on_change` that prints each finished node, and a job's failure, on a line of its own."""

    def on_change(run: JobRun, event: str) -> None:
        if event == "node":
            console.print(f"{prefix(run)}{node_line(run.nodes[-1])}")
        elif event == "end" and run.status != "done":
            console.print(Text.assemble(prefix(run), (run.status, "red"), f" ({run.reason})"))

    return on_change
