"""The contract between the local tier's server and a model engine (as Ray Serve LLM's
`core/engine/protocol.py` is): what a generation asks for, what it returns, and what an engine does.

The server (`server.py`) is handed an engine and knows nothing of the backend; a new backend is one
file under `engines/` that satisfies `LocalEngine`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class EngineOutput:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class LocalEngine(Protocol):
    """A model the local tier serves. Raises `serve.llm.errors.PromptTooLong` for a prompt that
    does not fit its context; anything else it raises is a bug."""

    model_name: str

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as the model reads a prompt."""
        ...

    def render_chat(self, messages: Sequence[tuple[str, str]]) -> str:
        """Chat messages (role, content) as the prompt this model continues."""
        ...

    async def complete(self, prompt: str, params: SamplingParams) -> EngineOutput:
        """The whole generation at once."""
        ...

    def stream(self, prompt: str, params: SamplingParams) -> AsyncIterator[str | EngineOutput]:
        """Text pieces as they are decoded, then one EngineOutput with the usage."""
        ...
