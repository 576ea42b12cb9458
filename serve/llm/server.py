"""The local tier's Serve deployment: OpenAI-compatible routes over an injected engine.

The server is handed an engine factory (as Ray Serve LLM's `LLMServer` is handed its engine
class); by default the llama.cpp engine of the CPU tier. The application is built in `builder.py`.

No `from __future__ import annotations` here: FastAPI must see real types on the methods that
Serve's ingress wraps, or request bodies turn into query parameters.

Routes match Ray Serve LLM's OpenAI ingress (`/v1/models`, `/v1/completions`,
`/v1/chat/completions`), so the router and the `openai` SDK cannot tell this tier from vLLM.
"""

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from chorus.settings import LocalTierSettings, Settings
from chorus.store.api_keys import KeyStore
from chorus.store.client import async_redis
from chorus.store.keys import keys_for
from serve.llm.auth import TierAuthMiddleware, TierGuard, install_guard
from serve.llm.engine import EngineOutput, LocalEngine, SamplingParams
from serve.llm.engines.llama_cpp import llama_cpp_engine
from serve.llm.errors import LocalTierError, ModelNotServed
from serve.llm.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    ModelCard,
    ModelList,
    OpenAIErrorBody,
    OpenAIErrorResponse,
    Usage,
)

log = logging.getLogger(__name__)

api = FastAPI(title="Chorus local tier (llama.cpp)", docs_url="/docs")
# Checks the guard the replica's constructor installs: not app state, since Serve runs a copy of
# `api` taken when the class is decorated, and state set on `api` later never reaches requests.
api.add_middleware(TierAuthMiddleware)


def _error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    body = OpenAIErrorResponse(error=OpenAIErrorBody(message=message, type=kind, param=param))
    return JSONResponse(status_code=status, content=body.model_dump())


@api.exception_handler(RequestValidationError)
async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"] if p != "body")
    return _error(400, f"{param or 'body'}: {first['msg']}", "invalid_request_error", param)


@api.exception_handler(LocalTierError)
async def _refused(_: Request, exc: LocalTierError) -> JSONResponse:
    # Only the tier's own refusals are client errors; any other exception stays a 500.
    return _error(exc.status, str(exc), exc.kind, exc.param)


def _params(req: ChatCompletionRequest | CompletionRequest, default_max: int) -> SamplingParams:
    return SamplingParams(
        max_tokens=req.max_tokens or default_max,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=tuple(req.stop or ()),
        seed=req.seed,
    )


def _usage(out: EngineOutput) -> Usage:
    return Usage(
        prompt_tokens=out.prompt_tokens,
        completion_tokens=out.completion_tokens,
        total_tokens=out.prompt_tokens + out.completion_tokens,
    )


def _finish(reason: str) -> Any:
    return "length" if reason == "length" else "stop"


def _sse(payload: str) -> str:
    return f"data: {payload}\n\n"


# The deployment keeps the name it had when llama.cpp was its only engine: Serve status and logs
# show it under that name.
@serve.deployment(name="LlamaCppServer")
@serve.ingress(api)
class LocalTierServer:
    """OpenAI-compatible routes over the engine `engine_factory` builds in the replica."""

    def __init__(
        self,
        settings: Settings,
        engine_factory: Callable[[LocalTierSettings], LocalEngine] = llama_cpp_engine,
    ) -> None:
        tier = settings.local
        self.engine = engine_factory(tier)
        self.model = tier.model
        # Any Chorus API key may read the model list, so the tier looks keys up in Redis too.
        install_guard(TierGuard(tier.api_key, KeyStore(async_redis(settings), keys_for(settings))))
        log.info("local tier ready: %s (%d threads)", tier.model, tier.threads)

    def _check_model(self, requested: str) -> None:
        if requested != self.model:
            raise ModelNotServed(requested, self.model)

    @api.get("/v1/models")
    async def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.model)])

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok", "model": self.model}

    @api.post("/v1/completions", response_model=None)
    async def completions(self, req: CompletionRequest) -> CompletionResponse | StreamingResponse:
        self._check_model(req.model)
        params = _params(req, default_max=16)
        if req.stream:
            return StreamingResponse(self._stream_completion(req, params), media_type="text/event-stream")
        out = await self.engine.complete(req.prompt, params)
        return CompletionResponse(
            model=self.model,
            choices=[CompletionChoice(text=out.text, finish_reason=_finish(out.finish_reason))],
            usage=_usage(out),
        )

    async def _stream_completion(self, req: CompletionRequest, params: SamplingParams) -> AsyncIterator[str]:
        head = CompletionResponse(model=self.model, choices=[])
        async for item in self.engine.stream(req.prompt, params):
            if isinstance(item, str):
                chunk = head.model_copy(update={"choices": [CompletionChoice(text=item, finish_reason=None)]})
                yield _sse(chunk.model_dump_json(exclude={"usage"}))
            else:
                final = head.model_copy(
                    update={"choices": [CompletionChoice(text="", finish_reason=_finish(item.finish_reason))]}
                )
                if req.stream_options and req.stream_options.include_usage:
                    final.usage = _usage(item)
                yield _sse(final.model_dump_json(exclude_none=True))
        yield _sse("[DONE]")

    @api.post("/v1/chat/completions", response_model=None)
    async def chat(self, req: ChatCompletionRequest) -> ChatCompletionResponse | StreamingResponse:
        self._check_model(req.model)
        prompt = self.engine.render_chat([(m.role, m.content) for m in req.messages])
        params = _params(req, default_max=256)
        if req.stream:
            return StreamingResponse(self._stream_chat(req, prompt, params), media_type="text/event-stream")
        out = await self.engine.complete(prompt, params)
        return ChatCompletionResponse(
            model=self.model,
            choices=[
                ChatChoice(
                    message=ChatMessage(role="assistant", content=out.text),
                    finish_reason=_finish(out.finish_reason),
                )
            ],
            usage=_usage(out),
        )

    async def _stream_chat(
        self, req: ChatCompletionRequest, prompt: str, params: SamplingParams
    ) -> AsyncIterator[str]:
        chunk_id, created = f"chatcmpl-{time.time_ns():x}", int(time.time())

        def chunk(delta: DeltaMessage, finish: Any = None, usage: Usage | None = None) -> str:
            body = ChatCompletionChunk(
                id=chunk_id,
                created=created,
                model=self.model,
                choices=[ChatChunkChoice(delta=delta, finish_reason=finish)],
                usage=usage,
            )
            return _sse(body.model_dump_json(exclude_none=True))

        yield chunk(DeltaMessage(role="assistant", content=""))
        try:
            async for item in self.engine.stream(prompt, params):
                if isinstance(item, str):
                    yield chunk(DeltaMessage(content=item))
                else:
                    include = bool(req.stream_options and req.stream_options.include_usage)
                    yield chunk(
                        DeltaMessage(), _finish(item.finish_reason), _usage(item) if include else None
                    )
        except LocalTierError as exc:
            # Headers are already sent: report the error in the stream, as OpenAI does.
            yield _sse(json.dumps({"error": {"message": str(exc), "type": exc.kind}}))
        yield _sse("[DONE]")
