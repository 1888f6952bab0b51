"""`aigc text`: prompt -> TextRequest -> stream_text -> stdout."""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..console import Console
from ..device import pick_device, pick_dtype
from ..errors import UsageError
from ..loading import load_causal_lm, locate
from ..registry import DEFAULT_MODELS, resolve
from ..streams import read_prompt
from ..writers import end_text, write_json_line, write_text
from .common import pick_seed, setting


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
    backend: str | None = None
    precision: str | None = None


def run_text(options: TextOptions, console: Console) -> None:
    from ..generators.text import TextRequest, check_template, generate_text, generation_config, stream_text

    if options.raw and options.system is not None:
        raise UsageError("--system needs the chat template, and --raw turns it off: use one or the other")
    if options.precision not in (None, "fp32", "int4"):
        raise UsageError(f"Unknown precision '{options.precision}': use fp32 or int4")
    prompt = read_prompt(options.prompt)
    ref = resolve(setting("text", "model", options.model, DEFAULT_MODELS["text"]), "text")
    folder = locate(ref, "text", console)  # before torch is imported: a missing model fails fast
    options = replace(
        options,
        system=options.system if options.raw else setting("text", "system", options.system),
        device=setting("text", "device", None if options.device == "auto" else options.device, "auto"),
        dtype=setting("text", "dtype", None if options.dtype == "auto" else options.dtype, "auto"),
        backend=setting("text", "backend", options.backend),
        precision=setting("text", "precision", options.precision),
    )
    device = pick_device(options.device)
    dtype, _ = pick_dtype(device.device, options.dtype)
    with console.status(f"Loading {ref.label} on {device.device}"):
        engine, tokenizer = _load_engine(folder, options, device.device, dtype, console)
    console.note(
        f"{ref.label} on {device.device} ({engine.dtype}) with the {engine.backend} backend, from {folder}"
    )

    check_template(tokenizer, options.raw, options.system)
    base = TextRequest(
        prompt=prompt,
        seed=0,
        max_tokens=setting("text", "max_tokens", options.max_tokens, ref.default("max_tokens", 256)),
        temperature=setting("text", "temperature", options.temperature, ref.default("temperature")),
        top_k=setting("text", "top_k", options.top_k, ref.default("top_k")),
        top_p=setting("text", "top_p", options.top_p, ref.default("top_p")),
        repetition_penalty=setting(
            "text", "repetition_penalty", options.repetition_penalty, ref.default("repetition_penalty")
        ),
        stop=options.stop,
        system=options.system,
        raw=options.raw,
    )
    # Greedy decoding ignores the seed: draw and report one only when sampling.
    sampling = generation_config(engine.base_config, base).do_sample
    seed = pick_seed(options.seed, console if sampling else Console(quiet=True))
    for index in range(options.count):
        request = replace(base, seed=seed + index)
        if options.json:
            completion = generate_text(engine, tokenizer, request)
            write_json_line(
                {
                    "text": completion.text,
                    "model": ref.label,
                    "backend": engine.backend,
                    "precision": engine.precision,
                    "device": device.device,
                    "dtype": engine.dtype,
                    # onnxruntime-genai samples with its own generator: same seed, other text than torch.
                    "sampling_matches_reference": engine.backend == "torch" or not sampling,
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
            with closing(stream_text(engine, tokenizer, request)) as chunks:
                for chunk in chunks:
                    write_text(chunk.text)
                    completion = chunk.completion
        else:
            completion = generate_text(engine, tokenizer, request)
            write_text(completion.text)
        end_text(completion.text)


def _load_engine(folder: Path, options: TextOptions, device: str, dtype: Any, console: Console):
    """(engine, tokenizer): onnxruntime-genai when the backend choice says so and the export works,
    else the transformers reference."""
    from ..generators.text import TorchEngine
    from ..onnx_export import ExportFailed, choose_backend, exported

    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    requested = options.backend or "auto"
    backend, why = choose_backend(requested, device, model_type, options.dtype)
    console.note(f"backend: {backend} ({why})")
    if requested == "onnx" and backend == "torch":
        console.warn(f"the onnx backend cannot run this: {why}; using transformers")
    if backend == "onnx":
        precision = options.precision or "fp32"
        try:
            export = exported(folder, precision, console)
        except ExportFailed as exc:
            console.warn(f"the ONNX export failed ({exc}); using transformers")
        else:
            from transformers import GenerationConfig

            from ..generators.text_onnx import OnnxEngine
            from ..loading import load_tokenizer

            if precision == "int4":
                console.warn("int4 is quantised: results differ from the transformers reference")
            tokenizer = load_tokenizer(folder, options.trust_remote_code, console)
            try:
                base = GenerationConfig.from_pretrained(folder)
            except OSError:  # no generation_config.json: the model config's defaults, as transformers does
                base = GenerationConfig.from_model_config(json.loads((folder / "config.json").read_text()))
            return OnnxEngine(export, base, precision), tokenizer
    elif options.precision is not None:
        console.warn("--precision applies to the onnx backend; transformers runs in --dtype")
    model, tokenizer = load_causal_lm(folder, device, dtype, options.trust_remote_code, console)
    return TorchEngine(model), tokenizer
