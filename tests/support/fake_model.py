"""A fake model client for unit tests of the workflow: scripted answers, every call recorded.

Graph nodes only see the `ModelClient` protocol through their runtime context, so a test hands
them this fake instead of the router: no llama.cpp, no Ray, no Redis, and answers chosen to
exercise one path (a hook with a second sentence, a draft that breaks a rule, a clean rewrite).
The real model stays in the integration tests (tests that use the `local_tier` fixture).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from chorus.llm.types import LLMResult, ModelRequest, SpendGuard

FAKE_MODEL = "fake-model"


@dataclass(frozen=True)
class FakeCall:
    """One call the fake answered: the request a node built and the spend guard it passed."""

    request: ModelRequest
    guard: SpendGuard | None

    @property
    def step(self) -> str:
        return self.request.step

    @property
    def prompt(self) -> str:
        """The messages' contents as one text, for asserting on what the prompt says."""
        return "\n".join(m["content"] for m in self.request.messages)


@dataclass
class FakeModelClient:
    """A `ModelClient` answering each step from a script.

    `script` maps a step to its answer, or to a list of answers given in turn (the last one
    repeats once the list runs out). A step with no script fails the test: a node calling a step
    the test did not expect is a finding, not something to paper over. `errors` maps a step to
    the exception its calls raise (a budget stop, every tier down). Each answer costs
    `cost_per_call_usd` and counts a token a word, so node records carry figures a test can check.
    """

    script: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    errors: Mapping[str, BaseException] = field(default_factory=dict)
    cost_per_call_usd: float = 0.001
    calls: list[FakeCall] = field(default_factory=list)

    def steps(self) -> list[str]:
        """The steps called so far, in call order."""
        return [call.step for call in self.calls]

    def calls_of(self, step: str) -> list[FakeCall]:
        return [call for call in self.calls if call.step == step]

    def _answer(self, step: str) -> str:
        if step not in self.script:
            raise AssertionError(f"FakeModelClient has no scripted answer for step {step!r}")
        answers = self.script[step]
        if isinstance(answers, str):
            return answers
        if not answers:
            raise AssertionError(f"FakeModelClient's script for step {step!r} is empty")
        done = len(self.calls_of(step)) - 1  # this call is already recorded
        return answers[min(done, len(answers) - 1)]

    async def complete(self, request: ModelRequest, guard: SpendGuard | None = None) -> LLMResult:
        self.calls.append(FakeCall(request=request, guard=guard))
        if request.step in self.errors:
            raise self.errors[request.step]
        text = self._answer(request.step)
        prompt_words = sum(len(m["content"].split()) for m in request.messages)
        return LLMResult(
            step=request.step,
            text=text,
            prompt_tokens=prompt_words,
            completion_tokens=len(text.split()),
            cost_usd=self.cost_per_call_usd,
            latency_s=0.0,
            tier_requested=request.tier,
            tier_used=request.tier,
            model=FAKE_MODEL,
            cache_hit=False,
            attempts=1,
        )
