"""`aigc chat`: a conversation with a chat model, each turn through the chat template with the history.

On a terminal: a `>>> ` prompt, replies streamed; `/exit` or Ctrl-D ends, `/clear` starts over, `/system
TEXT` sets the system message, `/help` lists these; a line `\"\"\"` starts and ends a multi-line message.
Ctrl-C stops a reply and returns to the prompt: the reply stays in the history as far as it went (the model
reads what it had said) and is logged with the status `interrupted`; at the prompt Ctrl-C clears the line.
With stdin not a terminal, each line is a user turn and the replies go to stdout, one after another.
When the conversation no longer fits the model's context, the oldest turns are dropped, with a note.
Each turn is logged (logs.py) as a turn of one conversation, which `aigc text -c` or `--cid` continues, on
the model the conversation was held with unless -m names another (then said in one line).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..console import Console, terminal
from ..errors import ContextFull, UsageError
from ..interrupts import raising
from ..output import write_text
from ..settings import resolve_settings
from .text import Found, _conversation, on_its_model

STOPPED = "aigc: reply stopped (it stays in the conversation as far as it went; logged as interrupted)"
HELP = (
    "/exit or Ctrl-D ends; /clear starts over; /system TEXT sets the system message; "
    '""" on a line of its own starts and ends a message of several lines; Ctrl-C stops a reply'
)


class Conversation:
    """The turns so far, the system message, and a way to get the next reply (here or on a server)."""

    def __init__(self, resolved: Any, console: Console, local: bool, no_log: bool, found: Found):
        self.resolved = resolved
        self.console = console
        self.no_log = no_log
        self.id = found.id
        self.turns: list[tuple[str, str]] = list(found.turns)
        self.next_turn = len(found.turns) // 2 + 1
        """The number of the next turn in the log (the history may have dropped its oldest turns)."""
        self.system = resolved.values.system if resolved.values.system is not None else found.system
        self.engine: Any = None
        self.seed: int | None = None
        """The seed of the turn running here, while it runs."""
        self.job: Any = None
        self.server = None
        if not local:
            from ..server.discovery import find_server

            self.server = find_server()

    def load(self) -> None:
        """Load the model here (unless a server runs): a model without a chat template cannot chat."""
        if self.server is not None:
            return
        from ..core import text as core_text
        from ..engines.text import has_chat_template
        from ..pool import default_pool

        pool = default_pool()
        # Each turn draws its own seed (below): the one drawn for loading is not this conversation's.
        self.job = core_text.prepare(self._settings(), "Hello", self.console.reporter(seeds=False), pool)
        self.engine = pool.get(self.job.key)
        if not has_chat_template(self.engine.tokenizer):
            raise UsageError(
                f"{self.job.label} has no chat template, so it cannot hold a conversation: "
                "use `aigc text --raw` with it, or a chat model"
            )

    def _settings(self) -> Any:
        from ..settings import Resolved

        values = replace(self.resolved.values, system=self.system)
        sources = {**self.resolved.sources, "system": "flag (chat)"} if self.system else self.resolved.sources
        return Resolved(values, sources)

    def clear(self) -> None:
        from .. import logs

        self.turns = []
        self.id = logs.new_conversation()
        self.next_turn = 1

    def reply(self, prompt: str) -> None:
        """Stream the reply to `prompt` to stdout and add the turn; drop the oldest turns while the
        conversation does not fit the context. Ctrl-C (KeyboardInterrupt) stops the reply: the turn is
        kept and logged as far as it went, marked interrupted, and the KeyboardInterrupt goes on."""
        while True:
            messages = (*self.turns, ("user", prompt))
            sofar = SoFar()
            self.seed = None
            try:
                if self.server is not None:
                    record = self._remote(prompt, messages, sofar)
                else:
                    record = self._here(messages, sofar)
            except KeyboardInterrupt:
                sofar.stop()
                self._add(prompt, messages, self._stopped(sofar), "interrupted")
                raise
            except ContextFull:
                if not self.turns:
                    raise
                self.turns = self.turns[2:]
                self.console.warn(
                    "the conversation no longer fits the model's context: dropped its oldest turn"
                )
                continue
            if record is None:  # the server will not run it: run here from now on
                self.server = None
                self.load()
                continue
            break
        self._add(prompt, messages, record)

    def _add(
        self,
        prompt: str,
        messages: tuple[tuple[str, str], ...],
        record: dict[str, Any],
        status: str | None = None,
    ) -> None:
        """Log the turn and add it to the history."""
        from .. import logs

        turn, self.next_turn = self.next_turn, self.next_turn + 1
        folder = str(self.job.folder) if self.job is not None and self.server is None else None
        logs.log_generation(
            "chat",
            "text",
            record,
            self._settings().values,
            prompt=prompt,
            messages=messages,
            conversation=self.id,
            turn=turn,
            system=self.system,
            folder=folder,
            status=status,
            no_log=self.no_log,
        )
        self.turns += [("user", prompt), ("assistant", record["text"])]

    def _stopped(self, sofar: SoFar) -> dict[str, Any]:
        """The record of a reply stopped part way: its text and tokens so far, and what ran it."""
        engine = self.engine if self.server is None else None
        model = self.job.label if self.job is not None and self.server is None else self.resolved.values.model
        return {
            "text": sofar.text,
            "model": model,
            "backend": getattr(engine, "backend", None),
            "device": getattr(engine, "device", None),
            "dtype": getattr(engine, "dtype", None),
            "seed": self.seed if engine is not None else None,
            "finish_reason": "interrupted",
            "completion_tokens": sofar.tokens,
        }

    def _here(self, messages: tuple[tuple[str, str], ...], sofar: SoFar) -> dict[str, Any]:
        from ..core import text as core_text
        from ..core.models import model_errors
        from ..core.seeds import draw_seed
        from ..engines.text import fit_to_context
        from .render import render_text

        request = replace(self.job.request, prompt=messages[-1][1], messages=messages, system=self.system)
        request = replace(request, max_tokens=self.resolved.values.max_tokens or 256)
        with model_errors(self.job.label):
            request, _ = fit_to_context(self.engine, request)
        request = replace(request, seed=draw_seed(self.resolved.values.seed)[0])
        self.seed = request.seed if self.job.sampling else None
        events = sofar.track(core_text.run_one(self.job, self.engine, request))
        return render_text(events, self.console, True, False, lambda result: None)[0].record

    def _remote(
        self, prompt: str, messages: tuple[tuple[str, str], ...], sofar: SoFar
    ) -> dict[str, Any] | None:
        from ..client import remote_text
        from ..core.events import SeedChosen
        from .render import render_text

        events = remote_text(self.server, self._settings(), prompt, self.console, messages)
        if events is None:
            return None
        turn = (event for event in events if not isinstance(event, SeedChosen))  # as a turn run here
        return render_text(sofar.track(turn), self.console, True, False, lambda result: None)[0].record


