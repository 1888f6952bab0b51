"""Text generation over any text engine: `stream_text` yields text as it is produced, `generate_text`
collects it. Nothing here prints.

Results equal the raw library's: the prompt is encoded as `tokenizer.apply_chat_template` (or plain
`tokenizer(prompt)` when raw) encodes it, the engine generates with the model's generation defaults and the
request's settings on top (`Sampling`), and the text is `tokenizer.decode(new_tokens,
skip_special_tokens=True)`, decoded incrementally (each token costs one short decode, not a decode of
everything so far). Nothing here imports torch or transformers: the engines do, where they need them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import ContextFull, UsageError

if TYPE_CHECKING:
    from .base import TextEngine


@dataclass(frozen=True)
class TextRequest:
    prompt: str
    """The user's prompt (stdin and argument already joined)."""
    seed: int
    """transformers.set_seed(seed) runs right before generation."""
    max_tokens: int = 256
    """The most new tokens to generate."""
    temperature: float | None = None
    """0 means greedy; None leaves the model's generation_config in charge."""
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    """Output ends before the first of these strings."""
    system: str | None = None
    """A system message, for models with a chat template."""
    raw: bool = False
    """Send the prompt as it is, without the chat template."""
    messages: tuple[tuple[str, str], ...] = ()
    """A conversation of (role, content) pairs (roles: system, user, assistant) to encode with the chat
    template instead of `prompt`; `system`, when set, goes first."""


@dataclass(frozen=True)
class Completion:
    text: str
    """The generated text, stop string excluded."""
    finish_reason: str
    """stop (end-of-sequence token or stop string) or length (max_tokens reached)."""
    prompt_tokens: int
    completion_tokens: int
    """Tokens generated up to the end (the end-of-sequence token included)."""
    seed: int
    time_to_first_token: float
    """Seconds from the start of generation to the first new token."""
    tokens_per_second: float
    """Decode speed after the first token."""
    seconds: float
    """Generation time, prompt processing included."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The sampling settings that ran (do_sample, temperature, top_k, top_p, repetition_penalty)."""


@dataclass(frozen=True)
class TextChunk:
    text: str
    """New text since the previous chunk (may be empty on the last chunk)."""
    completion: Completion | None = None
    """Set on the last chunk only."""
    tokens: int = 0
    """Tokens generated so far."""


@dataclass(frozen=True)
class Sampling:
    """The generation settings that run: the model's own defaults (its generation_config.json) with the
    request's on top, as transformers' GenerationConfig would hold them."""

    do_sample: bool
    temperature: float | None
    top_k: int | None
    top_p: float | None
    repetition_penalty: float | None
    max_new_tokens: int
    eos_token_ids: tuple[int, ...]
    """Tokens that end generation."""

    def as_dict(self) -> dict[str, Any]:
        """What --json reports of them."""
        keys = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens")
        return {key: getattr(self, key) for key in keys}


# What transformers' generate uses for a setting the model's generation config leaves unset (None):
# GenerationConfig._get_default_generation_params in transformers 5.
GENERATION_DEFAULTS: dict[str, Any] = {
    "do_sample": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
}


def generation_defaults(folder: Any) -> dict[str, Any]:
    """A model's own generation settings as transformers reads them, without transformers:
    generation_config.json, else the model's config.json; None where neither sets one."""
    import json
    from pathlib import Path

    def read(name: str) -> dict[str, Any]:
        path = Path(folder) / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    own = read("generation_config.json") or read("config.json")
    found = {key: own.get(key) for key in GENERATION_DEFAULTS}
    found["eos_token_id"] = own.get("eos_token_id", read("config.json").get("eos_token_id"))
    return found


