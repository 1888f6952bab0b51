"""`aigc text`: prompt -> TextRequest -> stream_text -> stdout."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, replace

from ..config import settings
from ..console import Console
from ..device import dtype_name, pick_device, pick_dtype
from ..errors import UsageError
from ..loading import load_causal_lm, locate
from ..registry import DEFAULT_MODELS, resolve
from ..streams import read_prompt
from ..writers import end_text, write_json_line, write_text
from .common import pick_seed


@dataclass(frozen=True)
class TextOptions:
    prompt: str | None
    model: str | None
    system: str | None
    raw: bool
    max_tokens: int | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    repetition_penalty: float | None
    stop: tuple[str, ...]
    count: int
    seed: int | None
    stream: bool
    json: bool
    device: str
    dtype: str
    trust_remote_code: bool


def run_text(options: TextOptions, console: Console) -> None:
    from ..generators.text import TextRequest, check_template, generate_text, generation_config, stream_text

    if options.raw and options.system is not None:
        raise UsageError("--system needs the chat template, and --raw turns it off: use one or the other")
    prompt = read_prompt(options.prompt)
    ref = resolve(options.model or settings().default_model("text") or DEFAULT_MODELS["text"], "text")
    folder = locate(ref, "text", console)  # before torch is imported: a missing model fails fast
    device = pick_device(options.device)
    dtype, _ = pick_dtype(device.device, options.dtype)
    with console.status(f"Loading {ref.label} on {device.device} ({dtype_name(dtype)})"):
        model, tokenizer = load_causal_lm(folder, device.device, dtype, options.trust_remote_code, console)
    console.note(f"{ref.label} on {device.device} ({dtype_name(dtype)}), from {folder}")

    check_template(tokenizer, options.raw, options.system)
    base = TextRequest(
        prompt=prompt,
        seed=0,
        max_tokens=options.max_tokens or ref.default("max_tokens", 256),
        temperature=_given(options.temperature, ref.default("temperature")),
        top_k=_given(options.top_k, ref.default("top_k")),
        top_p=_given(options.top_p, ref.default("top_p")),
        repetition_penalty=_given(options.repetition_penalty, ref.default("repetition_penalty")),
        stop=options.stop,
        system=options.system,
        raw=options.raw,
    )
    # Greedy decoding ignores the seed: draw and report one only when sampling.
    sampling = generation_config(model, base).do_sample
    seed = pick_seed(options.seed, console if sampling else Console(quiet=True))
    for index in range(options.count):
        request = replace(base, seed=seed + index)
        if options.json:
            completion = generate_text(model, tokenizer, request)
            write_json_line(
                {
                    "text": completion.text,
                    "model": ref.label,
                    "backend": "torch",
                    "device": device.device,
                    "dtype": dtype_name(dtype),
                    "seed": completion.seed,
                    "finish_reason": completion.finish_reason,
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                    "time_to_first_token": completion.time_to_first_token,
                    "tokens_per_second": completion.tokens_per_second,
                    "seconds": completion.seconds,
                    **completion.settings,
                }
            )
            continue
        if index > 0:
            write_text("\n")
        if options.stream:
            with closing(stream_text(model, tokenizer, request)) as chunks:
                for chunk in chunks:
                    write_text(chunk.text)
                    completion = chunk.completion
        else:
            completion = generate_text(model, tokenizer, request)
            write_text(completion.text)
        end_text(completion.text)


def _given(value, default):
    return value if value is not None else default
