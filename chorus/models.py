"""The records Chorus keeps and answers with, free of Redis: posts, jobs and their events, stats,
audiences and engagement, schedules, reservations, API keys; the id patterns and money helpers.

Apart from the store (``chorus/store/``) so that the workflow (``graphs/``), the CLI and the API's
wire models read them without a Redis client, and so that one record has one definition whichever
repository writes it.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from chorus.errors import BudgetExceeded
from chorus.inputs import Integer
from chorus.lifecycle import LifecycleState, Transition
from chorus.persona import Platform
from chorus.publishing.protocol import Published, PublishRequest

JobStatus = Literal["queued", "running", "done", "failed", "budget_exceeded"]
PostStatus = Literal["accepted", "rejected"]
JobSource = Literal["request", "schedule"]  # asked for (API, CLI, campaign) or due on a cadence
TERMINAL_JOB_STATUSES = ("done", "failed", "budget_exceeded")
# Why a job ended without finishing: budget_exceeded (the persona's daily budget would be passed),
# persona_deleted, persona_actor_died (its process kept dying), tiers_unavailable (every model tier
# failed), internal_error (a bug; the server log has the incident).
JobErrorCode = Literal[
    "budget_exceeded", "persona_deleted", "persona_actor_died", "tiers_unavailable", "internal_error"
]


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex[:20]}"


# Ids and positions go into Redis keys and commands: the API checks each against one of these
# (and publishes them in its schema) before any reaches Redis. A ':' in an id would name another
# key (`job:<id>:events` is a stream), and XREAD refuses stream ids past 64 bits.
JOB_ID_PATTERN = r"^job_[A-Za-z0-9_-]{1,80}$"  # new_job_id(); a post's id is its job's id
EVENT_ID_PATTERN = r"^[0-9]{1,19}(-[0-9]{1,19})?$"  # a Redis stream id, each part under 2**64
# A page's last (created_at as repr(float), post id): digits only, not all that float() reads.
CURSOR_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,20})?(e[-+][0-9]{1,3})?:job_[A-Za-z0-9_-]{1,80}$"


def parse_cursor(cursor: str) -> tuple[float, str]:
    """The (score, post id) a cursor names; ValueError when it is not one this API handed out."""
    if re.fullmatch(CURSOR_PATTERN, cursor) is None:
        raise ValueError("not a cursor from a previous page")
    score, _, post_id = cursor.partition(":")
    return float(score), post_id


class NodeRecord(BaseModel):
    node: str
    duration_s: float
    tier: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cache_hit: bool = False
    fallback_reason: str | None = None


class Post(BaseModel):
    id: str  # the job id: one job stores at most one post
    persona_id: str
    platform: str
    status: PostStatus
    text: str
    topic: str
    reasons: list[str] = Field(default_factory=list)
    rewrites: int = 0
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    tiers: dict[str, str]
    nodes: list[NodeRecord]
    created_at: float
    # Its lifecycle (chorus/lifecycle.py): the review's verdict above is where it starts.
    state: LifecycleState = "accepted"
    state_changed_at: float | None = Field(None, description="None: in its first state since created_at")
    revision: int = Field(1, description="1 for the first draft; each edit or new draft adds one")
    account_id: str | None = Field(None, description="the platform account it goes out on")
    publish_at: float | None = Field(None, description="when it is due to publish (Unix time)")
    published: Published | None = None
    last_error: str | None = Field(None, description="the last publish attempt's error, for people")
    feedback: str | None = Field(None, description="the reviewer's latest request for changes")
    source_url: str | None = Field(None, description="a page the post is about (a link card)")
    source_title: str | None = None
    # Bluesky: the record key and creation time the post is written under, fixed the first time
    # it is scheduled so that every retry (and a retry after a failure) writes the same record.
    record_key: str | None = None
    record_created_at: float | None = None


class PostHistory(BaseModel):
    post_id: str
    state: LifecycleState
    transitions: list[Transition]


class InboxQuery(BaseModel):
    """What waits for approval, oldest first."""

    model_config = ConfigDict(frozen=True)

    persona_id: str | None = None
    platform: Platform | None = None
    older_than_s: float | None = Field(None, ge=0, description="only items waiting at least this long")
    newer_than_s: float | None = Field(None, ge=0, description="only items waiting at most this long")
    limit: int = Field(50, ge=1, le=500)


class AccountStatus(StrEnum):
    active = "active"
    needs_reauth = "needs_reauth"


class Account(BaseModel):
    """A persona's account on a platform, as the API shows it: never its credentials."""

    id: str
    persona_id: str
    platform: Platform
    handle: str
    service_url: str
    status: AccountStatus = AccountStatus.active
    status_message: str | None = Field(None, description="the platform's words when it stopped working")
    identity: str | None = Field(None, description="the platform's id for it (a DID, a user id)")
    created_at: float
    updated_at: float


class OutboxItem(BaseModel):
    """A post waiting in (or claimed from) the outbox."""

    post_id: str
    persona_id: str
    account_id: str
    platform: Platform
    due_at: float
    attempts: int = 0
    request: PublishRequest
    holder: str | None = None
    lease_until: float | None = None
    # Set just before a send; still set when the item comes back means the send's answer was
    # lost (a crash, a timeout) and the adapter must check the platform before sending again.
    sending_since: float | None = None
    last_error: str | None = None


class Job(BaseModel):
    id: str
    persona_id: str
    status: JobStatus
    source: JobSource = "request"
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    post_id: str | None = None
    error_code: JobErrorCode | None = Field(
        None, description="why the job did not finish, stable for programs (see `error` for people)"
    )
    error: str | None = Field(None, description="one line for people; details stay in the server log")
    attempts: int = 0
    source_url: str | None = Field(None, description="a page the post is to be about")
    source_title: str | None = None


