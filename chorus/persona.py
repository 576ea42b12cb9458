"""The persona spec: a brand or voice account, its rules and its budget, loaded from YAML."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chorus.errors import PersonaSpecError
from chorus.inputs import (
    ONLY_INTEGERS,
    ONLY_NUMBERS,
    Hashtag,
    Integer,
    Label,
    Number,
    Prose,
    field_path,
    hashtag_problem,
    nfc,
)
from chorus.settings import Tier


class Platform(StrEnum):
    x = "x"
    bluesky = "bluesky"
    mastodon = "mastodon"
    linkedin = "linkedin"


# Characters a post may hold on each platform (the platforms' own limits).
PLATFORM_LIMITS: dict[Platform, int] = {
    Platform.x: 280,
    Platform.bluesky: 300,
    Platform.mastodon: 500,
    Platform.linkedin: 3000,
}

# A persona id names its Redis keys and its actor, so it is plain lowercase ASCII.
PERSONA_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$"

# Steps that call a model; plan and review are rules and cost nothing.
WORKFLOW_STEPS = ("hook", "body", "rewrite")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PlatformTarget(_Strict):
    # The schema states each platform's cap on max_chars, as _within_platform enforces it.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"name": {"const": platform.value}}},
                    "then": {"properties": {"max_chars": {"maximum": limit}}},
                }
                for platform, limit in PLATFORM_LIMITS.items()
            ]
        }
    )

    name: Platform
    # A persona may write shorter than the platform allows, never longer.
    max_chars: Annotated[int, Field(ge=40), ONLY_INTEGERS] | None = Field(
        None,
        description="at most the platform's own limit: "
        + ", ".join(f"{platform.value} {limit}" for platform, limit in PLATFORM_LIMITS.items()),
    )

    # Posts for an account on this platform wait in the approval inbox unless this is false; a
    # persona with no account on the platform keeps its posts as they are (nothing publishes).
    requires_approval: StrictBool = Field(
        True, description="posts to this platform wait for a person's approval before publishing"
    )

    @field_validator("max_chars")
    @classmethod
    def _within_platform(cls, value: int | None, info: ValidationInfo) -> int | None:
        name = info.data.get("name")
        if value is not None and name is not None and value > PLATFORM_LIMITS[name]:
            raise ValueError(f"max_chars {value} exceeds {name.value}'s limit {PLATFORM_LIMITS[name]}")
        return value

    @model_validator(mode="after")
    def _default_to_platform_limit(self) -> PlatformTarget:
        # Filled in rather than left null, so what the API returns states the limit in force.
        if self.max_chars is None:
            self.max_chars = PLATFORM_LIMITS[self.name]
        return self

    @property
    def limit(self) -> int:
        return self.max_chars or PLATFORM_LIMITS[self.name]


def _timezone_schema(schema: dict[str, Any]) -> None:
    # Read when the schema is built, not at import: listing the zones walks the tz database.
    from zoneinfo import available_timezones

    schema["enum"] = sorted(available_timezones())


class Cadence(_Strict):
    posts_per_day: Number = Field(3.0, gt=0, le=96)
    active_hours: tuple[Integer, Integer] = Field(
        (9, 18),
        description="[start, end) local hours, 0 <= start < end <= 24",
        # What _hours enforces, in the schema: one alternative per start hour.
        json_schema_extra={
            "anyOf": [
                {"prefixItems": [{"const": start}, {"minimum": start + 1, "maximum": 24}]}
                for start in range(24)
            ]
        },
    )
    timezone: str = Field("UTC", json_schema_extra=_timezone_schema)
    # Off by default: a persona posts on its cadence only when asked to, so loading a folder of
    # personas never starts spending on its own.
    autopost: StrictBool = Field(
        False, description="the fleet's scheduler generates this persona's posts on this cadence"
    )

    @field_validator("active_hours")
    @classmethod
    def _hours(cls, value: tuple[int, int]) -> tuple[int, int]:
        start, end = value
        if not (0 <= start <= 23 and 1 <= end <= 24 and start < end):
            raise ValueError("must be [start, end] hours with 0 <= start < end <= 24")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)") from None
        return value


class ModelPolicy(_Strict):
    """Which tier each workflow step uses."""

    hook: Tier = "premium"
    body: Tier = "local"
    # A rewrite follows a failed review: a hard case, so the premium tier by default.
    rewrite: Tier = "premium"

    def tier_for(self, step: str) -> Tier:
        tier: Tier = getattr(self, step)
        return tier


def _hashtag_bounds_schema() -> dict[str, Any]:
    """What _bounds enforces, in the schema: min_hashtags, and the number of required hashtags,
    at most max_hashtags (5 when absent), as one implication per count."""

    most = Rules.model_fields["max_hashtags"].default
    rules: list[dict[str, Any]] = [
        {
            "if": {"required": ["min_hashtags"], "properties": {"min_hashtags": {"minimum": n}}},
            "then": {"properties": {"max_hashtags": {"minimum": n}}},
        }
        for n in range(1, 11)
    ]
    rules += [
        {
            "if": {"required": ["required_hashtags"], "properties": {"required_hashtags": {"minItems": n}}},
            "then": {"properties": {"max_hashtags": {"minimum": n}}},
        }
        for n in range(1, 31)
    ]
    rules.append(
        {
            "if": {"not": {"required": ["max_hashtags"]}},
            "then": {
                "properties": {"min_hashtags": {"maximum": most}, "required_hashtags": {"maxItems": most}}
            },
        }
    )
    return {"allOf": rules}


class Rules(_Strict):
    model_config = ConfigDict(json_schema_extra=lambda schema: schema.update(_hashtag_bounds_schema()))

    required_hashtags: list[Hashtag] = Field(default_factory=list)
    min_hashtags: Integer = Field(0, ge=0, le=10)
    max_hashtags: Integer = Field(5, ge=0, le=30)
    # Posts closer than this (0..1 word-shingle similarity) to a recent post are near-duplicates.
    novelty_threshold: Number = Field(0.6, gt=0, le=1)
    no_cache_steps: list[str] = Field(
        default_factory=list, json_schema_extra={"items": {"enum": list(WORKFLOW_STEPS)}}
    )

    @field_validator("required_hashtags")
    @classmethod
    def _hashtags(cls, value: list[str]) -> list[str]:
        value = [nfc(tag) for tag in value]
        for tag in value:
            problem = hashtag_problem(tag)
            if problem is not None:
                raise ValueError(f"hashtag {tag!r} {problem}")
        return value

    @field_validator("no_cache_steps")
    @classmethod
    def _steps(cls, value: list[str]) -> list[str]:
        for step in value:
            if step not in WORKFLOW_STEPS:
                raise ValueError(f"unknown step {step!r}; steps are {', '.join(WORKFLOW_STEPS)}")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Rules:
        if self.min_hashtags > self.max_hashtags:
            raise ValueError("min_hashtags must not exceed max_hashtags")
        if len(self.required_hashtags) > self.max_hashtags:
            raise ValueError("more required_hashtags than max_hashtags allows")
        return self


class PersonaSpec(_Strict):
    id: str = Field(pattern=PERSONA_ID_PATTERN)
    display_name: Label = Field(min_length=1, max_length=80)
    platforms: list[PlatformTarget] = Field(
        min_length=1,
        # What _unique_platforms enforces: no platform twice.
        json_schema_extra={
            "allOf": [
                {"contains": {"properties": {"name": {"const": p.value}}}, "minContains": 0, "maxContains": 1}
                for p in Platform
            ]
        },
    )
    voice: Prose = Field(min_length=10, max_length=2000)
    tone: list[Prose] = Field(min_length=1)
    audience: Prose = Field(min_length=3, max_length=500)
    topics: list[Prose] = Field(min_length=1)
    banned_words: list[Prose] = Field(default_factory=list)
    banned_topics: list[Prose] = Field(default_factory=list)
    example_posts: list[Prose] = Field(min_length=1)
    cadence: Cadence = Cadence()
    model_policy: ModelPolicy = ModelPolicy()
    rules: Rules = Rules()
    # None: the fleet-wide default from settings (budget.default_daily_usd).
    daily_budget_usd: Annotated[float, Field(ge=0, le=10_000), ONLY_NUMBERS] | None = None

    @field_validator("platforms")
    @classmethod
    def _unique_platforms(cls, value: list[PlatformTarget]) -> list[PlatformTarget]:
        names = [p.name for p in value]
        if len(names) != len(set(names)):
            raise ValueError("each platform may be listed once")
        return value

    @property
    def primary_platform(self) -> PlatformTarget:
        return self.platforms[0]

    def budget_usd(self, default_usd: float) -> float:
        return default_usd if self.daily_budget_usd is None else self.daily_budget_usd

    @property
    def max_chars(self) -> int:
        """The strictest limit among the persona's platforms: one post fits them all."""
        return min(p.limit for p in self.platforms)


