"""The llama.cpp local tier on Ray Serve, through the official `openai` client over real HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest

from chorus.settings import Settings
from tests.support.api import create_key
from tests.support.tiers import SERVICE_KEY, TEST_MODEL

PROMPT = (
    "Social media posts by a coffee roaster.\n\n"
    "Post: New beans from Guji today: blueberry and jasmine. #coffee\n###\n"
    "Post: Cold brew is back on tap. Come early. #coffee\n###\n"
    "Post:"
)


@pytest.fixture(scope="module")
def client(local_tier: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=local_tier, api_key=SERVICE_KEY, max_retries=0)


SERVICE = {"Authorization": f"Bearer {SERVICE_KEY}"}


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
        headers=SERVICE,
        timeout=30,
    )
    assert response.status_code == 400
    assert "gpt-nope" in response.json()["error"]["message"]


def test_invalid_request_names_the_field(local_tier: str) -> None:
    response = httpx.post(
        f"{local_tier}/chat/completions",
        json={"model": TEST_MODEL, "messages": [], "max_tokens": 5},
        headers=SERVICE,
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


def test_prompt_longer_than_context_is_refused(local_tier: str) -> None:
    response = httpx.post(
        f"{local_tier}/completions",
        json={"model": TEST_MODEL, "prompt": "word " * 5000, "max_tokens": 5},
        headers=SERVICE,
        timeout=60,
    )
    assert response.status_code == 400
    assert "context" in response.json()["error"]["message"]


async def test_completions_need_the_service_key(local_tier: str, settings: Settings) -> None:
    """Model use outside the gateway would escape keys, budgets and metrics: refused."""
    body = {"model": TEST_MODEL, "prompt": PROMPT, "max_tokens": 2}
    chat = {"model": TEST_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    viewer = await create_key(settings, "viewer")
    async with httpx.AsyncClient(base_url=local_tier, timeout=60) as http:
        for route, payload in (("/completions", body), ("/chat/completions", chat)):
            missing = await http.post(route, json=payload)
            assert missing.status_code == 401, missing.text
            assert missing.headers["www-authenticate"] == "Bearer"
            assert missing.json()["error"]["code"] == "missing_key"
            assert "Authorization: Bearer" in missing.json()["error"]["message"]
            wrong = await http.post(route, json=payload, headers={"Authorization": "Bearer not-the-key"})
            assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_key"
            # A valid Chorus API key is still not the service key: its calls would skip budgets.
            user = await http.post(route, json=payload, headers={"Authorization": f"Bearer {viewer}"})
            assert user.status_code == 403 and user.json()["error"]["code"] == "forbidden"
        served = await http.post("/completions", json=body, headers=SERVICE)
        assert served.status_code == 200, served.text
        assert served.json()["usage"]["completion_tokens"] >= 1
        # The model list: any valid key (the service key or an API key), never anonymous.
        assert (await http.get("/models")).status_code == 401
        assert (await http.get("/models", headers={"Authorization": "Bearer nope"})).status_code == 401
        for key in (SERVICE_KEY, viewer):
            listed = await http.get("/models", headers={"Authorization": f"Bearer {key}"})
            assert listed.status_code == 200 and listed.json()["data"][0]["id"] == TEST_MODEL
        # Health stays open: it uses no model.
        assert (await http.get(local_tier.removesuffix("/v1") + "/health")).status_code == 200
