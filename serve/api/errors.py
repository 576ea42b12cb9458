"""Every failure of the HTTP API as ``{"error": {"code", "message", "field"}}`` with a stable code.

| status | code                 | when                                                          |
|--------|----------------------|---------------------------------------------------------------|
| 400    | bad_request          | a body FastAPI cannot read at all (e.g. a broken form)        |
| 401    | missing_key          | no ``Authorization: Bearer <key>`` header                     |
| 401    | invalid_key          | the key is malformed, unknown or revoked                      |
| 402    | budget_exceeded      | the budget cannot hold the next model call (details:          |
|        |                      | spent_usd, budget_usd, next_call_usd, resets_at)              |
| 403    | forbidden            | the key's role may not do this (e.g. an editor setting a      |
|        |                      | daily budget above ``budget.editor_ceiling_usd``)             |
| 404    | persona_not_found    | no persona with that id (or the id cannot be one)             |
|        |                      | restore: no deleted persona kept under that id                |
| 404    | job_not_found        | no job with that id (or the id cannot be one)                 |
| 404    | key_not_found        | no API key with that id (or the id cannot be one)             |
| 404    | post_not_found       | no post with that id (or the id cannot be one)                |
| 404    | not_found            | no such route                                                 |
| 405    | method_not_allowed   | the route exists, the method does not                         |
| 409    | persona_exists       | creating a persona whose id is taken (update it with PUT)     |
|        |                      | or restoring one whose id is taken again                      |
| 409    | last_admin_key       | revoking the last live admin key (create another one first)   |
| 409    | illegal_transition   | a post asked to move where its state does not lead (details:  |
|        |                      | current, target, allowed)                                     |
| 409    | account_exists       | a second account of a persona on one platform                 |
| 404    | account_not_found    | the persona has no account on that platform                   |
| 422    | invalid_account      | a wrong service URL, a malformed handle, an unsupported       |
|        |                      | platform, a login the platform refused (``field`` names it)   |
| 422    | edit_breaks_rules    | an approver's edited text fails the persona's rules (details: |
|        |                      | problems)                                                     |
| 503    | invalid_settings     | the server lacks a setting this needs (the credentials key)   |
| 413    | body_too_large       | the body is over ``api.max_body_bytes``                       |
| 422    | invalid_json         | the body is not a JSON object (or not UTF-8 text)             |
| 422    | unknown_field        | a field the model does not have                               |
| 422    | invalid_field        | a field with a wrong type or value (``field`` names it)       |
| 500    | internal_error       | a bug; the client gets this line, the log gets the traceback  |
| 503    | overloaded           | too many queued jobs or waiting requests; see ``Retry-After`` |
| 503    | unavailable          | Redis does not answer; see ``Retry-After``                    |
| 503    | not_ready            | ``/readyz``: a dependency is down (details: each check)       |

Every refusal happens before anything is written, so a refused request changes no stored data.
The key is checked before the body is read: without a valid key, every route but the health
checks and the docs answers 401, whatever the body.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chorus.errors import (
    AccountExists,
    BudgetExceeded,
    ChorusError,
    EditBreaksRules,
    IllegalTransition,
    InvalidAccount,
    LastAdminKey,
    NothingToRestore,
    PersonaExists,
    PlatformNotUsed,
    SettingsError,
    UnknownAccount,
    UnknownJob,
    UnknownPersona,
    UnknownPost,
)
from chorus.inputs import field_path
from chorus.models import budget_exceeded_message, budget_resets_at
from serve.api.protocol import ErrorBody, ErrorResponse

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(code=code, message=message, field=field, details=details)
        self.headers = headers


def _encode(body: ErrorBody) -> bytes:
    content = ErrorResponse(error=body).model_dump()
    if body.details is None:
        del content["error"]["details"]
    return json.dumps(content).encode()


def error_response(exc: ApiError) -> Response:
    return Response(_encode(exc.body), exc.status, headers=exc.headers, media_type="application/json")


def budget_error(exc: BudgetExceeded) -> ApiError:
    # The same line a job stopped by its budget stores, money in significant digits.
    return ApiError(
        402,
        "budget_exceeded",
        budget_exceeded_message(exc),
        details={
            "persona_id": exc.persona_id,
            "spent_usd": exc.spent_usd,
            "budget_usd": exc.budget_usd,
            "next_call_usd": exc.needed_usd,
            "resets_at": budget_resets_at().isoformat(),
        },
    )


# Domain errors (chorus.errors) by class: the status each answers with. The wire code is the
# class's own `code` and the field its `field`, so a route raises the domain error and never
# translates it. A ChorusError not listed here is a bug: 500 internal_error.
DOMAIN_STATUSES: dict[type[ChorusError], int] = {
    BudgetExceeded: 402,
    UnknownPersona: 404,
    NothingToRestore: 404,
    UnknownJob: 404,
    PersonaExists: 409,
    LastAdminKey: 409,
    PlatformNotUsed: 422,
    UnknownPost: 404,
    UnknownAccount: 404,
    IllegalTransition: 409,
    AccountExists: 409,
    InvalidAccount: 422,
    EditBreaksRules: 422,
    # A server-side setting is missing (no credentials key): not the client's request at fault.
    SettingsError: 503,
}


def domain_error(exc: ChorusError) -> ApiError:
    """The API's answer to a domain error, from DOMAIN_STATUSES (KeyError when unlisted)."""
    if isinstance(exc, BudgetExceeded):
        return budget_error(exc)
    status = next(DOMAIN_STATUSES[c] for c in type(exc).__mro__ if c in DOMAIN_STATUSES)
    message = f"{exc.field}: {exc}" if exc.field else str(exc)
    details: dict[str, Any] | None = None
    if isinstance(exc, IllegalTransition):
        details = {"current": exc.current, "target": exc.target, "allowed": exc.allowed}
    elif isinstance(exc, EditBreaksRules):
        details = {"problems": exc.problems}
    return ApiError(status, exc.code.value, message, field=exc.field, details=details)


