"""`aigc text`: flags -> TextSettings -> TextRequest -> a text engine from the pool -> stdout."""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..console import Console
from ..engines import EngineKey
from ..errors import UsageError
from ..interrupts import raising
from ..output import check_stdout, end_text, write_json_line, write_text
from ..pool import EnginePool, default_pool
from ..server.discovery import find_server
from ..settings import Resolved, resolve_settings
from ..streams import read_prompt
from .common import Target, check_seeds, find_model, loading, model_errors, pick_seed

if TYPE_CHECKING:
    from ..engines.text import Completion, TextRequest


@dataclass(frozen=True)
class TextJob:
    """A text request ready to run: its engine (loaded, in the pool) and the request with seed 0."""

    key: EngineKey
    label: str
    """The model's name as the user knows it (the alias, else what was given)."""
    folder: Path
    request: TextRequest
    count: int
    """How many completions; completion i uses seed + i."""
    sampling: bool
    """Whether the settings sample (a seed matters) or decode greedily."""
    prompt_tokens: int


def prepare_text(
    resolved: Resolved,
    prompt: str,
    console: Console,
    pool: EnginePool,
    messages: tuple[tuple[str, str], ...] = (),
) -> TextJob:
    """Find and load the model of `resolved` (settings from any source), and build its request: the
    system rule, the chat template check, max_tokens capped to the context (with a warning). The CLI,
    the server and batch jobs all come through here. Raises UsageError, ModelUnavailableError."""
    from ..engines.text import TextRequest, check_template, fit_to_context, has_chat_template
    from ..engines.text import sampling as settings_for
    from ..loading import quiet_libraries

    s = resolved.values
    system = s.system
    system_given = resolved.sources.get("system", "").startswith(("flag", "request"))
    if s.raw and system_given:  # fails before anything loads
        raise UsageError("--system needs the chat template, and --raw turns it off: use one or the other")
    # A missing model fails here, before torch is imported.
    target = find_model(
        "text", s.model, s.device, s.dtype, console, bool(s.trust_remote_code), resolved.sources["model"]
    )
    label = target.ref.label
    key = text_engine_key(target, s, console)
    if key.backend == "torch":  # the onnx path imports neither transformers nor torch
        quiet_libraries(console)
    with loading(console, pool, key, f"Loading {label} on {target.device.device}"), model_errors(label):
        engine = pool.get(key)
    console.note(
        f"{label} on {engine.device} ({engine.dtype}) with the {engine.backend} backend, from {target.folder}"
    )
    if system is not None and not system_given and (s.raw or not has_chat_template(engine.tokenizer)):
        # A configured system message applies where the chat template does: not to a raw prompt, nor
        # to a model without a template.
        console.note(f"the system message ({resolved.sources['system']}) does not apply to this prompt")
        system = None
    check_template(engine.tokenizer, bool(s.raw), system)
    wanted = s.max_tokens or 256
    base = TextRequest(
        prompt=prompt,
        seed=0,
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
        console.warn(
            f"--max-tokens {s.max_tokens} capped to {base.max_tokens}: {label} reads "
            f"{engine.context_length} tokens in all and the prompt is {prompt_tokens}"
        )
    sampling = settings_for(engine.generation_defaults, base).do_sample
    return TextJob(key, label, target.folder, base, s.count or 1, sampling, prompt_tokens)


def completion_record(completion: Completion, job: TextJob, engine: Any) -> dict[str, Any]:
    """What --json prints of a completion (and the server returns as `aigc`)."""
    return {
        "text": completion.text,
        "model": job.label,
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


def run_text(
    prompt_arg: str | None,
    flags: dict[str, Any],
    stream: bool,
    as_json: bool,
    console: Console,
    local: bool = False,
    no_log: bool = False,
    conversation: str | None = None,
    continue_last: bool = False,
    history: tuple[tuple[str, str], ...] | None = None,
) -> None:
    """`aigc text`. conversation (--cid) or continue_last (-c): the prompt is the next user turn of a
    conversation in the log, sent with its history through the chat template. history: those turns given
    (`aigc logs rerun` of a turn)."""
    from ..engines.text import generate_text, stream_text

    check_stdout()  # a closed stdout fails before anything loads
    resolved = resolve_settings("text", flags)
    s = resolved.values
    if s.raw and resolved.sources.get("system", "").startswith("flag"):
        raise UsageError("--system needs the chat template, and --raw turns it off: use one or the other")
    count = s.count or 1
    check_seeds(s.seed, count)
    if history is not None:
        from .. import logs

        turns, conversation, system = history, logs.new_conversation(), None
    else:
        turns, conversation, system = _conversation(conversation, continue_last, bool(s.raw))
    if system is not None and resolved.sources.get("system") in (None, "default"):
        resolved = _with_system(resolved, system)
    prompt = read_prompt(prompt_arg)
    messages = (*turns, ("user", prompt)) if turns else ()
    log = TextLog(prompt, messages, conversation, len(turns) // 2 + 1, no_log)
    server = None if local else find_server()
    if server is not None:
        from ..server.client import remote_text

        records = remote_text(server, resolved, prompt, stream, as_json, console, messages)
        if records is not None:
            log.add_all(records, resolved)
            return
    pool = default_pool()
    job = prepare_text(resolved, prompt, console, pool, messages)
    engine = pool.get(job.key)
    log.folder = str(job.folder)
    # Greedy decoding ignores the seed: draw and report one only when sampling (--json says null).
    seed = pick_seed(s.seed, console if job.sampling else Console(quiet=True), count)
    with model_errors(job.label), raising():
        for index in range(count):
            request = replace(job.request, seed=seed + index)
            if as_json:
                completion = generate_text(engine, request)
                record = completion_record(completion, job, engine)
                write_json_line(record)
                log.add(record, resolved, job.request.system)
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
            log.add(completion_record(completion, job, engine), resolved, job.request.system)


def _conversation(
    conversation: str | None, continue_last: bool, raw: bool
) -> tuple[tuple[tuple[str, str], ...], str, str | None]:
    """(the history as (role, content) turns, the conversation id, its system message) for -c / --cid;
    no turns and a new id otherwise."""
    from .. import logs

    if conversation is None and not continue_last:
        return (), logs.new_conversation(), None
    if conversation is not None and continue_last:
        raise UsageError("-c goes on with the latest conversation, --cid with a given one: give one of them")
    if raw:
        raise UsageError("Continuing a conversation needs the chat template, and --raw turns it off")
    if conversation is None:
        conversation = logs.latest_conversation()
        if conversation is None:
            raise UsageError("No conversation to continue yet: start one with `aigc text` or `aigc chat`")
    rows = [row for row in logs.history(conversation) if row["modality"] == "text"]
    if not rows:
        raise UsageError(f"No conversation '{conversation}' in the log (`aigc logs` lists them)")
    turns: list[tuple[str, str]] = []
    seen: set[int] = set()
    for row in rows:
        if row["turn"] in seen:  # -n gave several replies: the conversation goes on from the first
            continue
        seen.add(row["turn"])
        turns += [("user", row["prompt"]), ("assistant", row["output"] or "")]
    return tuple(turns), conversation, rows[0]["system"]


def _with_system(resolved: Resolved, system: str) -> Resolved:
    """The settings with the conversation's own system message, where no flag or file gives one."""
    from dataclasses import replace as replaced

    return Resolved(
        replaced(resolved.values, system=system), {**resolved.sources, "system": "flag (conversation)"}
    )


@dataclass
class TextLog:
    """Log rows for the completions of one `aigc text` run (logs.py): one turn of a conversation."""

    prompt: str
    messages: tuple[tuple[str, str], ...]
    conversation: str
    turn: int
    no_log: bool
    command: str = "text"
    folder: str | None = None
    """The model folder that ran (its revision goes in the log), when it ran here."""

    def add(self, record: dict[str, Any], resolved: Resolved, system: str | None) -> None:
        from dataclasses import asdict

        from .. import logs

        ran = {k: v for k, v in asdict(resolved.values).items() if v is not None}
        ran["seed"] = record.get("seed")
        ran["system"] = system
        logs.record_entry(
            {
                "command": self.command,
                "modality": "text",
                "model": record.get("model"),
                "prompt": self.prompt,
                "system": system,
                "messages": [list(m) for m in self.messages] if self.messages else None,
                "settings": {"flags": ran, "record": {k: v for k, v in record.items() if k != "text"}},
                "seed": record.get("seed"),
                "output": record.get("text"),
                "backend": record.get("backend"),
                "device": record.get("device"),
                "dtype": record.get("dtype"),
                "seconds": record.get("seconds"),
                "conversation": self.conversation,
                "turn": self.turn,
                "revision": logs.revision_of(self.folder),
            },
            self.no_log,
        )

    def add_all(self, records: list[dict[str, Any]], resolved: Resolved) -> None:
        for record in records:
            self.add(record, resolved, resolved.values.system)


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
