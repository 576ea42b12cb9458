"""Failures of the local tier that are the client's doing, each with its HTTP status.

Only these become 4xx answers, in OpenAI's error shape; any other exception is a bug and a 500,
not a client error.
"""

from __future__ import annotations


class LocalTierError(Exception):
    """A request the tier refuses; `status` and `kind` are its HTTP status and OpenAI error type."""

    status = 400
    kind = "invalid_request_error"
    param: str | None = None


class ModelNotServed(LocalTierError):
    """The request names a model this tier does not serve."""

    # 400, as the tier has always answered (OpenAI and vLLM say 404 for an unknown model).

    def __init__(self, requested: str, served: str) -> None:
        super().__init__(f"model {requested!r} is not served here; use {served!r}")
        self.requested, self.served = requested, served


class PromptTooLong(LocalTierError):
    """The prompt leaves no room in the model's context for a single generated token."""

    def __init__(self, prompt_tokens: int, context_tokens: int) -> None:
        super().__init__(
            f"prompt is {prompt_tokens} tokens; this model's context holds "
            f"{context_tokens} (shorten the prompt)"
        )
        self.prompt_tokens, self.context_tokens = prompt_tokens, context_tokens
