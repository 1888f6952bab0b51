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
        turns, conversation, system = _conversation(options.conversation, options.continue_last, bool(s.raw))
    if system is not None and resolved.sources.get("system") in (None, "default"):
        resolved = _with_system(resolved, system)
    prompt = read_prompt(options.prompt)
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
