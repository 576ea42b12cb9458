"""The local tier's refusals are typed: only they become 4xx answers; any other error is a 500."""

from __future__ import annotations

import json

from serve.llm.errors import LocalTierError, ModelNotServed, PromptTooLong
from serve.llm.server import api


async def _answer(exc: Exception) -> tuple[int, dict[str, object]]:
    handler = api.exception_handlers[LocalTierError]
    response = await handler(None, exc)  # type: ignore[arg-type]
    return response.status_code, json.loads(bytes(response.body))["error"]


async def test_an_unknown_model_and_a_long_prompt_are_client_errors() -> None:
    status, error = await _answer(ModelNotServed("gpt-nope", "gemma"))
    assert status == 400 and "gpt-nope" in str(error["message"])
    status, error = await _answer(PromptTooLong(5000, 2048))
    assert status == 400 and "context" in str(error["message"])
    assert error["type"] == "invalid_request_error"


def test_a_bare_value_error_is_not_mapped_to_a_client_error() -> None:
    assert ValueError not in api.exception_handlers
    assert not issubclass(ValueError, LocalTierError)
