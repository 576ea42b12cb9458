"""The llama.cpp local tier on Ray Serve, through the official `openai` client over real HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import TEST_MODEL

PROMPT = (
    "Social media posts by a coffee roaster.\n\n"
    "Post: New beans from Guji today: blueberry and jasmine. #coffee\n###\n"
    "Post: Cold brew is back on tap. Come early. #coffee\n###\n"
    "Post:"
)


@pytest.fixture(scope="module")
def client(local_tier: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=local_tier, api_key="unused", max_retries=0)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [TEST_MODEL]


def test_completion_has_text_and_exact_usage(client: openai.OpenAI, local_tier: str) -> None:
    out = client.completions.create(
        model=TEST_MODEL, prompt=PROMPT, max_tokens=24, temperature=0, stop=["###"]
    )
    assert out.choices[0].text.strip()
    assert out.usage is not None
    # The prompt's token count is the tokenizer's, checked against a one-token-longer prompt.
    longer = client.completions.create(model=TEST_MODEL, prompt=PROMPT + " New", max_tokens=1)
    assert longer.usage is not None
    assert longer.usage.prompt_tokens == out.usage.prompt_tokens + 1
    assert 1 <= out.usage.completion_tokens <= 24
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_max_tokens_bounds_the_completion(client: openai.OpenAI) -> None:
    out = client.completions.create(model=TEST_MODEL, prompt="Once upon a time", max_tokens=5, temperature=0)
    assert out.usage is not None
    assert out.usage.completion_tokens == 5
    assert out.choices[0].finish_reason == "length"


def test_chat_completion(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=TEST_MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=32,
        temperature=0,
        stop=["###"],
    )
    assert out.choices[0].message.role == "assistant"
    assert (out.choices[0].message.content or "").strip()
    assert out.usage is not None and out.usage.completion_tokens >= 1


def test_chat_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    kwargs = dict(
        model=TEST_MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=24,
        temperature=0,
        stop=["###"],
    )
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    stream = client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs)  # type: ignore[call-overload]
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert len([p for p in pieces if p]) > 1, "the answer should arrive in several events"
    assert "".join(pieces) == whole.choices[0].message.content
    assert usage is not None and whole.usage is not None
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert finish == whole.choices[0].finish_reason


def test_completion_streaming(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model=TEST_MODEL, prompt=PROMPT, max_tokens=12, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    assert text.strip()


def test_unknown_model_is_a_clear_400(local_tier: str) -> None:
    response = httpx.post(
        f"{local_tier}/chat/completions",
        json={"model": "gpt-nope", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 400
    assert "gpt-nope" in response.json()["error"]["message"]


def test_invalid_request_names_the_field(local_tier: str) -> None:
    response = httpx.post(
        f"{local_tier}/chat/completions",
        json={"model": TEST_MODEL, "messages": [], "max_tokens": 5},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


def test_prompt_longer_than_context_is_refused(local_tier: str) -> None:
    response = httpx.post(
        f"{local_tier}/completions",
        json={"model": TEST_MODEL, "prompt": "word " * 5000, "max_tokens": 5},
        timeout=60,
    )
    assert response.status_code == 400
    assert "context" in response.json()["error"]["message"]
