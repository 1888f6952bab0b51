"""Text: `prepare` (model, backend, chat-template and context checks, the seed) -> TextJob, and `run`
(completions as TextDelta and Result events). The CLI, chat, the server, batch jobs and `logs rerun` all
come through here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engines import EngineKey
from ..errors import UsageError
from ..loading import revision_of
from ..settings import Resolved, named
from .events import Event, Reporter, Result, SeedChosen, TextDelta
from .models import Target, find_model, load, model_errors
from .seeds import check_seeds, draw_seed

if TYPE_CHECKING:
    from ..engines.text import Completion, TextRequest
    from ..pool import EnginePool


@dataclass(frozen=True)
class TextJob:
    """A text request ready to run: its engine (loaded, in the pool) and the request with its seed."""

    key: EngineKey
    label: str
    """The model's name as the user knows it (the alias, else what was given)."""
    folder: Path
    request: TextRequest
    """Completion i runs this request with seed request.seed + i."""
    count: int
    """How many completions."""
    sampling: bool
    """Whether the settings sample (the seed matters) or decode greedily."""
    prompt_tokens: int
    seed_drawn: bool = False
    """No seed was given: request.seed was drawn at random."""


def prepare(
    resolved: Resolved,
    prompt: str,
    reporter: Reporter,
    pool: EnginePool,
    messages: tuple[tuple[str, str], ...] = (),
) -> TextJob:
    """Find and load the model of `resolved` (settings from any source), and build its request: the
    system rule, the chat template check, max_tokens capped to the context (a warning), the seed (drawn
    when none is given; reported when it matters). messages: a conversation (prompt last) to encode with
    the chat template. Raises UsageError (exit 2), ModelUnavailableError (exit 3)."""
    from ..engines.text import TextRequest, check_template, fit_to_context, has_chat_template
    from ..engines.text import sampling as settings_for

    s = resolved.values
    system = s.system
    system_given = resolved.sources.get("system", "").startswith(("flag", "request"))
    if s.raw and system_given:  # fails before anything loads
        raise UsageError(
            f"{named(resolved, 'system', 'text')} needs the chat template, and "
            f"{'the raw completion route' if resolved.sources['system'].startswith('request') else '--raw'} "
            "turns it off: use one or the other"
        )
    count = s.count or 1
    check_seeds(resolved, "text")
    # A missing model fails here, before torch is imported.
    target = find_model(
        "text", s.model, s.device, s.dtype, reporter, bool(s.trust_remote_code), resolved.sources["model"]
    )
    label = target.ref.label
    key = engine_key(target, resolved, reporter)
    if key.backend == "torch":  # the onnx path imports neither transformers nor torch
        from ..loading import quiet_libraries

        quiet_libraries(reporter)  # type: ignore[arg-type]
    engine = load(pool, key, reporter, f"Loading {label} on {target.device.device}", label)
    where = f"{engine.device} ({engine.dtype}) with the {engine.backend} backend"
    reporter.note(f"{label} on {where}, from {target.folder}", "model_loaded")
    if system is not None and not system_given and (s.raw or not has_chat_template(engine.tokenizer)):
        # A configured system message applies where the chat template does: not to a raw prompt, nor
        # to a model without a template.
        reporter.note(
            f"the system message ({resolved.sources['system']}) does not apply to this prompt",
            "system_unused",
        )
        system = None
    check_template(engine.tokenizer, bool(s.raw), system)
    wanted = s.max_tokens or 256
    seed, drawn = draw_seed(s.seed, count)
    base = TextRequest(
        prompt=prompt,
        seed=seed,
        max_tokens=wanted,
        temperature=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p,
        repetition_penalty=s.repetition_penalty,
        stop=tuple(s.stop or ()),
        system=system,
        raw=bool(s.raw),
        messages=messages,
    )
    with model_errors(label):
        base, prompt_tokens = fit_to_context(engine, base)
    if base.max_tokens < wanted and s.max_tokens is not None:
        reporter.warn(
            f"{named(resolved, 'max_tokens', 'text')} {s.max_tokens} capped to {base.max_tokens}: {label} "
            f"reads {engine.context_length} tokens in all and the prompt is {prompt_tokens}",
            "max_tokens_capped",
            ("max_tokens",),
        )
    sampling = settings_for(engine.generation_defaults, base).do_sample
    # Greedy decoding ignores the seed: it is reported (and recorded) only when sampling.
    reporter.emit(SeedChosen(seed, drawn, matters=sampling))
    return TextJob(key, label, target.folder, base, count, sampling, prompt_tokens, drawn)


