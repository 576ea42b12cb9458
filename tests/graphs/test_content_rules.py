"""The workflow's rules, without a model: review, the rewrite bound, topic choice and cleanup."""

from __future__ import annotations

from graphs.content.nodes.plan import choose_topic
from graphs.content.nodes.review import review_post, similarity, verdict
from graphs.content.prompts import clean_post, first_line, fit_to_length, with_required_hashtags
from tests.support.personas import make_persona


def test_review_names_every_broken_rule() -> None:
    persona = make_persona(
        "rules-check",
        banned_words=["cheap"],
        banned_topics=["politics"],
        rules={"required_hashtags": ["#EmberAndOak"], "min_hashtags": 1, "max_hashtags": 2},
    )
    problems = review_post(persona, "Cheap beans and politics today #a #b #c " + "x" * 300, [])
    joined = " | ".join(problems)
    assert "too long" in joined and "limit is 280" in joined
    assert "banned word 'cheap'" in joined
    assert "banned topic 'politics'" in joined
    assert "missing the required hashtag #EmberAndOak" in joined
    assert "has 3 hashtags, at most 2" in joined
    good = "Roast day: our Kenya smells like blackcurrant and toast. Bags out Friday. #EmberAndOak"
    assert review_post(persona, good, []) == []


def test_review_catches_a_near_duplicate_but_not_a_new_post() -> None:
    persona = make_persona("novelty-check")
    recent = "Roast day! Our Ethiopia Guji smells like blueberries and toast. Bags Friday. #EmberAndOak"
    near = "Roast day! Our Ethiopia Guji smells like blueberries and toast. Bags on Friday! #EmberAndOak"
    fresh = "Pour-over tip: grind a little finer when your cup tastes sour. #EmberAndOak"
    assert similarity(near, recent) > 0.8
    assert any("near-duplicate" in p for p in review_post(persona, near, [recent]))
    assert review_post(persona, fresh, [recent]) == []


def test_verdict_bounds_the_rewrite_loop() -> None:
    assert verdict([], 0, 2) == "accepted"
    assert verdict(["x"], 0, 2) == "rewrite"
    assert verdict(["x"], 2, 2) == "rejected"


def test_plan_prefers_topics_not_used_recently() -> None:
    topics = ["a", "b", "c"]
    assert choose_topic(topics, []) == "a"
    assert choose_topic(topics, ["a"]) == "b"
    assert choose_topic(topics, ["b", "a", "c"]) == "c"  # c is the oldest use


def test_cleanup_strips_what_the_model_adds_after_the_post() -> None:
    raw = ' "Cold brew is back. Come early!"\n###\nPost: another one\nTopic: x'
    assert clean_post(raw) == "Cold brew is back. Come early!"
    assert clean_post("Topic: Story time at the library #RiversideReads") == (
        "Story time at the library #RiversideReads"
    )
    assert first_line("1. Beans. 2. More beans") == "1. Beans."
    assert fit_to_length("One sentence here. Two sentences here. Three", 40) == (
        "One sentence here. Two sentences here."
    )
    assert with_required_hashtags("Hello there", ["#Tag"], 100) == "Hello there #Tag"
    assert with_required_hashtags("x" * 99, ["#Tag"], 100) == "x" * 99