def redis_unavailable(exc: Exception) -> ApiError:
    log.error("Redis unavailable: %r", exc)
    return ApiError(
        503, "unavailable", "the data store is unavailable; retry shortly", headers={"Retry-After": "5"}
    )


# An id in the path that does not match its pattern names nothing: the resource's 404.
_PATH_IDS = {
    "persona_id": ("persona_not_found", "persona"),
    "job_id": ("job_not_found", "job"),
    "key_id": ("key_not_found", "API key"),
    "post_id": ("post_not_found", "post"),
}
# What a value matching each pattern is, in words a client can act on.
_PATTERN_HINTS = {
    "cursor": "not a cursor from a previous page (use next_cursor as it was given)",
    "last-event-id": "not an event id from this stream",
    "persona": "not a persona id (lowercase letters, digits and '-')",
}


def _validation_error(exc: RequestValidationError) -> ApiError:
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    where = loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc
    if first["type"] == "string_pattern_mismatch" and len(loc) == 2:
        name = str(loc[1])
        if loc[0] == "path" and name in _PATH_IDS:
            code, kind = _PATH_IDS[name]
            pattern = (first.get("ctx") or {}).get("pattern", "")
            return ApiError(404, code, f"{kind} {first['input']!r} does not exist (ids match {pattern})")
        if name in _PATTERN_HINTS:
            shown = "Last-Event-ID" if name == "last-event-id" else name
            return ApiError(422, "invalid_field", f"{shown}: {_PATTERN_HINTS[name]}", field=shown)
    if first["type"] == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        return ApiError(422, "invalid_json", f"the request body is not valid JSON: {reason}")
    if loc == ("body",) and first["type"] in ("model_attributes_type", "dict_type"):
        return ApiError(
            422,
            "invalid_json",
            "the request body must be a JSON object, sent as Content-Type: application/json",
        )
    field = field_path(where) or None
    if first["type"] == "extra_forbidden":
        return ApiError(422, "unknown_field", f"{field}: unknown field", field=field)
    message = str(first["msg"]).removeprefix("Value error, ")
    if field is None and loc[:1] == ("body",) and first["type"] == "missing":
        message = "a JSON request body is required"
    return ApiError(422, "invalid_field", f"{field}: {message}" if field else message, field=field)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


def _leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes of the app and of every router it includes (newer FastAPI nests the latter).

    Chorus's routers carry their prefix themselves and are included without one, so each leaf
    route matches the request's full path.
    """
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from _leaf_routes(included.routes) if included is not None else (route,)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in _leaf_routes(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def invalid_request(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(_validation_error(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI's own 400 for a body it cannot decode: to the client, a body that is not JSON.
            return error_response(
                ApiError(422, "invalid_json", "the request body is not valid JSON: it is not UTF-8 text")
            )
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code in (404, 405):
            message = f"{message}: {request.method} {request.url.path}"
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path; a path is
            # often several routes (GET and POST /v1/personas): name every method it takes.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(ApiError(exc.status_code, code, message, headers=headers))

    async def chorus_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ChorusError)
        return error_response(domain_error(exc))

    async def redis_down(_: Request, exc: Exception) -> Response:
        return error_response(redis_unavailable(exc))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RedisConnectionError, redis_down)
    app.add_exception_handler(RedisTimeoutError, redis_down)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for error_class in DOMAIN_STATUSES:
        app.add_exception_handler(error_class, chorus_error)


class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """Refuses oversized bodies before anything parses them, and keeps tracebacks from clients.

    Pure ASGI rather than Starlette's BaseHTTPMiddleware: that one buffers streaming responses
    (the event streams) and costs a task per request on the hot control routes.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    def _too_large(self) -> ApiError:
        return ApiError(413, "body_too_large", f"the request body is over the {self.limit}-byte limit")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await self.send_error(send, self._too_large())
                return
        received = 0
        too_large = started = False

        async def limited_receive() -> Message:
            # Chunked bodies carry no length up front: count them as they arrive.
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                return  # whatever the app answers to a truncated body, the client gets 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                incident = uuid.uuid4().hex[:12]
                log.exception(
                    "unhandled error in %s %s (incident %s)", scope["method"], scope["path"], incident
                )
                if not started:
                    await self.send_error(
                        send,
                        ApiError(
                            500, "internal_error", f"internal error (incident {incident}); see the server log"
                        ),
                    )
                return
        if too_large and not started:
            await self.send_error(send, self._too_large())

    @staticmethod
    async def send_error(send: Send, exc: ApiError) -> None:
        body = _encode(exc.body)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
