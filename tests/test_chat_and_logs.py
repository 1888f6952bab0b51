"""`aigc chat`, conversations continued with `aigc text -c/--cid`, and the log (`aigc logs`): real processes,
a pty for the chat prompt, a real SQLite file."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import AIGC
from inproc import run_cli
from ptys import cells, plain_env, run_in_pty, screen_lines, sigint_as_a_terminal_gives_it, sized_pty

SMALL_IMAGE = ["--steps", "2", "--width", "64", "--height", "64"]


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr.decode()
    return result


def rows(home: Path) -> list[dict]:
    db = sqlite3.connect(home / "logs.db")
    db.row_factory = sqlite3.Row
    found = [dict(row) for row in db.execute("SELECT * FROM generations ORDER BY id")]
    db.close()
    for row in found:
        for name in ("settings", "messages"):
            if row[name]:
                row[name] = json.loads(row[name])
    return found


def home() -> Path:
    return Path(os.environ["AIGC_HOME"])


def template_tokens(folder: Path, messages: list[list[str]]) -> int:
    """What the chat template makes of the whole history, as transformers counts it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    turns = [{"role": role, "content": content} for role, content in messages]
    ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


# --- chat through a pipe, and conversations continued ---------------------------------------------------------


def test_chat_from_a_pipe_is_a_conversation_that_text_continues(tiny):
    llama = tiny["llama"]
    args = ["-m", str(llama), "--max-tokens", "6", "--temperature", "0"]
    chat = ok(run_cli("chat", *args, input="Hello\n\nHow are you?\n"))
    first, second = rows(home())
    assert chat.stdout.decode() == f"{first['output']}\n{second['output']}\n"
    assert (first["command"], first["turn"], second["turn"]) == ("chat", 1, 2)
    assert first["conversation"] == second["conversation"]
    history = [["user", "Hello"], ["assistant", first["output"]], ["user", "How are you?"]]
    assert second["messages"] == history
    # The second turn read the whole history through the chat template.
    assert second["settings"]["record"]["prompt_tokens"] == template_tokens(llama, history)

    # `aigc text -c` goes on with the latest conversation, `--cid` with a given one.
    more = ok(run_cli("text", "And then?", "-c", *args))
    third = rows(home())[-1]
    assert (third["conversation"], third["turn"], third["command"]) == (first["conversation"], 3, "text")
    history += [["assistant", second["output"]], ["user", "And then?"]]
    assert third["messages"] == history
    assert third["settings"]["record"]["prompt_tokens"] == template_tokens(llama, history)
    assert more.stdout.decode() == third["output"] + "\n"
    ok(run_cli("text", "A new one", *args))  # a conversation of its own
    ok(run_cli("text", "Back to the first", "--cid", first["conversation"], *args))
    fifth = rows(home())[-1]
    assert (fifth["conversation"], fifth["turn"]) == (first["conversation"], 4)

    unknown = run_cli("text", "hi", "--cid", "nope", *args)
    assert unknown.returncode == 2 and "No conversation 'nope' in the log" in unknown.stderr.decode()
    raw = run_cli("text", "hi", "-c", "--raw", *args)
    assert raw.returncode == 2 and "--raw" in raw.stderr.decode()


def test_continue_with_no_log_yet_and_a_model_that_cannot_chat(tiny):
    nothing = run_cli("text", "hi", "-c", "-m", str(tiny["llama"]))
    assert nothing.returncode == 2
    assert nothing.stderr.decode().count("\n") == 1 and "No log yet" in nothing.stderr.decode()
    plain = run_cli("chat", "-m", str(tiny["gpt2"]), input="hi\n")
    assert plain.returncode == 2
    assert "has no chat template" in plain.stderr.decode() and plain.stdout == b""


# --- chat on a terminal ---------------------------------------------------------------------------------------


CTRL_C = b"<Ctrl-C>"


