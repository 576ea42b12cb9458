"""review: the persona's rules, checked without a model (free, exact and explainable)."""

from __future__ import annotations

import re
import time

from langgraph.runtime import Runtime

from chorus.persona import PersonaSpec
from graphs.content.state import PostState, Verdict, WorkflowContext, record

MIN_WORDS = 5
_HASHTAG = re.compile(r"(?<!\w)#\w+")


def _shingles(text: str, size: int = 4) -> set[str]:
    flat = re.sub(r"\W+", " ", text.lower()).strip()
    return {flat[i : i + size] for i in range(max(1, len(flat) - size + 1))}


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of character 4-grams: robust to small edits, cheap on short posts."""
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb) if sa and sb else 0.0


def _mentions(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", text.lower()) is not None


def review_post(persona: PersonaSpec, text: str, recent_texts: list[str]) -> list[str]:
    """Every rule the draft breaks, as messages an editor (or a rewrite prompt) can act on."""
    if not text.strip():
        return ["the draft is empty"]
    problems: list[str] = []
    limit = persona.max_chars
    if len(re.findall(r"[^\W\d_]{2,}", text)) < MIN_WORDS:
        problems.append(f"too thin: fewer than {MIN_WORDS} words")
    if len(text) > limit:
        problems.append(f"too long: {len(text)} characters, the limit is {limit}")
    problems += [f"uses the banned word {w!r}" for w in persona.banned_words if _mentions(text, w)]
    problems += [f"touches the banned topic {t!r}" for t in persona.banned_topics if _mentions(text, t)]
    tags = [t.lower() for t in _HASHTAG.findall(text)]
    rules = persona.rules
    problems += [
        f"missing the required hashtag {t}" for t in rules.required_hashtags if t.lower() not in tags
    ]
    if len(tags) < rules.min_hashtags:
        problems.append(f"has {len(tags)} hashtags, at least {rules.min_hashtags} are required")
    if len(tags) > rules.max_hashtags:
        problems.append(f"has {len(tags)} hashtags, at most {rules.max_hashtags} are allowed")
    for recent in recent_texts:
        score = similarity(text, recent)
        if score >= rules.novelty_threshold:
            problems.append(f"near-duplicate of a recent post (similarity {score:.2f})")
            break
    return problems


def verdict(problems: list[str], rewrites: int, max_rewrites: int) -> Verdict:
    if not problems:
        return "accepted"
    return "rewrite" if rewrites < max_rewrites else "rejected"


async def review(state: PostState, runtime: Runtime[WorkflowContext]) -> PostState:
    started = time.perf_counter()
    ctx = runtime.context
    replaced = state.get("replaced_draft")
    # A new revision is compared with the persona's other posts, not with the draft it replaces.
    recent = [r["text"] for r in ctx.recent if r["text"] != replaced]
    problems = review_post(ctx.persona, state["draft"], recent)
    return {
        "problems": problems,
        "verdict": verdict(problems, state.get("rewrites", 0), ctx.max_rewrites),
        "records": [record("review", time.perf_counter() - started)],
    }
