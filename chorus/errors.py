"""Every domain error of Chorus, in one place, with a stable code.

Shaped like LangGraph's ``errors.py``: one base class (`ChorusError`) and an `ErrorCode` enum, so
callers catch one type, programs read a code that never changes with the wording, and the HTTP
API maps each class to its status in one table (``serve/api/errors.py``) instead of one
``try``/``except`` per route. The code of each class is the API's wire code where the API
answers it. Errors keep the builtin base they had (``ValueError`` for a bad spec or setting,
``RuntimeError`` for failed tiers), so code that caught those still does.

This module imports nothing else of Chorus: every layer may raise these.
"""

from __future__ import annotations

from enum import StrEnum
from functools import partial
from typing import Any, ClassVar, Self


class ErrorCode(StrEnum):
    """Stable codes: programs (and the API's clients) read these, people read the message."""

    PERSONA_NOT_FOUND = "persona_not_found"
    PERSONA_EXISTS = "persona_exists"
    JOB_NOT_FOUND = "job_not_found"
    INVALID_FIELD = "invalid_field"
    INVALID_PERSONA_SPEC = "invalid_persona_spec"
    INVALID_SETTINGS = "invalid_settings"
    INVALID_KEY = "invalid_key"
    LAST_ADMIN_KEY = "last_admin_key"
    BUDGET_EXCEEDED = "budget_exceeded"
    TIERS_UNAVAILABLE = "tiers_unavailable"
    POST_NOT_FOUND = "post_not_found"
    ILLEGAL_TRANSITION = "illegal_transition"
    ACCOUNT_NOT_FOUND = "account_not_found"
    ACCOUNT_EXISTS = "account_exists"
    INVALID_ACCOUNT = "invalid_account"
    EDIT_BREAKS_RULES = "edit_breaks_rules"