def chat_in_pty(args: list[str], steps: list[tuple], expect: int = 0) -> str:
    """Run `aigc chat` on a terminal; for each (wait_for, send), send once wait_for has shown since the
    last step. Returns what the terminal showed (a 24x80 one)."""
    leader, follower = sized_pty()
    process = subprocess.Popen(
        args,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
        preexec_fn=sigint_as_a_terminal_gives_it,
    )
    os.close(follower)
    shown, mark, deadline = b"", 0, time.monotonic() + 120
    while time.monotonic() < deadline:
        found = shown.find(steps[0][0], mark) if steps else -1
        # A step of three waits for the reply to begin: some output after what it waits for.
        if found >= 0 and (len(steps[0]) == 2 or len(shown) > found + len(steps[0][0])):
            mark = found + len(steps[0][0])
            send = steps.pop(0)[1]
            if send == CTRL_C:  # the child has no controlling terminal here: signal it as a terminal would
                if shown.endswith(b">>> "):
                    time.sleep(0.5)  # at the prompt, as a person would: once it is up and waiting
                process.send_signal(signal.SIGINT)
            else:
                os.write(leader, send)
        ready, _, _ = select.select([leader], [], [], 0.5)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        shown += data
    os.close(leader)
    text = shown.decode("utf-8", errors="replace").replace("\r\n", "\n")
    assert process.wait(timeout=60) == expect, text
    assert not steps, text
    return text


def test_chat_on_a_terminal(tiny):
    args = [
        AIGC,
        "chat",
        "-m",
        str(tiny["llama"]),
        "--max-tokens",
        "200",
        "--temperature",
        "0.9",
        "--seed",
        "1",
    ]
    shown = chat_in_pty(
        args,
        [
            (b">>> ", b"Hello\r"),
            (b">>> ", CTRL_C),  # Ctrl-C at the prompt: a new prompt, not the end
            (b">>> ", b"Tell me everything\r"),
            (b"Tell me everything\r\n", CTRL_C, "once the reply streams"),  # stops the reply
            (b">>> ", b"/system Be brief.\r"),
            (b">>> ", b'"""\r'),
            (b"... ", b"two\r"),
            (b"... ", b'lines\r"""\r'),
            (b">>> ", b"/clear\r"),
            (b">>> ", b"/exit\r"),
        ],
    )
    assert (
        "aigc: reply stopped (it stays in the conversation as far as it went; logged as interrupted)" in shown
    )
    assert "system message set" in shown and "a new conversation" in shown
    turns = rows(home())
    # Hello, the stopped reply as far as it went, and the two-line message; /clear then ended that conversation.
    assert [r["prompt"] for r in turns] == ["Hello", "Tell me everything", "two\nlines"]
    assert [r["status"] for r in turns] == [None, "interrupted", None]
    stopped = turns[1]

    # What the terminal showed before Ctrl-C (the tiny model's text holds control characters: leave them out).
    def printable(text: str) -> str:
        return "".join(c for c in text if c.isprintable())

    assert stopped["output"] and printable(stopped["output"][:12]) in printable(shown)
    assert 0 < stopped["settings"]["record"]["completion_tokens"] < 200
    assert stopped["settings"]["record"]["finish_reason"] == "interrupted"
    assert (stopped["conversation"], stopped["turn"]) == (turns[0]["conversation"], 2)
    # The next turn read the stopped reply: it is the assistant's turn in the history the template was given.
    history = [
        ["user", "Hello"],
        ["assistant", turns[0]["output"]],
        ["user", "Tell me everything"],
        ["assistant", stopped["output"]],
        ["user", "two\nlines"],
    ]
    assert turns[2]["system"] == "Be brief." and turns[2]["messages"] == history
    with_system = [["system", "Be brief."], *history]
    assert turns[2]["settings"]["record"]["prompt_tokens"] == template_tokens(tiny["llama"], with_system)
    listed = ok(run_cli("logs", "-n", "2")).stdout.decode().splitlines()
    assert "[interrupted]" in listed[2] and "[interrupted]" not in listed[1]
    # on a terminal of 80 columns it fits them (tests/test_terminal_tables.py has the rest)
    shown = screen_lines(run_in_pty([AIGC, "logs", "-n", "2"], env=plain_env()))
    assert "[interrupted]" in shown[2] and max(cells(line) for line in shown) <= 80
    ended = chat_in_pty(args, [(b">>> ", b"\x04")])  # Ctrl-D ends too
    assert "chatting with" in ended


