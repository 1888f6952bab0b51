"""The core API: one small protocol per modality, and the key an engine is loaded and pooled by.

An engine is loaded from an EngineKey only (folder, device, dtype, backend and the backend's load options);
everything that varies per call is in the request. Engines keep no per-call state and never print.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .image import ImageRequest, ImageResult
    from .speech import SpeechRequest


@dataclass(frozen=True)
class EngineKey:
    """What identifies a loaded engine: two requests with the same key can share it."""

    modality: str
    """text, image or speech."""
    folder: str
    """The local model folder (a Hub snapshot, a converted embedded model, the user's folder)."""
    device: str
    """A torch device string: cpu, cuda, cuda:1, mps, xpu (cpu for onnxruntime engines)."""
    dtype: str
    """float32, float16 or bfloat16."""
    backend: str
    """A row of the engine table: torch, onnx, diffusers, piper, transformers."""
    options: tuple[tuple[str, Any], ...] = ()
    """Load options of that backend (onnx precision, trust_remote_code, a vocoder folder, GPU offload)."""

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)


class TextEngine(Protocol):
    """A causal LM that streams new token ids; stream_text (engines.text) does the rest for every backend."""

    backend: str
    device: str
    dtype: str
    precision: str
    """The numbers the weights run in: float32, float16, bfloat16, int4."""
    tokenizer: Any
    """encode(text), encode_chat(messages), decode(ids) and chat_template (engines.tokenizer)."""
    generation_defaults: dict[str, Any]
    """The model's own generation settings (generation_config.json): do_sample, temperature, top_k, top_p,
    repetition_penalty, eos_token_id."""
    context_length: int | None
    """Tokens the model reads in all, prompt and reply (its position table / trained context)."""

    def tokens(self, prompt_ids: list[int], settings: Any, seed: int) -> Iterator[list[int]]:
        """New token ids as they come, after the prompt's, under `settings` (engines.text.Sampling) and
        `seed`. Closing the iterator stops generation."""
        ...


class ImageEngine(Protocol):
    backend: str
    device: str
    dtype: str

    def defaults(self) -> dict[str, Any]:
        """What a raw call of the pipeline uses when unset: steps, guidance, width, height (pixels)."""
        ...

    def sampler_name(self, scheduler: str | None) -> str:
        """The AUTOMATIC1111 name of the sampler a request with this scheduler runs."""
        ...

    def generate(
        self, request: ImageRequest, on_step: Callable[[int, int], None] | None = None
    ) -> Iterator[ImageResult]:
        """request.count images one by one, image i seeded with request.seed + i."""
        ...


class SpeechEngine(Protocol):
    backend: str
    device: str
    dtype: str
    sample_rate: int
    """Samples per second of the audio chunks."""

    def sentences(self, text: str) -> list[str]:
        """How the text is split, one audio chunk per sentence."""
        ...

    def check(self, request: SpeechRequest) -> None:
        """Raise UsageError for a voice or speed this engine cannot honour, before any work."""
        ...

    def chunks(self, request: SpeechRequest) -> Iterator[Any]:
        """float32 mono samples in [-1, 1], one array per sentence."""
        ...