class ChorusError(Exception):
    """The base of every domain error. `code` is stable; `field`, when set, names the input at
    fault (the API puts it in the error body)."""

    code: ClassVar[ErrorCode]
    field: str | None = None
    _init_args: tuple[Any, ...]
    _init_kwargs: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        error = super().__new__(cls, *args)
        error._init_args, error._init_kwargs = args, kwargs
        return error

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (the gateway's BudgetExceeded reaches a persona actor):
        # rebuilt from the arguments they were made with, their fields arrive intact.
        return (partial(type(self), **self._init_kwargs), self._init_args)


class NotFound(ChorusError, LookupError):
    """Something named by id does not exist (instead of a bare ``KeyError``)."""


class UnknownPersona(NotFound):
    code = ErrorCode.PERSONA_NOT_FOUND

    def __init__(self, persona_id: str) -> None:
        super().__init__(f"persona {persona_id!r} does not exist")
        self.persona_id = persona_id


class NothingToRestore(NotFound):
    """No deleted persona is kept under the id (never deleted, or past its retention)."""

    code = ErrorCode.PERSONA_NOT_FOUND

    def __init__(self, persona_id: str, retention_days: float) -> None:
        super().__init__(
            f"no deleted persona {persona_id!r} to restore "
            f"(deleted personas are kept {retention_days:g} days)"
        )
        self.persona_id = persona_id
        self.retention_days = retention_days


class UnknownJob(NotFound):
    code = ErrorCode.JOB_NOT_FOUND

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist")
        self.job_id = job_id


class PersonaExists(ChorusError, ValueError):
    """Restoring a deleted persona whose id another persona holds again."""

    code = ErrorCode.PERSONA_EXISTS

    def __init__(self, persona_id: str) -> None:
        super().__init__(f"persona {persona_id!r} exists again; delete it first to restore the deleted one")
        self.persona_id = persona_id


class PlatformNotUsed(ChorusError, ValueError):
    """An engagement report for a platform the persona does not post to."""

    code = ErrorCode.INVALID_FIELD
    field = "platform"

    def __init__(self, persona_id: str, platform: str, platforms: list[str]) -> None:
        super().__init__(
            f"persona {persona_id!r} does not post to {platform}; its platforms are {', '.join(platforms)}"
        )
        self.persona_id, self.platform, self.platforms = persona_id, platform, platforms


class PersonaSpecError(ChorusError, ValueError):
    """An invalid persona spec; names the source, the field and what is wrong.

    `field` and `message` are the first problem; `problems` holds every one, as (field, message),
    so a misspelt field is reported next to the required field it fails to provide.
    """

    code = ErrorCode.INVALID_PERSONA_SPEC

    def __init__(
        self, source: str, field: str, message: str, problems: list[tuple[str, str]] | None = None
    ) -> None:
        self.source = source
        self.field = field
        self.message = message
        self.problems = problems or [(field, message)]
        text = "; ".join(f"{f}: {m}" if f else m for f, m in self.problems)
        super().__init__(f"{source}: {text}")


class SettingsError(ChorusError, ValueError):
    """A setting is invalid; the message names it and says what is wrong."""

    code = ErrorCode.INVALID_SETTINGS


class InvalidKey(ChorusError):
    """The key is malformed, unknown or revoked. Unknown and revoked read the same, so a caller
    cannot learn whether a key it guessed or found once existed."""

    code = ErrorCode.INVALID_KEY


class LastAdminKey(ChorusError):
    """Revoking this key would leave no admin key, and with it no way to manage keys."""

    code = ErrorCode.LAST_ADMIN_KEY


class BudgetExceeded(ChorusError):
    """The persona's daily budget cannot hold the next model call's worst case."""

    code = ErrorCode.BUDGET_EXCEEDED

    def __init__(self, persona_id: str, spent_usd: float, budget_usd: float, needed_usd: float):
        self.persona_id = persona_id
        self.spent_usd = spent_usd
        self.budget_usd = budget_usd
        self.needed_usd = needed_usd
        super().__init__(
            f"persona {persona_id!r} has spent ${spent_usd:.6f} of its ${budget_usd:.6f} daily "
            f"budget; the next call could cost up to ${needed_usd:.6f}"
        )


class TiersUnavailable(ChorusError, RuntimeError):
    """Every tier in the chain failed; the message lists why each one did."""

    code = ErrorCode.TIERS_UNAVAILABLE


class UnknownPost(NotFound):
    code = ErrorCode.POST_NOT_FOUND

    def __init__(self, post_id: str) -> None:
        super().__init__(f"post {post_id!r} does not exist")
        self.post_id = post_id


class IllegalTransition(ChorusError):
    """A post asked to move where its state does not lead (HTTP 409): names the state it is in
    and the moves it allows."""

    code = ErrorCode.ILLEGAL_TRANSITION

    def __init__(self, post_id: str, current: str, target: str, allowed: list[str]) -> None:
        moves = ", ".join(allowed) if allowed else "none (it is final)"
        super().__init__(f"post {post_id!r} is {current}; it cannot become {target}. Allowed moves: {moves}")
        self.post_id, self.current, self.target, self.allowed = post_id, current, target, allowed


class UnknownAccount(NotFound):
    code = ErrorCode.ACCOUNT_NOT_FOUND

    def __init__(self, persona_id: str, platform: str) -> None:
        super().__init__(f"persona {persona_id!r} has no {platform} account")
        self.persona_id, self.platform = persona_id, platform


class AccountExists(ChorusError, ValueError):
    code = ErrorCode.ACCOUNT_EXISTS

    def __init__(self, persona_id: str, platform: str) -> None:
        super().__init__(
            f"persona {persona_id!r} already has a {platform} account; remove it first to replace it"
        )
        self.persona_id, self.platform = persona_id, platform


class InvalidAccount(ChorusError, ValueError):
    """An account that cannot be used as given: a wrong service URL, a malformed handle, a login
    the platform refused. `field` names the input at fault."""

    code = ErrorCode.INVALID_ACCOUNT

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class EditBreaksRules(ChorusError, ValueError):
    """An approver's edited text fails the persona's rules; `problems` lists each one."""

    code = ErrorCode.EDIT_BREAKS_RULES
    field = "text"

    def __init__(self, post_id: str, problems: list[str]) -> None:
        super().__init__(
            f"the edited text of post {post_id!r} breaks the persona's rules: " + "; ".join(problems)
        )
        self.post_id, self.problems = post_id, problems