@dataclass
class SoFar:
    """What a reply has said so far (streamed to the terminal): kept when Ctrl-C stops it."""

    text: str = ""
    tokens: int = 0
    events: Any = None

    def track(self, events: Iterable[Any]) -> Iterator[Any]:
        """The events as they are, counting the text and tokens on the way."""
        self.events = self._track(events)
        return self.events

    def _track(self, events: Iterable[Any]) -> Iterator[Any]:
        from ..core.events import TextDelta

        try:
            for event in events:
                if isinstance(event, TextDelta):
                    self.text += event.text
                    # A server's deltas do not count tokens: one streamed delta is one token there.
                    self.tokens = event.tokens or self.tokens + 1
                yield event
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def stop(self) -> None:
        """Stop the generation now (at its next token), before the turn is logged."""
        if self.events is not None:
            self.events.close()


def read_message(first: str) -> str:
    """A message of several lines: from the line after `\"\"\"` to the next `\"\"\"`."""
    lines = []
    while True:
        line = input("... ")
        if line.strip() == '"""':
            return "\n".join(lines)
        lines.append(line)


@dataclass(frozen=True)
class ChatOptions:
    """What `aigc chat` was asked: the settings flags and the command's own options."""

    flags: dict[str, Any] = field(default_factory=dict)
    local: bool = False
    no_log: bool = False
    cid: str | None = None
    """Go on with this conversation."""
    continue_last: bool = False
    """Go on with the latest conversation."""


def run_chat(options: ChatOptions, console: Console) -> None:
    """`aigc chat`: a terminal conversation, or one turn per line of a piped stdin."""
    local, no_log, cid, continue_last = options.local, options.no_log, options.cid, options.continue_last
    resolved = resolve_settings("text", options.flags)
    if resolved.values.raw:
        raise UsageError("aigc chat needs the chat template, and --raw turns it off")
    if (resolved.values.count or 1) > 1:
        raise UsageError("aigc chat gives one reply a turn: leave out -n")
    found = _conversation(cid, continue_last, False)
    resolved = on_its_model(resolved, options.flags, found, console)
    chat = Conversation(resolved, console, local, no_log, found)
    chat.load()
    if not terminal.stdin():
        with raising():
            for line in sys.stdin:
                if line.strip():
                    chat.reply(line.rstrip("\n"))
        return
    _interactive(chat, console)


def _interactive(chat: Conversation, console: Console) -> None:
    import readline  # noqa: F401 (line editing and history for input())

    console.info(f"aigc: chatting with {chat.resolved.values.model} ({HELP})")
    with raising():  # Ctrl-C is a KeyboardInterrupt from now on: it stops a reply, it does not quit
        while True:
            try:
                line = input(">>> ")
            except KeyboardInterrupt:
                write_text("\n")
                continue
            except EOFError:
                write_text("\n")
                return
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit", "/bye"):
                return
            if text == "/help":
                console.info(HELP)
                continue
            if text == "/clear":
                chat.clear()
                console.info("aigc: a new conversation")
                continue
            if text.startswith("/system"):
                chat.system = text.removeprefix("/system").strip() or None
                if chat.engine is not None:
                    from ..engines.text import check_template

                    check_template(chat.engine.tokenizer, False, chat.system)
                console.info(f"aigc: system message {'set' if chat.system else 'removed'}")
                continue
            if text.startswith("/") and text.split()[0] not in ("/exit", "/quit", "/bye", "/help", "/clear"):
                console.info(f"aigc: unknown command {text.split()[0]} ({HELP})")
                continue
            if text == '"""':
                try:
                    text = read_message(text)
                except (KeyboardInterrupt, EOFError):
                    write_text("\n")
                    continue
            try:
                chat.reply(text)
            except KeyboardInterrupt:
                write_text("\n")
                console.info(STOPPED)