class JobEvent(BaseModel):
    """One entry of a job's event stream: a finished node, the post, or the end."""

    seq: str
    type: Literal["node", "post", "end"]
    data: dict[str, Any]


class Audience(BaseModel):
    """A persona's audience over all its platforms, from their latest engagement reports."""

    followers: int | None = None
    engagement_rate: float | None = None
    cost_per_follower_usd: float | None = None

    @classmethod
    def from_reports(cls, engagements: list[Engagement], cost_usd: float) -> Audience:
        """The audience the latest reports add up to, and what each follower cost so far."""
        if not engagements:
            return cls()
        followers = sum(e.followers for e in engagements)
        impressions = sum(e.impressions for e in engagements)
        return cls(
            followers=followers,
            engagement_rate=sum(e.engagements for e in engagements) / impressions if impressions else None,
            cost_per_follower_usd=cost_usd / followers if followers else None,
        )


class PersonaStats(Audience):
    persona_id: str
    posts: int
    accepted: int
    rejected: int
    cost_usd: float
    spend_today_usd: float
    daily_budget_usd: float
    cost_per_accepted_post_usd: float | None
    prompt_tokens: int
    completion_tokens: int
    # Spend next to the cost of posts: what was paid for posts that were stored but rejected, for
    # jobs that stored nothing (failed or over budget), and all spend no stored post accounts for
    # (those jobs, plus calls whose answer was lost with a crashed process and paid again).
    rejected_cost_usd: float = Field(0.0, description="cost of the stored posts that review rejected")
    spent_usd: float = Field(0.0, description="all model spend recorded for the persona")
    failed_spend_usd: float = Field(0.0, description="spend of jobs that ended without a post")
    unposted_spend_usd: float = Field(0.0, description="spend that no stored post's cost accounts for")


class PostPage(BaseModel):
    posts: list[Post]
    next_cursor: str | None


class PostQuery(BaseModel):
    """Which posts a listing wants, newest first; one model from the route to the repository."""

    model_config = ConfigDict(frozen=True)

    persona_id: str | None = None
    status: PostStatus | None = None
    state: LifecycleState | None = None
    since: float | None = Field(None, description="Unix time, inclusive.")
    until: float | None = Field(None, description="Unix time, exclusive.")
    cursor: str | None = Field(None, description="next_cursor of the previous page.")
    limit: int = 50


class EngagementReport(BaseModel):
    """What a platform says of a persona's account: its audience now and a period's engagement.

    Chorus does not poll the platforms itself; whatever does (a scheduled job, a webhook relay)
    posts these, and the latest report per platform is what counts.
    """

    model_config = ConfigDict(extra="forbid")

    platform: Platform
    # A JSON `true` or "12" is a client's mistake, not a count.
    followers: Integer = Field(ge=0, description="followers of the account now")
    impressions: Integer = Field(ge=0, description="times the persona's posts were shown in the period")
    engagements: Integer = Field(
        ge=0, description="likes, reposts, replies and clicks on the persona's posts in the period"
    )


class Engagement(EngagementReport):
    # A record Chorus wrote, read back with its derived rate: only reports from clients are strict.
    model_config = ConfigDict(extra="ignore")

    persona_id: str
    reported_at: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def engagement_rate(self) -> float | None:
        """Engagements per impression in the reported period; None without impressions."""
        return self.engagements / self.impressions if self.impressions else None


class ScheduledSlot(BaseModel):
    at: datetime
    job_id: str | None = Field(None, description="the job queued for this slot, once it came due")


class Schedule(BaseModel):
    """A persona's posting slots on its local day."""

    persona_id: str
    autopost: bool
    timezone: str
    day: date
    slots: list[ScheduledSlot]


class Reservation(BaseModel):
    """A paid call's worst case, held on a persona's ledger until the call settles."""

    id: str
    persona_id: str
    amount_usd: float
    expires_at: float
    holder: str
    job_id: str | None


def budget_resets_at(now: float | None = None) -> datetime:
    """When today's spend ledgers start over: the next midnight UTC."""
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC).date()
    return datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)


def usd(amount: float) -> str:
    """Dollars with three significant digits however small ($0.000123, not $0.0001), no exponent."""
    if amount <= 0:
        return "$0.00"
    decimals = min(12, max(2, 2 - math.floor(math.log10(amount))))
    return f"${amount:.{decimals}f}"


def budget_exceeded_message(exc: BudgetExceeded, now: float | None = None) -> str:
    """One line for a job stopped by its budget: what was spent, of what, and when it resets."""
    resets = budget_resets_at(now)
    return (
        f"persona {exc.persona_id!r} has spent {usd(exc.spent_usd)} of its {usd(exc.budget_usd)} "
        f"daily budget and the next model call could cost up to {usd(exc.needed_usd)}; "
        f"the budget resets at {resets:%Y-%m-%d %H:%M} UTC"
    )


Role = Literal["admin", "editor", "viewer"]
# Least to most powerful: a role may do everything the roles before it may.
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")


def role_allows(have: Role, need: Role) -> bool:
    return ROLES.index(have) >= ROLES.index(need)


class ApiKey(BaseModel):
    id: str
    role: Role
    name: str = ""
    created_at: float
    revoked_at: float | None = None
    # How the key starts (its public id), so people can tell their keys apart in a listing;
    # never any character of the secret.
    hint: str

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None
