"""Real pipes, a closed pipe, a terminal (pty), and what `--help` imports."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from conftest import AIGC, heavy_imports
from inproc import run_cli
from ptys import run_in_pty


def test_pipeline_text_into_text_into_image(tiny, pipes, tmp_path):
    """`aigc text ... | aigc text -m ... | aigc image ...`: each reads the one before's output as its prompt
    (tee keeps the middle one's bytes; the image's record keeps its prompt)."""
    llama, gpt2 = str(tiny["llama"]), str(tiny["gpt2"])
    flags = "--temperature 0 --max-tokens 10"
    out = tmp_path / "from-text.png"
    image = f"'{AIGC}' image -m '{pipes['sd']}' --steps 2 --width 64 --height 64 -o '{out}'"
    pipeline = (
        f"'{AIGC}' text 'The quick brown fox' -m '{gpt2}' {flags} | '{AIGC}' text -m '{llama}' {flags}"
        f" | tee middle.txt | {image}"
    )
    piped = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr.decode()
    first = run_cli("text", "The quick brown fox", "-m", gpt2, *flags.split())  # the references, in-process
    second = run_cli("text", "-m", llama, *flags.split(), input=first.stdout)
    assert (tmp_path / "middle.txt").read_bytes() == second.stdout and second.stdout
    assert piped.stderr == b""
    record = json.loads(run_cli("info", str(out), "--json").stdout)
    assert record["prompt"] == second.stdout.decode().rstrip("\n")


def test_closed_pipe_ends_quietly(tiny):
    process = subprocess.Popen(
        [AIGC, "text", "Numbers", "-m", str(tiny["gpt2"]), "--temperature", "0", "--max-tokens", "480"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = process.stdout.read(3)
    process.stdout.close()  # like `| head -c 3`
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0
    assert len(first) == 3
    assert err == b""


def test_closed_pipe_in_a_shell(tiny):
    script = (
        f"'{AIGC}' text Numbers -m '{tiny['gpt2']}' --temperature 0 --max-tokens 480 | head -c 10; "
        'echo " status=${PIPESTATUS[0]}"'
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True)
    assert result.stdout.endswith(b" status=0\n")
    assert len(result.stdout) == 10 + len(b" status=0\n")
    assert b"Traceback" not in result.stderr and result.stderr == b""


LIBRARY_BARS = (
    "%|",
    "it/s]",
    "Loading weights",
    "Loading pipeline components",
    "Converting and de-quantizing",
)
CHATTER = ("drawn at random", "backend:", "backend, from", "generating on the server")


def test_a_terminal_shows_the_payload_and_verbose_adds_the_notes(tiny):
    """On a 24x80 terminal a default run shows the text (and aigc's spinner while it loads): no notes, no seed
    line, no library bar. -v adds the notes and the drawn seed, which repeats the run."""
    args = [AIGC, "text", "hello", "-m", str(tiny["llama"]), "--temperature", "0.8", "--max-tokens", "8"]
    shown = run_in_pty(args)
    assert not [word for word in (*CHATTER, *LIBRARY_BARS) if word in shown], shown
    assert all(len(line) <= 80 for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "\n", shown).split("\n"))
    verbose = run_in_pty([*args, "-v"])
    assert "on cpu (float32)" in verbose and "drawn at random" in verbose
    assert not [bar for bar in LIBRARY_BARS if bar in verbose], verbose
    seed = verbose.split("--seed ")[1].split()[0]
    piped = run_cli("text", "hello", "-m", str(tiny["llama"]), "--temperature", "0.8", "--max-tokens", "8",
                    "--seed", seed)  # fmt: skip
    assert piped.stdout.decode().strip() in verbose


def test_no_library_bar_on_a_terminal_for_images_and_speech(pipes, vits, tmp_path):
    for args in (
        [
            "image",
            "a cat",
            "-m",
            str(pipes["sd"]),
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "-o",
            str(tmp_path / "a.png"),
        ],
        ["speak", "Hello there.", "-m", str(vits), "-o", str(tmp_path / "a.wav")],
    ):
        shown = run_in_pty([AIGC, *args])
        assert not [word for word in (*CHATTER, *LIBRARY_BARS) if word in shown], shown


def test_a_prompt_argument_in_a_read_loop_with_no_stdin(tiny, tmp_path):
    """`while read f; do aigc text "...$f"; done < list` runs once per line with --no-stdin (or
    AIGC_NO_STDIN=1); without it a run reads the rest of the file as the prompt's first part. One loop shows
    both: apple's run has --no-stdin, banana's has not and swallows cherry, so two runs for three lines."""
    (tmp_path / "fruits.txt").write_text("apple\nbanana\ncherry\n")
    model = str(tiny["llama"])
    loop = (
        'while read f; do FLAG=; [ "$f" = apple ] && FLAG=--no-stdin; "$AIGC" text "Name the colour of: $f" '
        '-m "$MODEL" --temperature 0 --max-tokens 3 $FLAG --json; done < fruits.txt'
    )
    env = {**os.environ, "AIGC": AIGC, "MODEL": model}
    result = subprocess.run(["bash", "-c", loop], cwd=tmp_path, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    # apple's run left banana and cherry to the loop; banana's took cherry (the documented merge: why the
    # way out exists), so the loop ended there
    assert len(records) == 2
    # AIGC_NO_STDIN=1 does what --no-stdin does: the argument alone is the prompt, stdin is left unread.
    alone = run_cli("text", "Name the colour of: apple", "-m", model, "--temperature", "0", "--max-tokens", "3",
                    "--json", input="banana\n", env={"AIGC_NO_STDIN": "1"})  # fmt: skip
    assert alone.returncode == 0 and json.loads(alone.stdout)["text"] == records[0]["text"]
    merged = run_cli("text", "Name the colour of: banana", "-m", model, "--temperature", "0", "--max-tokens",
                     "3", "--json", input="cherry\n")  # fmt: skip
    assert json.loads(merged.stdout)["text"] == records[1]["text"]
    dash = run_cli("text", "-", "--no-stdin", "-m", model)
    assert dash.returncode == 2
    assert dash.stderr.decode() == (
        "aigc: error: The prompt '-' means stdin, which --no-stdin (or AIGC_NO_STDIN) turns off\n"
    )


@pytest.mark.parametrize(
    "args", [["--help"], ["text", "--help"], ["models", "--help"], ["doctor", "--help"], ["--version"]]
)
def test_help_imports_nothing_heavy(args):
    heavy, result = heavy_imports(
        *args, modules=("torch", "transformers", "diffusers", "numpy", "huggingface_hub", "tomlkit")
    )
    assert heavy == []
    assert b"Usage" in result.stdout or b"aigc 0." in result.stdout


def test_text_help_lists_every_flag():
    result = run_cli("text", "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    for flag in (
        "--model", "--system", "--raw", "--max-tokens", "--temperature", "--top-k", "--top-p",
        "--repetition-penalty", "--stop", "--count", "--seed", "--no-stream", "--json", "--device",
        "--dtype", "--quiet", "--offline", "--trust-remote-code",
    ):  # fmt: skip
        assert flag in result.stdout.decode(), flag


def test_a_silent_stdin_pipe_is_said_on_a_terminal(tiny):
    """`sleep 3 | aigc text hi` on a terminal: a spinner says stdin is awaited (and how to skip it) rather
    than a silent hang; the run goes on when the pipe closes."""
    import threading

    reader, writer = os.pipe()
    threading.Timer(3.0, os.close, (writer,)).start()
    try:
        shown = run_in_pty(
            [AIGC, "text", "hi", "-m", str(tiny["llama"]), "--temperature", "0", "--max-tokens", "3"],
            stdin=reader,
        )
    finally:
        os.close(reader)
    assert "Waiting for stdin (--no-stdin or AIGC_NO_STDIN=1 skips it)" in shown


def test_ctrl_c_under_the_spinner_leaves_a_clean_line_and_the_cursor(tiny):
    """Ctrl-C while the model loads (a spinner on stderr): the spinner's line is cleared, the cursor shown
    again, and the error stands alone."""
    import signal

    sent = []

    def interrupt(shown: bytes, process: subprocess.Popen) -> None:
        if not sent and b"Loading" in shown:
            process.send_signal(signal.SIGINT)
            sent.append(True)

    args = [AIGC, "text", "hi", "-m", str(tiny["llama"]), "--max-tokens", "3"]
    shown = run_in_pty(args, expect=130, react=interrupt)
    assert sent and shown.endswith("\r\x1b[2K\x1b[?25haigc: error: interrupted\n"), shown[-200:]


def test_stdin_switch_values_and_the_empty_prompt_say_why(tiny):
    model = ["-m", str(tiny["llama"])]
    bad = run_cli("text", "hi", *model, env={"AIGC_NO_STDIN": "banana"})
    assert bad.returncode == 2
    assert bad.stderr.decode() == (
        "aigc: error: AIGC_NO_STDIN must be 1 or 0 (true/false, yes/no, on/off; got 'banana')\n"
    )
    empty = run_cli("text", *model, input=b"a piped prompt", env={"AIGC_NO_STDIN": "1"})
    assert empty.returncode == 2
    assert "stdin is left alone: --no-stdin, AIGC_NO_STDIN" in empty.stderr.decode()
