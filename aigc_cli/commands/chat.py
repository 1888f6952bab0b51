"""`aigc chat`: a conversation with a chat model, each turn through the chat template with the history.

On a terminal: a `>>> ` prompt, replies streamed; `/exit` or Ctrl-D ends, `/clear` starts over, `/system
TEXT` sets the system message, `/help` lists these; a line `\"\"\"` starts and ends a multi-line message.
Ctrl-C stops a reply (it is left out of the history) and returns to the prompt; at the prompt it clears the
line. With stdin not a terminal, each line is a user turn and the replies go to stdout, one after another.
When the conversation no longer fits the model's context, the oldest turns are dropped, with a note.
Each turn is logged (logs.py) as a turn of one conversation, which `aigc text -c` or `--cid` continues.
"""

from __future__ import annotations

import sys
from contextlib import closing
from dataclasses import replace
from typing import Any

from ..console import Console, terminal
from ..errors import UsageError
from ..interrupts import raising
from ..output import end_text, write_text
from ..settings import resolve_settings

HELP = (
    "/exit or Ctrl-D ends; /clear starts over; /system TEXT sets the system message; "
    '""" on a line of its own starts and ends a message of several lines; Ctrl-C stops a reply'
)
FULL_CONTEXT = "The prompt is "
"""How fit_to_context's UsageError starts when the conversation fills the context."""


class Conversation:
    """The turns so far, the system message, and a way to get the next reply (here or on a server)."""

    def __init__(
        self, resolved: Any, console: Console, local: bool, no_log: bool, cid: str | None, last: bool
    ):
        from .text import TextLog, _conversation

        self.resolved = resolved
        self.console = console
        self.no_log = no_log
        turns, self.id, system = _conversation(cid, last, False)
        self.turns: list[tuple[str, str]] = list(turns)
        self.first_turn = len(turns) // 2 + 1
        self.system = resolved.values.system if resolved.values.system is not None else system
        self.log_type = TextLog
        self.engine: Any = None
        self.job: Any = None
        self.server = None
        if not local:
            from ..server.discovery import find_server

            self.server = find_server()

    def load(self) -> None:
        """Load the model here (unless a server runs): a model without a chat template cannot chat."""
        if self.server is not None:
            return
        from ..engines.text import has_chat_template
        from ..pool import default_pool
        from .text import prepare_text

        pool = default_pool()
        self.job = prepare_text(self._settings(), "Hello", self.console, pool)
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
        self.first_turn = 1

    def reply(self, prompt: str) -> None:
        """Stream the reply to `prompt` to stdout and add the turn; drop the oldest turns while the
        conversation does not fit the context."""
        while True:
            messages = (*self.turns, ("user", prompt))
            try:
                record = self._remote(prompt, messages) if self.server is not None else self._here(messages)
            except UsageError as exc:
                if not exc.message.startswith(FULL_CONTEXT) or not self.turns:
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
        turn = self.first_turn + len(self.turns) // 2
        folder = str(self.job.folder) if self.job is not None else None
        log = self.log_type(prompt, messages, self.id, turn, self.no_log, "chat", folder)
        log.add(record, self._settings(), self.system)
        self.turns += [("user", prompt), ("assistant", record["text"])]

    def _here(self, messages: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        from ..engines.text import fit_to_context, stream_text
        from .common import model_errors, pick_seed
        from .text import completion_record

        request = replace(self.job.request, prompt=messages[-1][1], messages=messages, system=self.system)
        request = replace(request, max_tokens=self.resolved.values.max_tokens or 256)
        with model_errors(self.job.label):
            request, _ = fit_to_context(self.engine, request)
        seed = pick_seed(self.resolved.values.seed, Console(quiet=True))
        request = replace(request, seed=seed)
        completion = None
        with model_errors(self.job.label), closing(stream_text(self.engine, request)) as chunks:
            for chunk in chunks:
                write_text(chunk.text)
                completion = chunk.completion
        assert completion is not None
        end_text(completion.text)
        return completion_record(completion, self.job, self.engine)

    def _remote(self, prompt: str, messages: tuple[tuple[str, str], ...]) -> dict[str, Any] | None:
        from ..server.client import remote_text

        records = remote_text(self.server, self._settings(), prompt, True, False, self.console, messages)
        return records[0] if records else None


def read_message(first: str) -> str:
    """A message of several lines: from the line after `\"\"\"` to the next `\"\"\"`."""
    lines = []
    while True:
        line = input("... ")
        if line.strip() == '"""':
            return "\n".join(lines)
        lines.append(line)


def run_chat(
    flags: dict[str, Any],
    console: Console,
    local: bool = False,
    no_log: bool = False,
    cid: str | None = None,
    continue_last: bool = False,
) -> None:
    resolved = resolve_settings("text", flags)
    if resolved.values.raw:
        raise UsageError("aigc chat needs the chat template, and --raw turns it off")
    if (resolved.values.count or 1) > 1:
        raise UsageError("aigc chat gives one reply a turn: leave out -n")
    chat = Conversation(resolved, console, local, no_log, cid, continue_last)
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
                console.info("aigc: reply stopped (left out of the conversation)")
