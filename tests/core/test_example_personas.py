"""The shipped personas (personas/*.yaml): valid, complete, and obeying their own rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from chorus.persona import (
    ModelPolicy,
    PersonaSpec,
    load_persona_dir,
    load_persona_file,
)
from tests.support.paths import PERSONA_DIR

PERSONA_FILES = sorted([*PERSONA_DIR.glob("*.yaml"), *PERSONA_DIR.glob("*.yml")])


HASHTAG = re.compile(r"#\w+")


def _hashtags(post: str) -> list[str]:
    return HASHTAG.findall(post)


def _contains_word(text: str, word: str) -> bool:
    """Case-insensitive whole-word (or whole-phrase) match."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE) is not None


def _load(path: Path) -> PersonaSpec:
    return load_persona_file(path)


def test_persona_folder_has_enough_personas() -> None:
    assert len(PERSONA_FILES) >= 6


def test_all_personas_load_and_ids_are_unique() -> None:
    specs = load_persona_dir(PERSONA_DIR)
    assert len(specs) == len(PERSONA_FILES)
    ids = [spec.id for spec in specs]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("path", PERSONA_FILES, ids=lambda p: p.stem)
def test_file_name_is_the_id(path: Path) -> None:
    spec = _load(path)
    assert path.name == f"{spec.id}.yaml"


@pytest.mark.parametrize("path", PERSONA_FILES, ids=lambda p: p.stem)
def test_persona_is_complete(path: Path) -> None:
    spec = _load(path)
    assert 5 <= len(spec.topics) <= 8
    assert spec.banned_words, "a brand persona should ban some words"
    assert spec.banned_topics, "a brand persona should ban some topics"
    assert 3 <= len(spec.example_posts) <= 4
    assert spec.daily_budget_usd is not None and 0.2 <= spec.daily_budget_usd <= 5
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert "timezone" in raw.get("cadence", {}), "set a real IANA time zone explicitly"


@pytest.mark.parametrize("path", PERSONA_FILES, ids=lambda p: p.stem)
def test_example_posts_follow_the_personas_rules(path: Path) -> None:
    spec = _load(path)
    for post in spec.example_posts:
        assert len(post) <= spec.max_chars, f"{post!r} is longer than {spec.max_chars}"
        # Few-shot examples for a tiny base model: one line, none of the document's markers.
        assert "\n" not in post
        assert not any(marker in post for marker in ("###", "Post:", "Topic:")), post
        tags = {tag.lower() for tag in _hashtags(post)}
        for required in spec.rules.required_hashtags:
            assert required.lower() in tags, f"{post!r} lacks {required}"
        count = len(_hashtags(post))
        assert spec.rules.min_hashtags <= count <= spec.rules.max_hashtags, (
            f"{post!r} has {count} hashtags, allowed {spec.rules.min_hashtags}..{spec.rules.max_hashtags}"
        )
        for word in spec.banned_words:
            assert not _contains_word(post, word), f"{post!r} uses banned word {word!r}"


def test_fleet_varies_its_model_policy() -> None:
    specs = load_persona_dir(PERSONA_DIR)
    steps = list(ModelPolicy.model_fields)
    policies = {tuple(spec.model_policy.tier_for(step) for step in steps) for spec in specs}
    assert len(policies) >= 2
    assert tuple("local" for _ in steps) in policies, "one persona should run all-local"


def test_word_match_helper() -> None:
    assert _contains_word("So CHEAP today", "cheap")
    assert not _contains_word("cheapest beans", "cheap")
    assert _contains_word("it is 100% secure.", "100% secure")
    assert _contains_word("a game-changer!", "game-changer")
