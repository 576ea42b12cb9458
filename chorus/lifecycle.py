"""A post's lifecycle as one explicit state machine: the states, the moves allowed from each, and
the record every move leaves.

review -> accepted -> pending_approval -> approved | changes_requested | rejected
                   -> scheduled (no approval needed) -> publishing -> published | failed
changes_requested -> pending_approval (the new draft) ; approved -> scheduled
publishing -> scheduled (rate-limited, retried, or its account needs re-auth) ; failed -> scheduled
published -> deleted

Every component that moves a post (the workflow, the inbox, the publisher) asks this table, and
the store applies a move only if the post is still in a state the move starts from, so two
writers racing on one post cannot both win.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field

from chorus.errors import IllegalTransition

LifecycleState = Literal[
    "accepted",
    "pending_approval",
    "approved",
    "changes_requested",
    "rejected",
    "scheduled",
    "publishing",
    "published",
    "failed",
    "deleted",
]
LIFECYCLE_STATES: tuple[LifecycleState, ...] = get_args(LifecycleState)

ALLOWED_MOVES: dict[LifecycleState, tuple[LifecycleState, ...]] = {
    "accepted": ("pending_approval", "scheduled"),
    "pending_approval": ("approved", "changes_requested", "rejected"),
    "approved": ("scheduled",),
    "changes_requested": ("pending_approval", "rejected"),
    "rejected": (),
    "scheduled": ("publishing", "rejected"),
    "publishing": ("published", "failed", "scheduled"),
    "published": ("deleted",),
    "failed": ("scheduled", "rejected"),
    "deleted": (),
}

# Who moved a post when no person did: the workflow, the publisher.
SYSTEM_ACTOR = "system"


class Transition(BaseModel):
    """One move of one post: who made it, when, and why."""

    from_state: LifecycleState | None = Field(None, description="None for the post's first state")
    to_state: LifecycleState
    actor: str = Field(description="the API key id that asked for it, or 'system'")
    at: float
    reason: str | None = None


def sources_of(target: LifecycleState) -> tuple[LifecycleState, ...]:
    """The states a move to `target` may start from."""
    return tuple(state for state, moves in ALLOWED_MOVES.items() if target in moves)


def check_move(post_id: str, current: LifecycleState, target: LifecycleState) -> None:
    """Raise IllegalTransition (HTTP 409) unless `current` may move to `target`."""
    if target not in ALLOWED_MOVES[current]:
        raise IllegalTransition(post_id, current, target, list(ALLOWED_MOVES[current]))
