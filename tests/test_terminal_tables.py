"""The tables of `aigc logs` and `aigc models list` on a terminal of 24x80 (and narrower): no line wider
than the terminal, ids, times and sizes whole, conversation ids shown; in a pipe every value whole and the
same whatever COLUMNS says; --json unchanged. `aigc logs -q` is --quiet, -s/--search (and --query) search;
the command line's own ranges answer in aigc's words."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import AIGC
from inproc import run_cli
from ptys import cells, plain_env, run_in_pty, screen_lines

from aigc_cli.commands.table import Column, render

CID = "a1b2c3d4e5f6"
LONG_PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle " * 3
ESCAPED = "Once upon a time\nthere was a keeper. \x1b[31mred\x1b[0m " * 5
WIDE_PROMPT = "日本語のテキストをたくさん書いてください"
FOXES = "🦊 " * 40
FILE = "/tmp/out/a-red-fox-in-the-snow-watercolor-1.png"
LOG_HEADER = ["ID", "TIME", "COMMAND", "MODEL", "CONVERSATION", "PROMPT", "OUTPUT"]


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result


def log_rows() -> None:
    """Three rows as aigc logs them: a text turn with a long prompt and an output holding newlines and an
    escape sequence, the conversation's second turn (a chat reply stopped part way, in wide characters),
    and an image."""
    from aigc_cli import logs

    entries = [
        {
            **{
                "command": "text",
                "modality": "text",
                "model": "/models/a-tiny-llama-with-a-long-folder-name",
            },
            **{"prompt": LONG_PROMPT, "output": ESCAPED, "conversation": CID, "turn": 1},
        },
        {
            **{"command": "chat", "modality": "text", "model": "smollm2", "prompt": WIDE_PROMPT},
            **{"output": FOXES, "conversation": CID, "turn": 2, "status": "interrupted"},
        },
        {
            **{"command": "image", "modality": "image", "model": "stabilityai/sd-turbo"},
            **{"prompt": "a red fox in the snow, watercolor, highly detailed", "path": FILE},
        },
    ]
    for entry in entries:
        assert logs.record_entry({"settings": {}, **entry}) is not None


def fits(shown: str, columns: int) -> list[str]:
    lines = screen_lines(shown)
    assert lines and max(cells(line) for line in lines) <= columns, "\n".join(lines)
    return lines


# --- aigc logs -------------------------------------------------------------------------------------------


def test_logs_fit_an_80_column_terminal_and_show_conversation_ids():
    log_rows()
    shown = run_in_pty([AIGC, "logs"], env=plain_env())
    assert "\x1b[31m" not in shown  # an escape sequence in a model's output never reaches the terminal
    lines = fits(shown, 80)
    assert lines[0].split() == LOG_HEADER and len(lines) == 4
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == ["3", "2", "1"]  # newest first, ids whole
    for fields in rows.values():
        assert re.fullmatch(r"\d\d-\d\d", fields[1]) and re.fullmatch(r"\d\d:\d\d", fields[2])
    # the conversation id, whole: the one --cid takes; an image belongs to none
    assert (rows["1"][5], rows["2"][5], rows["3"][5]) == (CID, CID, "-")
    assert (rows["1"][3], rows["2"][3], rows["3"][3]) == ("text", "chat", "image")
    text, chat = lines[3], lines[2]
    assert "Write a long" in text and "…" in text and "Once upon" in text
    assert WIDE_PROMPT[:4] in chat and "[interrupted] 🦊" in chat
    # narrower and wider terminals: still within the width, the ids whole
    for columns in (50, 132):
        lines = fits(run_in_pty([AIGC, "logs"], columns=columns, env=plain_env()), columns)
        assert [line.split()[5] for line in lines[1:]] == ["-", CID, CID]
    assert "Write a long story about a lighthouse" in lines[3]  # a wider terminal shows more of it


def test_a_conversation_id_the_log_shows_is_one_cid_takes(tiny):
    args = ["-m", str(tiny["llama"]), "--max-tokens", "2", "--temperature", "0"]
    ok(run_cli("text", "Hello", *args))
    lines = fits(run_in_pty([AIGC, "logs"], env=plain_env()), 80)
    cid = lines[1].split()[5]
    assert re.fullmatch(r"[0-9a-f]{12}", cid)
    ok(run_cli("text", "And then?", "--cid", cid, *args))
    listed = [json.loads(line) for line in ok(run_cli("logs", "--json")).stdout.splitlines()]
    assert [(r["conversation"], r["turn"]) for r in listed] == [(cid, 2), (cid, 1)]


def test_logs_in_a_pipe_are_whole_and_json_is_unchanged():
    log_rows()
    piped = ok(run_cli("logs")).stdout.decode()
    assert ok(run_cli("logs", env={"COLUMNS": "40"})).stdout.decode() == piped  # no terminal, no width
    lines = piped.splitlines()
    assert lines[0].split() == LOG_HEADER and len(lines) == 4
    assert " ".join(LONG_PROMPT.split()) in lines[3]  # one line per row, every value whole
    assert "Once upon a time there was a keeper. \ufffd[31mred\ufffd[0m" in lines[3]
    assert "\x1b" not in piped and "…" not in piped
    assert WIDE_PROMPT in lines[2] and lines[2].endswith(f"  [interrupted] {FOXES.strip()}")
    assert lines[1].endswith(Path(FILE).name)
    assert [line.split()[5] for line in lines[1:]] == ["-", CID, CID]
    rows = [json.loads(line) for line in ok(run_cli("logs", "--json")).stdout.splitlines()]
    assert [r["id"] for r in rows] == [3, 2, 1]
    assert rows[2]["output"] == ESCAPED and rows[2]["prompt"] == LONG_PROMPT  # the values as logged
    assert [r["conversation"] for r in rows] == [None, CID, CID] and rows[1]["status"] == "interrupted"
    assert rows[0]["path"] == FILE


def test_logs_q_is_quiet_and_s_or_query_searches():
    empty = ok(run_cli("logs"))
    assert "no generations logged yet" in empty.stderr.decode() and empty.stdout == b""
    quiet = ok(run_cli("logs", "-q"))
    assert quiet.stderr == b"" and quiet.stdout == b""
    log_rows()
    for flag in ("-s", "--search", "--query"):
        found = ok(run_cli("logs", flag, "lighthouse", "--json")).stdout.splitlines()
        assert [json.loads(line)["id"] for line in found] == [1], flag
    assert ok(run_cli("logs", "-q", "--query", "red fox", "-n", "5")).stdout.decode().count("\n") == 2
    missing = ok(run_cli("logs", "-s", "walrus"))
    assert missing.stderr.decode() == "aigc: no generations logged match 'walrus'\n"
    assert ok(run_cli("logs", "-s", "walrus", "--quiet")).stderr == b""
    # llm's `logs -q WORDS`: -q is --quiet here, and the word is no command: the line says how to search
    old = run_cli("logs", "-q", "lighthouse")
    err = old.stderr.decode()
    assert old.returncode == 2 and err.count("\n") == 1 and "aigc logs -s lighthouse" in err, err
    # rerun's -q was already --quiet
    shown = ok(run_cli("logs", "rerun", "--help", env={"COLUMNS": "200"})).stdout.decode()
    assert any(re.search(r"(^|\s)-q\b", line) and "--quiet" in line for line in shown.splitlines()), shown


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["logs", "-n", "0"], "--count must be at least 1 (got 0)"),
        (["logs", "--count", "-3", "--json"], "--count must be at least 1 (got -3)"),
        (["serve", "--port", "70000"], "--port must be at most 65535 (got 70000)"),
        (["serve", "--port", "-1"], "--port must be at least 0 (got -1)"),
        (["batch", "jobs.jsonl", "--workers", "0"], "--workers must be at least 1 (got 0)"),
        (["batch", "jobs.jsonl", "--max-line-bytes", "0"], "--max-line-bytes must be at least 1 (got 0)"),
    ],
)
def test_range_errors_are_one_line_naming_the_flag(args, line):
    result = run_cli(*args)
    assert (result.returncode, result.stderr.decode(), result.stdout) == (2, f"aigc: error: {line}\n", b"")


def test_logs_n_0_as_a_real_process():
    from conftest import run_aigc

    result = run_aigc("logs", "-n", "0")
    assert (result.returncode, result.stderr, result.stdout) == (
        2,
        b"aigc: error: --count must be at least 1 (got 0)\n",
        b"",
    )


# --- aigc models list ------------------------------------------------------------------------------------

LONG_REPO = "some-organisation/a-rather-long-model-name-for-the-list-v2"


def cache_model(hf_home: Path, repo: str) -> None:
    """A text model (its config.json only) in the Hugging Face cache's layout, as a download leaves it."""
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "blobs").mkdir()
    blob = folder / "blobs" / "0123abcd"
    blob.write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    (folder / "snapshots" / "abc123" / "config.json").symlink_to(blob)


