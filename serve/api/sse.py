"""A job's events as a server-sent event stream, kept alive while the job is quiet.

Apart from the routes because the stream has its own concurrency (a reader task feeding a queue)
and its own failure handling; the wire format itself (`SseMessage`) is in `serve/api/protocol.py`,
shared with the clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from chorus.models import JobEvent
from serve.api.protocol import SseMessage

log = logging.getLogger(__name__)


async def event_stream(events: AsyncIterator[JobEvent], keepalive_s: float) -> AsyncIterator[str]:
    """Job events as server-sent events, with a comment line whenever the job is quiet.

    A separate task reads Redis so that the keep-alive timer never cancels a blocking read
    half-way (which would cost the connection).
    """
    queue: asyncio.Queue[JobEvent | Exception | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
            await queue.put(None)
        except Exception as exc:
            await queue.put(exc)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive_s)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is None:
                return
            if isinstance(item, Exception):
                log.error("event stream failed: %r", item)
                failure = {"code": "internal_error", "message": "the event stream failed; reconnect"}
                yield SseMessage(event="error", data=json.dumps(failure)).encode()
                return
            yield SseMessage(id=item.seq, event=item.type, data=json.dumps(item.data)).encode()
    finally:
        task.cancel()


def event_stream_response(events: AsyncIterator[JobEvent], keepalive_s: float) -> StreamingResponse:
    """The stream as an unbuffered text/event-stream response."""
    return StreamingResponse(
        event_stream(events, keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
