"""Persona specs that must fail, and how: each names its file, field and problem in one line.

Invalid fields, bad YAML, files that are not one persona, loose types and hidden characters;
the shipped persona files are checked in tests/core/test_example_personas.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from chorus.errors import PersonaSpecError
from chorus.persona import (
    PLATFORM_LIMITS,
    WORKFLOW_STEPS,
    PersonaSpec,
    Platform,
    load_persona_dir,
    load_persona_file,
    load_persona_text,
    parse_persona,
)
from tests.support.paths import PERSONA_DIR

# --------------------------------------------------------------------------- invalid specs

_BASE: dict[str, Any] = {
    "id": "test-persona",
    "display_name": "Test Persona",
    "platforms": [{"name": "x"}],
    "voice": "Plain and friendly, one idea per post.",
    "tone": ["plain"],
    "audience": "Testers",
    "topics": ["testing"],
    "example_posts": ["Tests pass. Ship it."],
}


def _valid(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(_BASE)
    data.update(changes)
    return data


def _write(tmp_path: Path, data: Any, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def _error_for(path: Path) -> PersonaSpecError:
    with pytest.raises(PersonaSpecError) as info:
        load_persona_file(path)
    return info.value


def test_valid_base_loads(tmp_path: Path) -> None:
    spec = load_persona_file(_write(tmp_path, _valid(), "ok.yaml"))
    assert spec.id == "test-persona"
    assert spec.max_chars == 280


def test_max_chars_is_the_strictest_platform() -> None:
    spec = parse_persona(_valid(platforms=[{"name": "linkedin"}, {"name": "bluesky"}]))
    assert spec.primary_platform.name is Platform.linkedin
    assert spec.platforms[0].limit == PLATFORM_LIMITS[Platform.linkedin]
    assert spec.max_chars == PLATFORM_LIMITS[Platform.bluesky]


def _without(field: str) -> dict[str, Any]:
    data = _valid()
    del data[field]
    return data


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        pytest.param(_valid(id="Bad_ID"), "id", "should match pattern", id="bad-id-slug"),
        pytest.param(_valid(id="-lead"), "id", "should match pattern", id="id-leading-dash"),
        pytest.param(
            _valid(platforms=[{"name": "myspace"}]),
            "platforms[0].name",
            "'x', 'bluesky', 'mastodon' or 'linkedin'",
            id="unknown-platform",
        ),
        pytest.param(
            _valid(platforms=[{"name": "x", "max_chars": 400}]),
            "platforms[0].max_chars",
            "max_chars 400 exceeds x's limit 280",
            id="max-chars-above-limit",
        ),
        pytest.param(
            _valid(platforms=[{"name": "x"}, {"name": "linkedin", "max_chars": 5000}]),
            "platforms[1].max_chars",
            "max_chars 5000 exceeds linkedin's limit 3000",
            id="max-chars-above-limit-second-platform",
        ),
        pytest.param(
            _valid(platforms=[{"name": "x", "max_chars": 10}]),
            "platforms[0].max_chars",
            "greater than or equal to 40",
            id="max-chars-too-small",
        ),
        pytest.param(_valid(topcis=["typo"]), "topcis", "unknown field", id="unknown-field-typo"),
        pytest.param(
            _valid(cadence={"timezon": "UTC"}),
            "cadence.timezon",
            "unknown field",
            id="unknown-nested-field",
        ),
        pytest.param(
            _valid(cadence={"timezone": "Mars/Olympus_Mons"}),
            "cadence.timezone",
            "unknown time zone 'Mars/Olympus_Mons'",
            id="bad-timezone",
        ),
        pytest.param(
            _valid(cadence={"active_hours": [18, 9]}),
            "cadence.active_hours",
            "0 <= start < end <= 24",
            id="active-hours-reversed",
        ),
        pytest.param(
            _valid(cadence={"active_hours": [9, 25]}),
            "cadence.active_hours",
            "0 <= start < end <= 24",
            id="active-hours-past-midnight",
        ),
        pytest.param(
            _valid(daily_budget_usd=-1),
            "daily_budget_usd",
            "greater than or equal to 0",
            id="negative-budget",
        ),
        pytest.param(
            _valid(model_policy={"hook": "gold"}),
            "model_policy.hook",
            "'premium' or 'local'",
            id="unknown-tier",
        ),
        pytest.param(
            _valid(rules={"required_hashtags": ["nohash"]}),
            "rules.required_hashtags",
            "must look like #word",
            id="bad-hashtag",
        ),
        pytest.param(
            _valid(rules={"min_hashtags": 3, "max_hashtags": 1}),
            "rules",
            "min_hashtags must not exceed max_hashtags",
            id="hashtag-bounds",
        ),
        pytest.param(
            _valid(rules={"no_cache_steps": ["publish"]}),
            "rules.no_cache_steps",
            f"unknown step 'publish'; steps are {', '.join(WORKFLOW_STEPS)}",
            id="unknown-step",
        ),
        pytest.param(_without("voice"), "voice", "Field required", id="missing-required-field"),
        pytest.param(
            _valid(example_posts=[]),
            "example_posts",
            "at least 1 item",
            id="no-example-posts",
        ),
    ],
)
def test_invalid_spec_names_file_field_and_problem(
    tmp_path: Path, data: dict[str, Any], field: str, fragment: str
) -> None:
    path = _write(tmp_path, data)
    err = _error_for(path)
    text = str(err)
    assert err.source == str(path)
    assert err.field == field
    assert fragment in err.message
    assert text.startswith(f"{path}: {field}: ")
    assert fragment in text


def test_duplicate_platform(tmp_path: Path) -> None:
    path = _write(tmp_path, _valid(platforms=[{"name": "x"}, {"name": "x"}]))
    assert str(_error_for(path)) == f"{path}: platforms: each platform may be listed once"


def test_max_chars_error_points_at_the_max_chars_field(tmp_path: Path) -> None:
    path = _write(tmp_path, _valid(platforms=[{"name": "x", "max_chars": 400}]))
    assert _error_for(path).field == "platforms[0].max_chars"


def test_invalid_yaml_syntax_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "id: broken\ntopics: [one, two\nvoice: x\n")
    err = _error_for(path)
    assert err.source == str(path)
    assert str(path) in str(err)
    assert "not valid YAML" in str(err)
    assert re.search(r"line \d+", str(err))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("- id: a\n- id: b\n", id="list"),
        pytest.param("just a string\n", id="scalar"),
        pytest.param("", id="empty"),
    ],
)
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    err = _error_for(path)
    assert str(err) == f"{path}: a persona spec must be a mapping of fields"


def test_missing_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    err = _error_for(path)
    assert str(path) in str(err)
    assert "cannot read file" in str(err)


def test_duplicate_ids_in_a_folder(tmp_path: Path) -> None:
    first = _write(tmp_path, _valid(id="same-id"), "a.yaml")
    second = _write(tmp_path, _valid(id="same-id", display_name="Other"), "b.yml")
    with pytest.raises(PersonaSpecError) as info:
        load_persona_dir(tmp_path)
    err = info.value
    assert err.source == str(second)
    assert err.field == "id"
    assert "duplicate id 'same-id'" in str(err)
    assert str(first) in str(err)


def test_folder_reports_the_bad_file(tmp_path: Path) -> None:
    _write(tmp_path, _valid(id="good-one"), "a.yaml")
    bad = _write(tmp_path, _valid(id="bad-one", daily_budget_usd=-5), "b.yaml")
    with pytest.raises(PersonaSpecError) as info:
        load_persona_dir(tmp_path)
    assert info.value.source == str(bad)
    assert info.value.field == "daily_budget_usd"


def test_text_and_data_loaders_use_the_given_source() -> None:
    with pytest.raises(PersonaSpecError, match=r"^inline: id: "):
        load_persona_text(yaml.safe_dump(_valid(id="X")), "inline")
    with pytest.raises(PersonaSpecError, match=r"^<persona>: a persona spec must be a mapping"):
        parse_persona(["not", "a", "mapping"])
    assert isinstance(PersonaSpecError("f", "g", "h"), ValueError)


# --------------------------------------------------------------------------- whole-file problems


def test_a_misspelt_field_is_reported_with_the_required_field_it_leaves_missing(tmp_path: Path) -> None:
    data = _without("topics")
    data["topcis"] = ["typo"]
    err = _error_for(_write(tmp_path, data))
    assert (err.field, err.message.split(" (")[0]) == ("topcis", "unknown field")
    assert [field for field, _ in err.problems] == ["topcis", "topics"]
    assert str(err).startswith(f"{err.source}: topcis: unknown field")
    assert "; topics: Field required" in str(err) and "\n" not in str(err)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(
            yaml.safe_dump(_BASE) + "---\n" + yaml.safe_dump(_BASE),
            f"line {len(yaml.safe_dump(_BASE).splitlines()) + 1}: a second YAML document ('---'); "
            "a persona file holds one persona",
            id="two-documents",
        ),
        pytest.param(
            b"\x89PNG\r\n\x1a\n\x00\x00", "not a UTF-8 text file (byte 0x89 at offset 0)", id="binary"
        ),
        pytest.param("topics: " + "[" * 5000, "nested too deeply to be a persona spec", id="deep-nesting"),
    ],
)
def test_a_file_that_is_not_one_persona_gets_one_line_naming_it(
    tmp_path: Path, content: str | bytes, fragment: str
) -> None:
    path = tmp_path / "odd.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    err = _error_for(path)
    assert str(err) == f"{path}: {fragment}"


def test_max_chars_is_filled_in_with_the_platform_limit() -> None:
    spec = parse_persona(_valid(platforms=[{"name": "x"}, {"name": "linkedin", "max_chars": 1300}]))
    dumped = spec.model_dump(mode="json")["platforms"]
    assert [p["max_chars"] for p in dumped] == [PLATFORM_LIMITS[Platform.x], 1300]
    assert PersonaSpec.model_validate_json(spec.model_dump_json()) == spec


# --------------------------------------------------------------------------- strict input, clean text


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        pytest.param({"daily_budget_usd": True}, "daily_budget_usd", "not a boolean", id="budget-true"),
        pytest.param({"daily_budget_usd": "5"}, "daily_budget_usd", "not text", id="budget-text"),
        pytest.param(
            {"cadence": {"posts_per_day": True}}, "cadence.posts_per_day", "not a boolean", id="ppd"
        ),
        pytest.param({"cadence": {"autopost": "yes please"}}, "cadence.autopost", "boolean", id="autopost"),
        pytest.param({"rules": {"max_hashtags": "3"}}, "rules.max_hashtags", "not text", id="max-text"),
        pytest.param(
            {"display_name": "\u200b" * 80}, "display_name", "U+200B ZERO WIDTH SPACE", id="invisible-name"
        ),
        pytest.param(
            {"display_name": "\u3164" * 10}, "display_name", "visible character", id="blank-letter-name"
        ),
        pytest.param(
            {"display_name": "Ember\u202e Oak"}, "display_name", "RIGHT-TO-LEFT OVERRIDE", id="bidi-name"
        ),
        pytest.param({"topics": ["coffee", "  "]}, "topics[1]", "must not be empty", id="blank-topic"),
        pytest.param({"example_posts": [""]}, "example_posts[0]", "must not be empty", id="empty-example"),
        pytest.param({"voice": "A warm voice\x00 here"}, "voice", "U+0000", id="nul-in-voice"),
        pytest.param({"banned_words": ["o\u200bk"]}, "banned_words[0]", "U+200B", id="zwsp-banned-word"),
        pytest.param(
            {"rules": {"required_hashtags": ["#Copper\u200bline"]}},
            "rules.required_hashtags",
            "U+200B ZERO WIDTH SPACE is not a letter, digit or _",
            id="zwsp-hashtag",
        ),
        pytest.param(
            {"rules": {"required_hashtags": ["#Copper\x07line"]}},
            "rules.required_hashtags",
            "must look like #word",
            id="control-hashtag",
        ),
    ],
)
def test_loose_types_and_hidden_characters_are_refused_naming_the_field(
    tmp_path: Path, changes: dict[str, Any], field: str, fragment: str
) -> None:
    data = _valid()
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    err = _error_for(_write(tmp_path, data))
    assert err.field == field, err
    assert fragment in err.message, err


def test_what_yaml_writes_for_valid_files_still_loads(tmp_path: Path) -> None:
    text = (PERSONA_DIR / "ember-and-oak-coffee.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    # Whole numbers for amounts, a multi-line voice, an emoji sequence with its joiners, accents.
    data.update(daily_budget_usd=2, voice="Warm and plain.\nNever pushy.\tAlways kind.")
    data["cadence"] = {**data.get("cadence", {}), "posts_per_day": 4, "active_hours": [8, 20]}
    data["example_posts"] = [
        *data["example_posts"],
        "Fresh roast today \U0001f469\u200d\U0001f373 caf\u00e9 open",
    ]
    data["rules"] = {**data.get("rules", {}), "novelty_threshold": 1}
    spec = load_persona_file(_write(tmp_path, data, "ok.yaml"))
    assert spec.daily_budget_usd == 2.0 and spec.cadence.posts_per_day == 4.0
    assert "\u200d" in spec.example_posts[-1]


def test_text_is_normalised_to_nfc() -> None:
    spec = PersonaSpec.model_validate(
        _valid(
            display_name="Cafe\u0301 Ember",
            topics=["cre\u0300me"],
            rules={"required_hashtags": ["#Cafe\u0301"], "max_hashtags": 3},
        )
    )
    assert spec.display_name == "Caf\u00e9 Ember" and spec.topics == ["cr\u00e8me"]
    assert spec.rules.required_hashtags == ["#Caf\u00e9"]


def test_the_schema_states_platform_limits_hours_and_hashtag_bounds() -> None:
    schema = PersonaSpec.model_json_schema()
    defs = schema["$defs"]
    limits = {
        rule["if"]["properties"]["name"]["const"]: rule["then"] for rule in defs["PlatformTarget"]["allOf"]
    }
    assert {name: then["properties"]["max_chars"]["maximum"] for name, then in limits.items()} == {
        p.value: limit for p, limit in PLATFORM_LIMITS.items()
    }
    assert defs["PlatformTarget"]["properties"]["max_chars"]["anyOf"][0]["minimum"] == 40
    hours = defs["Cadence"]["properties"]["active_hours"]["anyOf"]
    assert hours[9] == {"prefixItems": [{"const": 9}, {"minimum": 10, "maximum": 24}]}
    assert "UTC" in defs["Cadence"]["properties"]["timezone"]["enum"]
    assert "pattern" in schema["properties"]["display_name"]
    assert schema["properties"]["topics"]["items"]["pattern"]
