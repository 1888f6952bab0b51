"""Real pipes, a closed pipe, a terminal (pty), and what `--help` imports."""

from __future__ import annotations

import subprocess

import pytest
from conftest import AIGC, heavy_imports
from inproc import run_cli
from ptys import run_in_pty


def test_pipeline_text_into_text(tiny):
    """`aigc text ... | aigc text -m ...`: the second reads the first's output as its prompt."""
    llama, gpt2 = str(tiny["llama"]), str(tiny["gpt2"])
    flags = "--temperature 0 --max-tokens 10"
    pipeline = f"'{AIGC}' text 'The quick brown fox' -m '{gpt2}' {flags} | '{AIGC}' text -m '{llama}' {flags}"
    piped = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, check=True)
    first = run_cli("text", "The quick brown fox", "-m", gpt2, *flags.split())  # the references, in-process
    second = run_cli("text", "-m", llama, *flags.split(), input=first.stdout)
    assert piped.stdout == second.stdout and piped.stdout
    assert piped.stderr == b""


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


def test_terminal_shows_text_notes_and_the_drawn_seed(tiny):
    shown = run_in_pty(
        [AIGC, "text", "hello", "-m", str(tiny["llama"]), "--temperature", "0.8", "--max-tokens", "8"]
    )
    assert "drawn at random" in shown  # the seed, so the run can be repeated
    assert "on cpu (float32)" in shown  # a loading note: stderr is a terminal
    seed = shown.split("--seed ")[1].split()[0]
    piped = run_cli("text", "hello", "-m", str(tiny["llama"]), "--temperature", "0.8", "--max-tokens", "8",
                    "--seed", seed)  # fmt: skip
    assert piped.stdout.decode().strip() in shown


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
