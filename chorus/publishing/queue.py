"""From an approved post to an outbox item: the one place that decides when a post is due and
what request the publisher will send for it.

The workflow (a post that needs no approval, or one just approved) and the inbox (a failed post
retried, a scheduled one moved) both schedule through `PublishQueue`, so the record key and the
record's creation time are fixed once per post and every later attempt writes the same record.
"""

from __future__ import annotations

import time

from chorus.cadence import next_slot
from chorus.errors import UnknownPost
from chorus.lifecycle import SYSTEM_ACTOR
from chorus.models import NodeRecord, OutboxItem, Post
from chorus.persona import PersonaSpec, Platform
from chorus.publishing.protocol import PublishRequest
from chorus.publishing.tid import tid_for_post
from chorus.settings import PublishingSettings
from chorus.store.outbox import OutboxRepo
from chorus.store.posts import PostRepo


class PublishQueue:
    def __init__(self, posts: PostRepo, outbox: OutboxRepo, settings: PublishingSettings) -> None:
        self.posts, self.outbox, self.settings = posts, outbox, settings

    def due_at(self, spec: PersonaSpec, chosen: float | None, now: float) -> float:
        """The approver's time, else the persona's next cadence slot (when slots are used), else now."""
        if chosen is not None:
            return max(chosen, now)
        if self.settings.use_cadence_slots:
            slot = next_slot(spec.cadence, now)
            if slot is not None:
                return slot.at
        return now

    async def schedule(
        self,
        post_id: str,
        spec: PersonaSpec,
        *,
        actor: str = SYSTEM_ACTOR,
        publish_at: float | None = None,
        reason: str | None = None,
    ) -> Post:
        """Move the post to `scheduled` and queue it; a post already scheduled is queued (once)."""
        post = await self.posts.get(post_id)
        if post is None:
            raise UnknownPost(post_id)
        if post.state != "scheduled":
            now = time.time()
            due = self.due_at(spec, publish_at if publish_at is not None else post.publish_at, now)
            created = post.record_created_at or now
            post = await self.posts.transition(
                post_id,
                "scheduled",
                actor=actor,
                reason=reason or f"due {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(due))} UTC",
                updates={
                    "publish_at": due,
                    "record_created_at": created,
                    "record_key": post.record_key or tid_for_post(post_id, created),
                    "last_error": None,
                },
            )
        await self.enqueue(post)
        return post

    async def enqueue(self, post: Post) -> bool:
        if post.account_id is None or post.record_created_at is None or post.publish_at is None:
            raise ValueError(f"post {post.id} has no account or record time to publish with")
        request = PublishRequest(
            post_id=post.id,
            text=post.text,
            created_at=post.record_created_at,
            rkey=post.record_key,
            source_url=post.source_url,
            source_title=post.source_title,
        )
        item = OutboxItem(
            post_id=post.id,
            persona_id=post.persona_id,
            account_id=post.account_id,
            platform=Platform(post.platform),
            due_at=post.publish_at,
            request=request,
        )
        return await self.outbox.enqueue(item)


class WorkflowLifecycle:
    """The lifecycle moves of one persona's workflow (graphs.content.state.PostLifecycle)."""

    def __init__(self, queue: PublishQueue, spec: PersonaSpec) -> None:
        self.queue, self.spec = queue, spec

    async def submit_for_approval(self, post_id: str) -> None:
        post = await self.queue.posts.get(post_id)
        if post is not None and post.state == "accepted":
            await self.queue.posts.transition(
                post_id, "pending_approval", actor=SYSTEM_ACTOR, reason="the persona's posts need approval"
            )

    async def schedule(self, post_id: str) -> None:
        post = await self.queue.posts.get(post_id)
        if post is not None and post.state in ("accepted", "approved", "scheduled"):
            await self.queue.schedule(post_id, self.spec)

    async def revise(self, post_id: str, text: str, problems: list[str], nodes: list[NodeRecord]) -> None:
        post = await self.queue.posts.get(post_id)
        if post is None or post.state != "changes_requested":
            return  # written before a crash: the move was made then
        # The workflow's records run from its start; the post holds those up to its last store.
        new = nodes[len(post.nodes) :]
        await self.queue.posts.transition(
            post_id,
            "pending_approval",
            actor=SYSTEM_ACTOR,
            reason="a new draft from the reviewer's feedback",
            updates={
                "text": text,
                "reasons": problems,
                "revision": post.revision + 1,
                "nodes": [*post.nodes, *new],
                "cost_usd": post.cost_usd + sum(n.cost_usd for n in new),
                "prompt_tokens": post.prompt_tokens + sum(n.prompt_tokens for n in new),
                "completion_tokens": post.completion_tokens + sum(n.completion_tokens for n in new),
            },
        )