def record(completion: Completion, job: TextJob, engine: Any) -> dict[str, Any]:
    """What --json prints of a completion (and the server returns as `aigc`, and the log keeps)."""

    return {
        "text": completion.text,
        "model": job.label,
        "revision": revision_of(job.folder),
        "backend": engine.backend,
        "precision": engine.precision,
        "device": engine.device,
        "dtype": engine.dtype,
        # onnxruntime-genai samples with its own generator: same seed, other text than torch.
        "sampling_matches_reference": engine.backend == "torch" or not job.sampling,
        "seed": completion.seed if job.sampling else None,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "time_to_first_token": completion.time_to_first_token,
        "tokens_per_second": completion.tokens_per_second,
        "seconds": completion.seconds,
        **completion.settings,
    }


def requests(job: TextJob) -> list[TextRequest]:
    """The job's requests: completion i with seed + i."""
    return [replace(job.request, seed=job.request.seed + i) for i in range(job.count)]


def run(job: TextJob, engine: Any) -> Iterator[Event]:
    """The job's completions one after another: TextDelta events as text comes, then a Result (record,
    payload: the Completion) for each. Closing the iterator stops generation at the next token."""

    for index, request in enumerate(requests(job)):
        yield from run_one(job, engine, request, index)


def run_one(job: TextJob, engine: Any, request: TextRequest, index: int = 0) -> Iterator[Event]:
    """One completion of `request` (a request of `job`, or one built from it: a chat turn) as events."""
    from ..engines.text import stream_text

    with model_errors(job.label), closing(stream_text(engine, request)) as chunks:
        for chunk in chunks:
            if chunk.text:
                yield TextDelta(index, chunk.text, chunk.tokens)
            if chunk.completion is not None:
                completion = chunk.completion
                yield Result(
                    index, record(completion, job, engine), completion, {"seconds": completion.seconds}
                )


def engine_key(target: Target, resolved: Resolved, reporter: Reporter) -> EngineKey:
    """The engine to run: onnxruntime-genai when the backend choice says so and its export works (made
    once here), else the transformers reference; the choice as a note, a fallback as one warning. An export
    that failed before for this model and these libraries is not tried again, with auto or --backend onnx
    alike (both fall back): the warning says so and names the file to delete to try again."""
    from ..engines.onnx_export import ExportFailed, choose_backend, exported
    from ..made_once import FailedBefore

    s = resolved.values
    folder = target.folder
    device = target.device.device
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    requested = s.backend or "auto"
    backend, why = choose_backend(requested, device, model_type, s.dtype or "auto")
    reporter.note(f"backend: {backend} ({why})", "backend_chosen")
    if requested == "onnx" and backend == "torch":
        reporter.warn(f"the onnx backend cannot run this: {why}; using transformers", "backend_fallback")
    trust = (("trust_remote_code", bool(s.trust_remote_code)),)
    if backend == "onnx":
        precision = s.precision or "fp32"
        try:
            export = exported(folder, precision, reporter)  # type: ignore[arg-type]
        except FailedBefore as exc:
            # said as a warning once, when it failed; after that a note, unless onnx was asked for by name
            say = reporter.warn if requested == "onnx" else reporter.note
            say(
                f"the ONNX export of {folder.name} failed before ({exc}); using transformers "
                f"(delete {exc.marker} to try the export again)",
                "backend_fallback",
            )
        except ExportFailed as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no reason given"
            reporter.warn(
                f"the ONNX export of {folder.name} failed ({first}); using transformers, as --backend torch "
                "does (remembered: later runs skip the export)",
                "backend_fallback",
            )
        else:
            if precision == "int4":
                reporter.warn(
                    "int4 is quantised: results differ from the transformers reference", "quantised"
                )
            options = (("export", str(export)), ("precision", precision), *trust)
            return EngineKey("text", str(folder), "cpu", "float32", "onnx", options)
    elif s.precision is not None:
        reporter.warn(
            f"{named(resolved, 'precision', 'text')} applies to the onnx backend; transformers runs in "
            f"{named(resolved, 'dtype', 'text')}",
            "setting_unused",
            ("precision", "dtype"),
        )
    return EngineKey("text", str(folder), device, target.dtype, "torch", trust)