def test_a_continued_conversation_keeps_its_model(tiny, tmp_path):
    llama = str(tiny["llama"])
    other = str(shutil.copytree(tiny["llama"], tmp_path / "other-llama"))
    args = ["--max-tokens", "3", "--temperature", "0"]
    ok(run_cli("chat", "-m", other, *args, input="Hello\n"))
    cid = rows(home())[0]["conversation"]
    # Neither -m nor the configured default model (here the environment's) takes the conversation elsewhere.
    on = ok(run_cli("chat", "--cid", cid, *args, input="And then?\n", env={"AIGC_TEXT_MODEL": llama}))
    assert "continuing conversation" not in on.stderr.decode()
    ok(run_cli("text", "Go on", "-c", *args, env={"AIGC_TEXT_MODEL": llama}))
    assert [r["settings"]["flags"]["model"] for r in rows(home())] == [other] * 3
    # -m another model runs it, and says so once.
    switched = ok(run_cli("text", "More", "--cid", cid, "-m", llama, *args))
    notice = f"aigc: continuing conversation {cid} with {llama} (-m); it was with {other}\n"
    assert switched.stderr.decode().count(notice) == 1
    again = ok(run_cli("chat", "-c", "-m", other, *args, input="Back\n"))
    assert f"with {other} (-m); it was with {llama}" in again.stderr.decode()
    models = [(r["turn"], r["settings"]["flags"]["model"]) for r in rows(home())]
    assert models == [(1, other), (2, other), (3, other), (4, llama), (5, other)]


def test_chat_drops_the_oldest_turns_when_the_context_is_full(tiny):
    # The tiny Llama reads 512 tokens: long turns fill it after a few.
    words = " ".join(["lighthouse"] * 60)
    lines = "".join(f"{i} {words}\n" for i in range(6))
    result = ok(run_cli("chat", "-m", str(tiny["llama"]), "--max-tokens", "8", input=lines))
    assert "dropped its oldest turn" in result.stderr.decode()
    assert [r["turn"] for r in rows(home())] == [1, 2, 3, 4, 5, 6]  # the log still numbers every turn
    last = rows(home())[-1]
    assert len(last["messages"]) < 2 * 6 - 1  # not the whole history
    assert last["messages"][-1] == ["user", f"5 {words}"]


# --- the log --------------------------------------------------------------------------------------------------


def test_logs_list_search_show_and_rerun_for_each_modality(tiny, pipes, vits, tmp_path):
    llama = str(tiny["llama"])
    text = ok(
        run_cli("text", "Write about a lighthouse", "-m", llama, "--max-tokens", "8", "--temperature", "0.9")
    )
    ok(run_cli("image", "a red fox", "-m", str(pipes["sd"]), *SMALL_IMAGE, "-o", "fox.png"))
    ok(run_cli("speak", "Hello there.", "-m", str(vits), "-o", "hello.wav"))
    ok(run_cli("text", "not this one", "-m", llama, "--max-tokens", "2", "--no-log"))
    logged = rows(home())
    assert [r["modality"] for r in logged] == ["text", "image", "speech"]
    assert logged[0]["output"] + "\n" == text.stdout.decode()
    assert logged[0]["seed"] is not None  # drawn at random, and kept
    fox = logged[1]
    assert fox["path"] == str(tmp_path / "fox.png") and fox["size"] == (tmp_path / "fox.png").stat().st_size
    import hashlib

    assert fox["sha256"] == hashlib.sha256((tmp_path / "fox.png").read_bytes()).hexdigest()
    assert stat.S_IMODE((home() / "logs.db").stat().st_mode) == 0o600

    listed = ok(run_cli("logs")).stdout.decode().splitlines()
    assert listed[0].split()[:3] == ["ID", "TIME", "COMMAND"] and len(listed) == 4
    found = [
        json.loads(line) for line in ok(run_cli("logs", "-s", "lighthouse", "--json")).stdout.splitlines()
    ]
    assert [r["id"] for r in found] == [logged[0]["id"]]
    only = [
        json.loads(line) for line in ok(run_cli("logs", "--modality", "image", "--json")).stdout.splitlines()
    ]
    assert [r["id"] for r in only] == [fox["id"]]
    assert json.loads(ok(run_cli("logs", "show", str(fox["id"]), "--json")).stdout)["sha256"] == fox["sha256"]

    # rerun: the same text, the same pixels and records, the same samples.
    assert ok(run_cli("logs", "rerun", str(logged[0]["id"]))).stdout == text.stdout
    ok(run_cli("logs", "rerun", str(fox["id"]), "-o", "again.png"))
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "fox.png").read_bytes()
    ok(run_cli("logs", "rerun", str(logged[2]["id"]), "-o", "again.wav"))
    assert (tmp_path / "again.wav").read_bytes() == (tmp_path / "hello.wav").read_bytes()
    missing = run_cli("logs", "rerun", "999")
    assert missing.returncode == 2 and "No generation 999" in missing.stderr.decode()


