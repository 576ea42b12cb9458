"""chorus.errors: one base, stable codes, errors that cross processes intact, and the API's table
that maps each class to its status and wire code. Fast tests: no Redis, no Ray."""

from __future__ import annotations

import pickle

import pytest

from chorus.errors import (
    BudgetExceeded,
    ChorusError,
    ErrorCode,
    InvalidKey,
    LastAdminKey,
    NotFound,
    NothingToRestore,
    PersonaExists,
    PersonaSpecError,
    PlatformNotUsed,
    SettingsError,
    TiersUnavailable,
    UnknownJob,
    UnknownPersona,
)
from chorus.settings import load_settings
from serve.api.errors import domain_error

EXAMPLES: list[ChorusError] = [
    UnknownPersona("ember"),
    NothingToRestore("ember", 30),
    UnknownJob("job_abc"),
    PersonaExists("ember"),
    PlatformNotUsed("ember", "tiktok", ["x", "linkedin"]),
    PersonaSpecError("ember.yaml", "tone", "field required"),
    SettingsError("invalid settings: setting 'serve.port'"),
    InvalidKey("malformed API key"),
    LastAdminKey("API key 'a1' is the last admin key"),
    BudgetExceeded("ember", 0.9, 1.0, 0.2),
    TiersUnavailable("step hook: every tier failed"),
]


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_error_has_a_code_and_survives_a_process_boundary(error: ChorusError) -> None:
    assert isinstance(error.code, ErrorCode)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_not_found_errors_are_typed_not_bare_key_errors() -> None:
    for error in (UnknownPersona("p"), NothingToRestore("p", 1), UnknownJob("job_x")):
        assert isinstance(error, NotFound)
        assert not isinstance(error, KeyError)
    assert str(UnknownPersona("p")) == "persona 'p' does not exist"


@pytest.mark.parametrize(
    ("error", "status", "code", "field"),
    [
        (UnknownPersona("ember"), 404, "persona_not_found", None),
        (NothingToRestore("ember", 30), 404, "persona_not_found", None),
        (UnknownJob("job_abc"), 404, "job_not_found", None),
        (PersonaExists("ember"), 409, "persona_exists", None),
        (LastAdminKey("last"), 409, "last_admin_key", None),
        (PlatformNotUsed("ember", "tiktok", ["x"]), 422, "invalid_field", "platform"),
        (BudgetExceeded("ember", 0.9, 1.0, 0.2), 402, "budget_exceeded", None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, ChorusError) else None,
)
def test_the_api_maps_each_class_to_its_status_and_wire_code(
    error: ChorusError, status: int, code: str, field: str | None
) -> None:
    answer = domain_error(error)
    assert (answer.status, answer.body.code, answer.body.field) == (status, code, field)
    if field is not None:
        assert answer.body.message == f"{field}: {error}"


def test_an_event_read_must_block_less_than_the_socket_timeout() -> None:
    with pytest.raises(SettingsError, match=r"store\.events_block_ms.*redis\.socket_timeout_s"):
        load_settings(store={"events_block_ms": 30_000}, redis={"socket_timeout_s": 30})