def test_models_list_fits_the_terminal_and_is_whole_in_a_pipe(isolated):
    from aigc_cli.catalog import human_size

    cache_model(isolated / "hf-home", LONG_REPO)
    listed = [json.loads(line) for line in ok(run_cli("models", "list", "--json")).stdout.splitlines()]
    assert LONG_REPO in [r["name"] for r in listed]
    lines = fits(run_in_pty([AIGC, "models", "list"], env=plain_env()), 80)
    assert lines[0].split() == ["NAME", "MODALITY", "SOURCE", "STATUS", "SIZE", "LICENSE", "REPO"]
    assert len(lines) == 1 + len(listed)
    for row, line in zip(listed, lines[1:], strict=True):
        status = "offline" if row["offline"] else "download"
        if row["name"] == LONG_REPO:  # longer than the terminal leaves it: cut, at its end
            assert line.startswith("some-organisation/a-") and "… text" in line
        else:  # a name is what -m takes: whole
            assert line.split()[:4] == [row["name"], row["modality"], row["source"], status]
        if row["offline"]:
            assert f" {human_size(row['size'])} " in line  # sizes whole
    assert any("…" in line for line in lines)  # long repo ids give way
    # a narrow terminal: still within it
    fits(run_in_pty([AIGC, "models", "list"], columns=60, env=plain_env()), 60)
    # piped: whole, and the same whatever COLUMNS says
    piped = ok(run_cli("models", "list")).stdout.decode()
    assert ok(run_cli("models", "list", env={"COLUMNS": "50"})).stdout.decode() == piped
    assert "…" not in piped and f"{LONG_REPO}  text" in piped
    assert "espnet/fastspeech2_conformer_with_hifigan" in piped


def test_models_list_of_voices_fits_80_columns():
    lines = fits(run_in_pty([AIGC, "models", "list", "--modality", "speech"], env=plain_env()), 80)
    assert lines[0].split() == [
        "NAME", "MODALITY", "SOURCE", "STATUS", "SIZE", "LANGUAGE", "SPEAKERS", "LICENSE", "REPO"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]][:3] == ["piper-joe", "mms-eng", "vits-ljs"]


# --- the table itself ------------------------------------------------------------------------------------


def test_a_table_never_passes_its_width():
    columns = [Column("ID", right=True), Column("WHEN"), Column("NAME", give=1), Column("TEXT", give=2)]
    rows = [(7, "05-14 10:22", "日本語のモデル名前", "🦊 fox " * 30), (12345, "05-14 10:23", "m", "")]
    for width in range(1, 140):
        lines = render(columns, rows, width)
        assert max(cells(line) for line in lines) <= width, (width, lines)
        if width >= 40:
            assert lines[2].split()[:3] == ["12345", "05-14", "10:23"]  # whole where there is room
    assert render(columns, rows, None)[1].endswith(("🦊 fox " * 30).strip())  # no width: whole