def test_logs_off_and_on(tiny):
    args = ["text", "hi", "-m", str(tiny["llama"]), "--max-tokens", "2"]
    ok(run_cli(*args))
    assert "logging off" in ok(run_cli("logs", "off")).stdout.decode()
    ok(run_cli(*args))
    assert len(rows(home())) == 1
    status = ok(run_cli("logs", "status")).stdout.decode()
    assert status.startswith("logging off") and "(1 generations)" in status
    ok(run_cli("logs", "on"))
    ok(run_cli(*args))
    assert len(rows(home())) == 2


WRITER = """
import sys
from aigc_cli import logs
logs.record_entry({"command": "text", "modality": "text", "prompt": sys.argv[1], "settings": {}, "output": "x"})
"""


def test_twenty_processes_logging_at_once_lose_nothing():
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, f"prompt {i}"], stderr=subprocess.PIPE)
        for i in range(20)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert all(p.returncode == 0 for p in processes) and not any(errors), errors
    assert sorted(r["prompt"] for r in rows(home())) == sorted(f"prompt {i}" for i in range(20))
    db = sqlite3.connect(home() / "logs.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_a_log_that_cannot_be_written_never_fails_the_generation(tiny):
    args = ["text", "hi", "-m", str(tiny["llama"]), "--max-tokens", "3", "--temperature", "0"]
    expected = ok(run_cli(*args, "--no-log")).stdout
    home().mkdir(parents=True, exist_ok=True)
    (home() / "logs.db").write_bytes(b"this is not a database" * 100)  # damaged
    damaged = run_cli(*args)
    assert damaged.returncode == 0 and damaged.stdout == expected
    assert damaged.stderr.decode().count("warning: the log") == 1
    (home() / "logs.db").unlink()
    (home() / "logs.db").mkdir()  # not a file at all
    blocked = run_cli(*args)
    assert blocked.returncode == 0 and blocked.stdout == expected
    assert "cannot be written" in blocked.stderr.decode()


def test_an_old_log_migrates_forward_and_keeps_its_rows(tiny):
    from aigc_cli import logs

    home().mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(home() / "logs.db")
    for statement in logs._statements(logs.MIGRATIONS[0]):  # the schema of the first version
        old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    old.execute(
        "INSERT INTO generations (time, command, modality, prompt, settings, output) "
        "VALUES ('2026-01-01T00:00:00Z', 'text', 'text', 'from before', '{}', 'an old reply')"
    )
    old.commit()
    old.close()
    ok(run_cli("text", "hi", "-m", str(tiny["llama"]), "--max-tokens", "2"))
    db = sqlite3.connect(home() / "logs.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(logs.MIGRATIONS)
    assert [r[0] for r in db.execute("SELECT prompt FROM generations ORDER BY id")] == ["from before", "hi"]
    assert [r[0] for r in db.execute("SELECT status FROM generations")] == [None, None]  # the column added
    assert ok(run_cli("logs")).stdout.decode().count("\n") == 3
    found = ok(run_cli("logs", "--query", "old reply", "--json")).stdout.splitlines()
    assert [json.loads(line)["prompt"] for line in found] == ["from before"]
    assert logs.revision_of("/cache/models--org--name/snapshots/abc123") == "abc123"
    assert logs.revision_of(str(tiny["llama"])) is None
