"""Every Chorus metric, declared once, exported through Ray's own Prometheus endpoint.

`ray.util.metrics` objects live per process and Ray's metrics agent adds the `ray_` prefix, so
`chorus_posts_total` is scraped as `ray_chorus_posts_total` from every node. Tag values come from
bounded sets only (persona ids, node and step names, tiers, models, statuses), never free text.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from chorus.settings import Settings

log = logging.getLogger(__name__)

# The tag keys metrics may use: each one ranges over a bounded, known set of values.
BOUNDED_TAGS = frozenset(
    {
        "persona",
        "platform",
        "status",
        "node",
        "step",
        "tier",
        "model",
        "cache",
        "reason",
        "direction",
        "kind",
        "outcome",
        "decision",
        "state",
    }
)

# Fits LLM latencies: cache hits in milliseconds up to slow premium calls in minutes.
LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128]
COST_BUCKETS = [1e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5]


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: Literal["counter", "gauge", "histogram"]
    description: str
    tags: tuple[str, ...]
    boundaries: tuple[float, ...] = ()


_DEFS = [
    # Business
    MetricDef(
        "chorus_posts_total",
        "counter",
        "Posts finished by the content workflow, by final status.",
        ("persona", "platform", "status"),
    ),
    MetricDef(
        "chorus_post_cost_usd",
        "histogram",
        "Model spend of one finished post in USD (sum/count gives cost per post).",
        ("persona", "status"),
        tuple(COST_BUCKETS),
    ),
    MetricDef(
        "chorus_llm_cost_usd_total",
        "counter",
        "USD spent on model calls, from the price table.",
        ("persona", "step", "tier", "model"),
    ),
    MetricDef(
        "chorus_llm_premium_equivalent_usd_total",
        "counter",
        "What each model call would have cost on the premium tier (all-premium baseline).",
        ("persona", "tier", "cache"),
    ),
    MetricDef(
        "chorus_llm_tokens_total",
        "counter",
        "Model tokens, in (prompt) and out (completion).",
        ("persona", "tier", "model", "direction"),
    ),
    MetricDef(
        "chorus_persona_spend_today_usd", "gauge", "A persona's spend so far today (UTC).", ("persona",)
    ),
    MetricDef("chorus_persona_daily_budget_usd", "gauge", "A persona's daily budget in USD.", ("persona",)),
    MetricDef(
        "chorus_engagement_rate",
        "gauge",
        "Engagements per impression reported by the platform (absent until reported).",
        ("persona", "platform"),
    ),
    MetricDef(
        "chorus_followers",
        "gauge",
        "Followers reported by the platform (absent until reported).",
        ("persona", "platform"),
    ),
    MetricDef(
        "chorus_cost_per_follower_usd",
        "gauge",
        "A persona's model spend to date per follower on all its platforms (absent until reported).",
        ("persona",),
    ),
    MetricDef(
        "chorus_approvals_total",
        "counter",
        "Reviewer decisions in the approval inbox: approve, reject, request_changes.",
        ("persona", "decision"),
    ),
    MetricDef(
        "chorus_publishes_total",
        "counter",
        "Publish attempts by platform and outcome: published, already_published, rate_limited, "
        "retried, failed, needs_reauth.",
        ("persona", "platform", "outcome"),
    ),
    MetricDef("chorus_posts_by_state", "gauge", "Stored posts in each lifecycle state.", ("state",)),
    # Application
    MetricDef(
        "chorus_publish_latency_seconds",
        "histogram",
        "Wall time of one platform publish call, as the publisher saw it.",
        ("platform",),
        tuple(LATENCY_BUCKETS),
    ),
    MetricDef(
        "chorus_publish_delay_seconds",
        "histogram",
        "From a post's due time to its record on the platform.",
        ("platform",),
        tuple(LATENCY_BUCKETS),
    ),
    MetricDef(
        "chorus_publish_retries_total",
        "counter",
        "Publish attempts rescheduled after a transient failure.",
        ("platform", "reason"),
    ),
    MetricDef(
        "chorus_publish_rate_limit_wait_seconds",
        "histogram",
        "How far a platform's rate-limit answer pushed a post back.",
        ("platform",),
        (*LATENCY_BUCKETS, 300, 900, 3600),
    ),
    MetricDef("chorus_outbox_depth", "gauge", "Posts in the outbox (due, leased or waiting).", ()),
    MetricDef(
        "chorus_outbox_oldest_due_age_seconds",
        "gauge",
        "How long the oldest due outbox item has been due (0 when none is due).",
        (),
    ),
    MetricDef(
        "chorus_accounts_needing_reauth",
        "gauge",
        "Platform accounts whose credentials stopped working; their posts wait.",
        ("platform",),
    ),
    MetricDef(
        "chorus_node_duration_seconds",
        "histogram",
        "Wall time of one content-workflow node.",
        ("persona", "node"),
        tuple(LATENCY_BUCKETS),
    ),
    MetricDef("chorus_rewrites_total", "counter", "Rewrites after a failed review.", ("persona",)),
    MetricDef(
        "chorus_llm_calls_total",
        "counter",
        "Model calls by step, tier used and cache result.",
        ("step", "tier", "model", "cache"),
    ),
    MetricDef(
        "chorus_llm_latency_seconds",
        "histogram",
        "Latency of model calls as the router saw them.",
        ("step", "tier", "cache"),
        tuple(LATENCY_BUCKETS),
    ),
    MetricDef(
        "chorus_llm_fallbacks_total",
        "counter",
        "Calls served by another tier than the policy asked for.",
        ("step", "tier", "reason"),
    ),
    MetricDef(
        "chorus_llm_retries_total", "counter", "Retries of a failed model call.", ("step", "tier", "reason")
    ),
    MetricDef("chorus_job_errors_total", "counter", "Jobs that ended in an error.", ("persona", "kind")),
    MetricDef("chorus_job_queue_depth", "gauge", "Jobs submitted and not yet finished, fleet-wide.", ()),
    MetricDef(
        "chorus_job_wait_seconds",
        "histogram",
        "Time from a job's submission to the start of its workflow.",
        (),
        tuple(LATENCY_BUCKETS),
    ),
    MetricDef("chorus_active_personas", "gauge", "Persona actors currently holding a process.", ()),
    MetricDef("chorus_activations_total", "counter", "Persona actors started (cold activations).", ()),
    MetricDef(
        "chorus_passivations_total", "counter", "Persona actors stopped to free their process.", ("reason",)
    ),
    # Infrastructure, from the application's side
    MetricDef("chorus_redis_up", "gauge", "1 when Redis answered the last ping.", ()),
    MetricDef("chorus_redis_ping_seconds", "gauge", "Round trip of the last Redis ping.", ()),
    MetricDef("chorus_redis_used_memory_bytes", "gauge", "Redis used_memory from INFO.", ()),
]

METRICS: dict[str, MetricDef] = {d.name: d for d in _DEFS}

_instances: dict[str, Any] = {}


# `Settings.metrics_enabled`, as its environment variable: read per call (not from the cached
# settings) so a benchmark can compare both ways within one process tree.
METRICS_ENABLED_ENV = "CHORUS_METRICS_ENABLED"
_METRICS_ENABLED_DEFAULT: bool = Settings.model_fields["metrics_enabled"].default


@lru_cache(maxsize=16)
def _flag(raw: str) -> bool:
    # The setting's own parsing (0/1, false/true, off/on...); a value Settings would refuse at
    # start leaves recording on rather than fail a metric call.
    try:
        return TypeAdapter(bool).validate_python(raw)
    except ValidationError:
        return True


def enabled() -> bool:
    raw = os.environ.get(METRICS_ENABLED_ENV)
    return _METRICS_ENABLED_DEFAULT if raw is None else _flag(raw)


def _metric(name: str) -> Any:
    metric = _instances.get(name)
    if metric is None:
        from ray.util import metrics as ray_metrics

        d = METRICS[name]
        if d.kind == "counter":
            metric = ray_metrics.Counter(d.name, d.description, tag_keys=d.tags)
        elif d.kind == "gauge":
            metric = ray_metrics.Gauge(d.name, d.description, tag_keys=d.tags)
        else:
            metric = ray_metrics.Histogram(
                d.name, d.description, boundaries=list(d.boundaries), tag_keys=d.tags
            )
        _instances[name] = metric
    return metric


def _tags(name: str, tags: dict[str, str]) -> dict[str, str]:
    expected = METRICS[name].tags
    if set(tags) != set(expected):
        raise ValueError(f"{name} takes tags {expected}, got {tuple(tags)}")
    return {k: str(v) for k, v in tags.items()}


def inc(name: str, value: float = 1.0, **tags: str) -> None:
    if enabled() and value:
        _metric(name).inc(value, tags=_tags(name, tags))


def observe(name: str, value: float, **tags: str) -> None:
    if enabled():
        _metric(name).observe(value, tags=_tags(name, tags))


def set_gauge(name: str, value: float, **tags: str) -> None:
    if enabled():
        _metric(name).set(value, tags=_tags(name, tags))