def sampling(defaults: dict[str, Any], request: TextRequest) -> Sampling:
    """The model's defaults (None: transformers' own) with the request's settings on top. temperature 0
    means greedy; greedy clears temperature, top_k and top_p (they do not apply)."""

    def own(key: str) -> Any:
        value = defaults.get(key)
        return GENERATION_DEFAULTS[key] if value is None else value

    do_sample = bool(own("do_sample"))
    temperature = own("temperature")
    if request.temperature is not None:
        do_sample = request.temperature > 0
        if request.temperature > 0:
            temperature = request.temperature
    top_k = request.top_k if request.top_k is not None else own("top_k")
    top_p = request.top_p if request.top_p is not None else own("top_p")
    penalty = (
        request.repetition_penalty if request.repetition_penalty is not None else own("repetition_penalty")
    )
    eos = defaults.get("eos_token_id")
    eos_ids = tuple(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if not do_sample:
        temperature, top_k, top_p = None, None, None
    return Sampling(do_sample, temperature, top_k, top_p, penalty, request.max_tokens, eos_ids)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def check_template(tokenizer: Any, raw: bool, system: str | None) -> None:
    """A system message needs the chat template."""
    if system is not None and (raw or not has_chat_template(tokenizer)):
        why = "with --raw" if raw else "this model has no chat template"
        raise UsageError(f"--system needs the chat template ({why})")


def encode_prompt(tokenizer: Any, request: TextRequest) -> list[int]:
    """The prompt's token ids: the chat template unless raw or the model has none (engines.tokenizer)."""
    check_template(tokenizer, request.raw, request.system)
    turns = request.messages or (("user", request.prompt),)
    if request.raw or not has_chat_template(tokenizer):
        if len(turns) > 1 or turns[0][0] != "user":
            raise UsageError(
                "This model has no chat template: send one user message, or the raw prompt (/v1/completions)"
            )
        return tokenizer.encode(turns[0][1])
    messages = [{"role": role, "content": content} for role, content in turns]
    if request.system is not None:
        messages.insert(0, {"role": "system", "content": request.system})
    return tokenizer.encode_chat(messages)


def fit_to_context(engine: TextEngine, request: TextRequest) -> tuple[TextRequest, int]:
    """The request with max_tokens capped to the room the model's context leaves after the prompt, and
    the prompt's length in tokens. Every backend agrees: a prompt that fills the context is refused
    (UsageError, exit 2) rather than cut or failing mid-way (GPT-2's position table ends there; a RoPE
    model would run on past what it was trained for)."""
    prompt_tokens = len(encode_prompt(engine.tokenizer, request))
    limit = engine.context_length
    if not limit:
        return request, prompt_tokens
    if prompt_tokens >= limit:
        raise ContextFull(
            f"The prompt is {prompt_tokens} tokens and the model reads {limit} in all (prompt and reply): "
            "shorten the prompt"
        )
    if request.max_tokens > limit - prompt_tokens:
        request = replace(request, max_tokens=limit - prompt_tokens)
    return request, prompt_tokens


def _safe_end(text: str, stops: tuple[str, ...]) -> int:
    """How much of `text` can be shown: hold back a tail that may be the start of a stop string."""
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return len(text) - hold


class IncrementalDecoder:
    """Text of a growing token sequence, one short decode per token (as text-generation-inference does).

    `add(ids)` returns the new text; the joined pieces equal `tokenizer.decode(all_ids, ...)` for
    byte-level and SentencePiece tokenizers. A character split across tokens (a trailing U+FFFD) is held
    back until the token that completes it.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def add(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return text[len(prefix) :]
        return ""

    def flush(self) -> str:
        """The text held back at the end: bytes of an unfinished character, decoded as U+FFFD as
        `tokenizer.decode` decodes them."""
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(prefix) :] if len(text) > len(prefix) else ""


def _stop_at(text: str, stops: tuple[str, ...], shown: int) -> int:
    """Where the first stop string starts in `text` (searching only where a new one can be), or -1."""
    hits = (text.find(s, max(0, shown - len(s))) for s in stops)
    return min((i for i in hits if i >= 0), default=-1)


def stream_text(engine: TextEngine, request: TextRequest) -> Iterator[TextChunk]:
    """Yield text as the engine produces tokens; the last chunk carries the Completion.

    Any text engine (engines.base.TextEngine) runs the same way; closing this iterator early (a stop
    string, a closed pipe, Ctrl-C) stops generation at the next token.
    """
    tokenizer = engine.tokenizer
    prompt_ids = encode_prompt(tokenizer, request)
    settings = sampling(engine.generation_defaults, request)
    eos_ids = set(settings.eos_token_ids)
    started = time.perf_counter()
    first_at = last_at = started
    decoder = IncrementalDecoder(tokenizer)
    generated = decoder.ids
    shown = 0
    text = ""
    finish_reason = "length"
    tokens = engine.tokens(prompt_ids, settings, request.seed)
    try:
        for item in tokens:
            last_at = time.perf_counter()
            if not generated:
                first_at = last_at
            if eos_ids and item[-1] in eos_ids:
                finish_reason = "stop"
            text += decoder.add(item)
            hit = _stop_at(text, request.stop, shown)
            if hit >= 0:
                text, finish_reason = text[:hit], "stop"
                break
            end = _safe_end(text, request.stop)
            if end > shown:
                yield TextChunk(text[shown:end], tokens=len(generated))
                shown = end
        else:  # the end: what the decoder still holds (a character the last tokens left unfinished)
            text += decoder.flush()
            hit = _stop_at(text, request.stop, shown)
            if hit >= 0:
                text, finish_reason = text[:hit], "stop"
    finally:
        tokens.close()
    decode_time = last_at - first_at
    completion = Completion(
        text=text,
        finish_reason=finish_reason,
        prompt_tokens=len(prompt_ids),
        completion_tokens=len(generated),
        seed=request.seed,
        time_to_first_token=round(first_at - started, 4),
        tokens_per_second=round((len(generated) - 1) / decode_time, 2)
        if len(generated) > 1 and decode_time
        else 0.0,
        seconds=round(last_at - started, 4),
        settings=settings.as_dict(),
    )
    yield TextChunk(text[shown:], completion, len(generated))


def generate_text(engine: TextEngine, request: TextRequest) -> Completion:
    """Run stream_text to the end and return its Completion."""
    for chunk in stream_text(engine, request):
        if chunk.completion is not None:
            return chunk.completion
    raise RuntimeError("stream_text ended without a completion")
