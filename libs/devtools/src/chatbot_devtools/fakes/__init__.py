"""Fake providers, each speaking its vendor's wire format byte for byte (proven by the vendor's SDK)."""

from .anthropic import FakeAnthropic
from .base import FakeUpstream, Fault, fake_vector, tokenize
from .gemini import FakeGemini
from .ollama import FakeOllama
from .openai import FakeOpenAI

__all__ = ["FakeAnthropic", "FakeGemini", "FakeOllama", "FakeOpenAI", "FakeUpstream", "Fault", "fake_vector", "tokenize"]
