"""`aigc text`: flags -> TextSettings -> TextRequest -> a text engine from the pool -> stdout."""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import replace
from typing import Any

from ..console import Console
from ..engines import EngineKey
from ..errors import UsageError
from ..interrupts import raising
from ..output import check_stdout, end_text, write_json_line, write_text
from ..pool import default_pool
from ..settings import resolve_settings
from ..streams import read_prompt
from .common import Target, check_seeds, find_model, model_errors, pick_seed


def run_text(
    prompt_arg: str | None, flags: dict[str, Any], stream: bool, as_json: bool, console: Console
) -> None:
    from ..engines.text import (
        TextRequest,
        check_template,
        fit_to_context,
        generate_text,
        has_chat_template,
        stream_text,
    )
    from ..engines.text import (
        sampling as settings_for,
    )
    from ..loading import quiet_libraries

    check_stdout()  # a closed stdout fails before anything loads
    resolved = resolve_settings("text", flags)
    s = resolved.values
    system = s.system
    system_flagged = resolved.sources.get("system", "").startswith("flag")
    if s.raw and system_flagged:  # fails before anything loads
        raise UsageError("--system needs the chat template, and --raw turns it off: use one or the other")
    count = s.count or 1
    check_seeds(s.seed, count)
    prompt = read_prompt(prompt_arg)
    # A missing model fails here, before torch is imported.
    target = find_model(
        "text", s.model, s.device, s.dtype, console, bool(s.trust_remote_code), resolved.sources["model"]
    )
    label = target.ref.label
    key = text_engine_key(target, s, console)
    if key.backend == "torch":  # the onnx path imports neither transformers nor torch
        quiet_libraries(console)
    with console.status(f"Loading {label} on {target.device.device}"), model_errors(label):
        engine = default_pool().get(key)
    console.note(
        f"{label} on {engine.device} ({engine.dtype}) with the {engine.backend} backend, from {target.folder}"
    )
    if system is not None and not system_flagged and (s.raw or not has_chat_template(engine.tokenizer)):
        # A configured system message applies where the chat template does: not to a raw prompt, nor
        # to a model without a template.
        console.note(f"the system message ({resolved.sources['system']}) does not apply to this prompt")
        system = None
    check_template(engine.tokenizer, bool(s.raw), system)
    base = TextRequest(
        prompt=prompt,
        seed=0,
        max_tokens=s.max_tokens or 256,
        temperature=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p,
        repetition_penalty=s.repetition_penalty,
        stop=tuple(s.stop or ()),
        system=system,
        raw=bool(s.raw),
    )
    base, prompt_tokens = fit_to_context(engine, base)
    if base.max_tokens < (s.max_tokens or 256) and s.max_tokens is not None:
        console.warn(
            f"--max-tokens {s.max_tokens} capped to {base.max_tokens}: {label} reads "
            f"{engine.context_length} tokens in all and the prompt is {prompt_tokens}"
        )
    # Greedy decoding ignores the seed: draw and report one only when sampling (--json says null).
    sampling = settings_for(engine.generation_defaults, base).do_sample
    seed = pick_seed(s.seed, console if sampling else Console(quiet=True), count)
    with model_errors(label), raising():
        for index in range(count):
            request = replace(base, seed=seed + index)
            if as_json:
                completion = generate_text(engine, request)
                write_json_line(
                    {
                        "text": completion.text,
                        "model": label,
                        "backend": engine.backend,
                        "precision": engine.precision,
                        "device": engine.device,
                        "dtype": engine.dtype,
                        # onnxruntime-genai samples with its own generator: same seed, other text than torch.
                        "sampling_matches_reference": engine.backend == "torch" or not sampling,
                        "seed": completion.seed if sampling else None,
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
            if stream:
                with closing(stream_text(engine, request)) as chunks:
                    for chunk in chunks:
                        write_text(chunk.text)
                        completion = chunk.completion
            else:
                completion = generate_text(engine, request)
                write_text(completion.text)
            end_text(completion.text)


def text_engine_key(target: Target, s: Any, console: Console) -> EngineKey:
    """The engine to run: onnxruntime-genai when the backend choice says so and its export works (made
    once here), else the transformers reference."""
    from ..engines.onnx_export import ExportFailed, choose_backend, exported

    folder = target.folder
    device = target.device.device
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    requested = s.backend or "auto"
    backend, why = choose_backend(requested, device, model_type, s.dtype or "auto")
    console.note(f"backend: {backend} ({why})")
    if requested == "onnx" and backend == "torch":
        console.warn(f"the onnx backend cannot run this: {why}; using transformers")
    trust = (("trust_remote_code", bool(s.trust_remote_code)),)
    if backend == "onnx":
        precision = s.precision or "fp32"
        try:
            export = exported(folder, precision, console)
        except ExportFailed as exc:
            console.warn(f"the ONNX export failed ({exc}); using transformers")
        else:
            if precision == "int4":
                console.warn("int4 is quantised: results differ from the transformers reference")
            options = (("export", str(export)), ("precision", precision), *trust)
            return EngineKey("text", str(folder), "cpu", "float32", "onnx", options)
    elif s.precision is not None:
        console.warn("--precision applies to the onnx backend; transformers runs in --dtype")
    return EngineKey("text", str(folder), device, target.dtype, "torch", trust)