# Enough to see every typo in a file, short enough to stay one readable line.
MAX_REPORTED_PROBLEMS = 5


def parse_persona(data: Any, source: str = "<persona>") -> PersonaSpec:
    """Validate already-parsed data; errors name the source and every bad field."""
    if not isinstance(data, dict):
        raise PersonaSpecError(source, "", "a persona spec must be a mapping of fields")
    try:
        return PersonaSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    except RecursionError:
        raise PersonaSpecError(source, "", "nested too deeply to be a persona spec") from None
    # Unknown fields first: a typo (`topcis:`) is the cause of the missing field it leaves behind.
    errors.sort(key=lambda err: err["type"] != "extra_forbidden")
    problems: list[tuple[str, str]] = []
    for err in errors[:MAX_REPORTED_PROBLEMS]:
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (check its spelling against docs/personas.md)"
        problems.append((field_path(err["loc"]), message))
    if len(errors) > MAX_REPORTED_PROBLEMS:
        problems.append(("", f"and {len(errors) - MAX_REPORTED_PROBLEMS} more"))
    field, message = problems[0]
    raise PersonaSpecError(source, field, message, problems)


def load_persona_text(text: str, source: str = "<persona>") -> PersonaSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.composer.ComposerError as exc:
        # PyYAML's "expected a single document in the stream"; `---` starts a second one.
        mark = exc.problem_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise PersonaSpecError(
            source, "", f"{where}a second YAML document ('---'); a persona file holds one persona"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
        raise PersonaSpecError(
            source, "", f"{where}not valid YAML" + (f" ({problem})" if problem else "")
        ) from None
    except RecursionError:
        raise PersonaSpecError(source, "", "nested too deeply to be a persona spec") from None
    return parse_persona(data, source)


def load_persona_file(path: str | Path) -> PersonaSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PersonaSpecError(str(path), "", f"cannot read file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise PersonaSpecError(
            str(path), "", f"not a UTF-8 text file (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    return load_persona_text(text, str(path))


def load_persona_dir(directory: str | Path) -> list[PersonaSpec]:
    """Every ``*.yaml``/``*.yml`` in a folder, sorted by file name; ids must be unique."""
    directory = Path(directory)
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    specs: list[PersonaSpec] = []
    seen: dict[str, Path] = {}
    for path in files:
        spec = load_persona_file(path)
        if spec.id in seen:
            raise PersonaSpecError(str(path), "id", f"duplicate id {spec.id!r}, also in {seen[spec.id]}")
        seen[spec.id] = path
        specs.append(spec)
    return specs
