"""`aigc text`: flags -> settings -> core.text (here, or on a running server through the client) -> the
renderer -> stdout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..console import Console
from ..errors import UsageError
from ..interrupts import raising
from ..output import check_stdout
from ..settings import Resolved, resolve_settings
from ..streams import read_prompt


@dataclass(frozen=True)
class TextOptions:
    """What `aigc text` was asked: the prompt argument, the settings flags, and the command's own options."""

    prompt: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    """Setting name -> value, None where the flag was not given (settings.resolve_settings)."""
    stream: bool = True
    as_json: bool = False
    local: bool = False
    no_log: bool = False
    conversation: str | None = None
    """--cid: continue this conversation."""
    continue_last: bool = False
    """-c: continue the latest conversation."""
    history: tuple[tuple[str, str], ...] | None = None
    """Turns given (`aigc logs rerun` of a turn), instead of a conversation from the log."""
    use_stdin: bool = True
    """False with --no-stdin: the argument alone is the prompt."""
    command: str = "text"
    """What the log calls the command."""


def run_text(options: TextOptions, console: Console) -> None:
    """`aigc text`. With -c or --cid the prompt is the next user turn of a conversation in the log, sent
    with its history through the chat template."""
    from .. import logs
    from ..core import text as core_text
    from ..pool import default_pool
    from ..server.discovery import find_server
    from .render import render_text

    check_stdout()  # a closed stdout fails before anything loads
    resolved = resolve_settings("text", options.flags)
    s = resolved.values
    if s.raw and resolved.sources.get("system", "").startswith("flag"):
        raise UsageError("--system needs the chat template, and --raw turns it off: use one or the other")
    from ..core.seeds import check_seeds

    check_seeds(resolved, "text")
    if options.history is not None:
        turns, conversation, system = options.history, logs.new_conversation(), None
    else:
        found = _conversation(options.conversation, options.continue_last, bool(s.raw))
        turns, conversation, system = found.turns, found.id, found.system
        resolved = on_its_model(resolved, options.flags, found, console)
    if system is not None and resolved.sources.get("system") in (None, "default"):
        resolved = _with_system(resolved, system)
    prompt = read_prompt(options.prompt, options.use_stdin, console)
    messages = (*turns, ("user", prompt)) if turns else ()
    turn = len(turns) // 2 + 1
    ran: dict[str, Any] = {"folder": None, "system": resolved.values.system}

    def log(result: Any) -> None:
        logs.log_generation(
            options.command,
            "text",
            result.record,
            resolved.values,
            prompt=prompt,
            messages=messages,
            conversation=conversation,
            turn=turn,
            system=ran["system"],
            folder=ran["folder"],
            no_log=options.no_log,
        )

    events = None
    server = None if options.local else find_server()
    if server is not None:
        from ..client import remote_text

        events = remote_text(server, resolved, prompt, console, messages)
    if events is None:
        pool = default_pool()
        job = core_text.prepare(resolved, prompt, console.reporter(), pool, messages)
        ran.update(folder=str(job.folder), system=job.request.system)
        events = core_text.run(job, pool.get(job.key))
    with raising():
        render_text(events, console, options.stream, options.as_json, log)


@dataclass(frozen=True)
class Found:
    """A conversation to go on with (-c / --cid), or a new one."""

    turns: tuple[tuple[str, str], ...]
    """The history as (role, content) turns; a reply stopped part way is there as far as it went."""
    id: str
    system: str | None = None
    """Its system message."""
    model: str | None = None
    """The model its latest turn ran (the value -m takes); None for a new conversation."""


def _conversation(conversation: str | None, continue_last: bool, raw: bool) -> Found:
    """The conversation that -c / --cid name from the log; no turns and a new id otherwise."""
    from .. import logs

    if conversation is None and not continue_last:
        return Found((), logs.new_conversation())
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
    return Found(tuple(turns), conversation, rows[0]["system"], _model_of(rows[-1]))


def _model_of(row: Any) -> str | None:
    """The model a logged turn ran, as -m names it (the settings kept, else the record's name)."""
    import json

    try:
        model = json.loads(row["settings"] or "{}").get("flags", {}).get("model")
    except (ValueError, AttributeError):
        model = None
    return model if isinstance(model, str) and model else row["model"]


def on_its_model(resolved: Resolved, flags: dict[str, Any], found: Found, console: Console) -> Resolved:
    """A conversation goes on with the model it was held with, over the configured default; -m another
    model runs that one, said in one line."""
    if found.model is None:
        return resolved
    given = flags.get("model")
    if given is None:
        if resolved.values.model == found.model:
            return resolved
        again = resolve_settings("text", {**flags, "model": found.model})
        return Resolved(again.values, {**again.sources, "model": f"conversation {found.id}"})
    if given != found.model:
        console.info(f"aigc: continuing conversation {found.id} with {given} (-m); it was with {found.model}")
    return resolved


def _with_system(resolved: Resolved, system: str) -> Resolved:
    """The settings with the conversation's own system message, where no flag or file gives one."""
    from dataclasses import replace as replaced

    return Resolved(
        replaced(resolved.values, system=system), {**resolved.sources, "system": "flag (conversation)"}
    )
