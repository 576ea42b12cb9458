"""Persona factories: a real example persona under a fresh id, changed only where a test says."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

from chorus.persona import PersonaSpec

EXAMPLE_PERSONA = Path(__file__).resolve().parents[2] / "personas" / "ember-and-oak-coffee.yaml"


def make_persona(persona_id: str, **changes: Any) -> PersonaSpec:
    """A real example persona under another id, with field changes for the test at hand."""
    data = yaml.safe_load(EXAMPLE_PERSONA.read_text())
    data.update(id=persona_id, **changes)
    return PersonaSpec.model_validate(data)


def unique_id(prefix: str) -> str:
    """An id no other test (or earlier run against the same Redis) has used."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# Field changes several tests make: every step uncached (each job makes real model calls), and
# every step on the local tier.
NO_CACHE = {"required_hashtags": ["#EmberAndOak"], "no_cache_steps": ["hook", "body", "rewrite"]}
ALL_LOCAL = {"hook": "local", "body": "local", "rewrite": "local"}
