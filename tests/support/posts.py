"""Post factories: the twelve-field stored post, written once with defaults a test can override;
and a stand-in for the workflow's `save_post` that keeps posts in memory."""

from __future__ import annotations

import time
from typing import Any

from chorus.models import Post, new_job_id


def make_post(persona_id: str, **changes: Any) -> Post:
    """An accepted, already-costed post of the persona, as finalize would store it.

    Every field can be changed by keyword; `id` defaults to a new job id and `created_at` to now.
    """
    fields: dict[str, Any] = {
        "id": new_job_id(),
        "persona_id": persona_id,
        "platform": "x",
        "status": "accepted",
        "text": "t",
        "topic": "t",
        "cost_usd": 0.0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "tiers": {},
        "nodes": [],
        "created_at": time.time(),
    }
    fields.update(changes)
    return Post(**fields)


class SavedPosts:
    """A workflow context's `save_post` that keeps what finalize stored instead of writing to Redis."""

    def __init__(self) -> None:
        self.posts: list[Post] = []

    async def __call__(self, post: Post) -> bool:
        self.posts.append(post)
        return True
