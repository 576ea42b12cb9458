"""The persona spec: a brand or voice account, its rules and its budget, loaded from YAML."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
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

# Steps that call a model; plan and review are rules and cost nothing.
WORKFLOW_STEPS = ("hook", "body", "rewrite")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PlatformTarget(_Strict):
    name: Platform
    # A persona may write shorter than the platform allows, never longer.
    max_chars: int | None = Field(None, ge=40)

    @field_validator("max_chars")
    @classmethod
    def _within_platform(cls, value: int | None, info: ValidationInfo) -> int | None:
        name = info.data.get("name")
        if value is not None and name is not None and value > PLATFORM_LIMITS[name]:
            raise ValueError(f"max_chars {value} exceeds {name.value}'s limit {PLATFORM_LIMITS[name]}")
        return value

    @property
    def limit(self) -> int:
        return self.max_chars or PLATFORM_LIMITS[self.name]


class Cadence(_Strict):
    posts_per_day: float = Field(3.0, gt=0, le=96)
    active_hours: tuple[int, int] = (9, 18)
    timezone: str = "UTC"
    # Off by default: a persona posts on its cadence only when asked to, so loading a folder of
    # personas never starts spending on its own.
    autopost: bool = Field(
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


class Rules(_Strict):
    required_hashtags: list[str] = Field(default_factory=list)
    min_hashtags: int = Field(0, ge=0, le=10)
    max_hashtags: int = Field(5, ge=0, le=30)
    # Posts closer than this (0..1 word-shingle similarity) to a recent post are near-duplicates.
    novelty_threshold: float = Field(0.6, gt=0, le=1)
    no_cache_steps: list[str] = Field(default_factory=list)

    @field_validator("required_hashtags")
    @classmethod
    def _hashtags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not tag.startswith("#") or len(tag) < 2 or " " in tag:
                raise ValueError(f"hashtag {tag!r} must look like #word")
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
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$")
    display_name: str = Field(min_length=1, max_length=80)
    platforms: list[PlatformTarget] = Field(min_length=1)
    voice: str = Field(min_length=10, max_length=2000)
    tone: list[str] = Field(min_length=1)
    audience: str = Field(min_length=3, max_length=500)
    topics: list[str] = Field(min_length=1)
    banned_words: list[str] = Field(default_factory=list)
    banned_topics: list[str] = Field(default_factory=list)
    example_posts: list[str] = Field(min_length=1)
    cadence: Cadence = Cadence()
    model_policy: ModelPolicy = ModelPolicy()
    rules: Rules = Rules()
    # None: the fleet-wide default from settings (budget.default_daily_usd).
    daily_budget_usd: float | None = Field(None, ge=0, le=10_000)

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


class PersonaSpecError(ValueError):
    """An invalid persona spec; names the source, the field and what is wrong."""

    def __init__(self, source: str, field: str, message: str) -> None:
        self.source = source
        self.field = field
        self.message = message
        super().__init__(f"{source}: {field}: {message}" if field else f"{source}: {message}")


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_persona(data: Any, source: str = "<persona>") -> PersonaSpec:
    """Validate already-parsed data; errors name the source and the first bad field."""
    if not isinstance(data, dict):
        raise PersonaSpecError(source, "", "a persona spec must be a mapping of fields")
    try:
        return PersonaSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (check its spelling against docs/personas.md)"
        raise PersonaSpecError(source, _field_path(err["loc"]), message) from None


def load_persona_text(text: str, source: str = "<persona>") -> PersonaSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise PersonaSpecError(source, "", f"{where}not valid YAML") from None
    return parse_persona(data, source)


def load_persona_file(path: str | Path) -> PersonaSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PersonaSpecError(str(path), "", f"cannot read file: {exc.strerror}") from None
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
