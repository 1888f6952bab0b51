"""--help at 80 columns (piped and on a terminal) and shell completion of values, as real processes: the
completion protocol is the one the scripts of `aigc --show-completion` speak (bash: COMP_WORDS and
COMP_CWORD; zsh and fish: _TYPER_COMPLETE_ARGS; each with _AIGC_COMPLETE=complete_<shell>)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import AIGC, heavy_imports
from ptys import run_in_pty

COMMANDS = [
    [], ["text"], ["chat"], ["image"], ["speak"], ["batch"], ["serve"], ["ps"], ["info"], ["verify"], ["doctor"],
    ["logs"], ["logs", "show"], ["logs", "rerun"], ["models"], ["models", "list"], ["models", "pull"],
    ["models", "rm"], ["models", "default"], ["models", "path"],
]  # fmt: skip
TYPER_TYPES = re.compile(r"<(bool|int|float|str|path|list\[\w+\])( range)?>")


def help_of(command: list[str], columns: int = 80) -> str:
    shown = subprocess.run(
        [AIGC, *command, "--help"], capture_output=True, env={**os.environ, "COLUMNS": str(columns)}
    )
    assert shown.returncode == 0 and shown.stderr == b"", shown.stderr
    return shown.stdout.decode()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "aigc")
def test_help_fits_80_columns_and_names_values_as_people_write_them(command):
    shown = help_of(command)
    assert shown.startswith("Usage: aigc")
    assert [line for line in shown.splitlines() if len(line) > 80] == []
    assert TYPER_TYPES.search(shown) is None, shown  # <bool>, <int range>, <list[str]>, <str>...
    assert "4294967295" not in shown and "4294967296" not in shown  # the seed's and -n's bounds are noise


def test_help_reads_the_same_on_an_80_column_terminal_as_in_a_pipe():
    env = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}
    on_terminal = run_in_pty([AIGC, "text", "--help"], columns=80, env=env)
    assert "\x1b[" not in on_terminal  # no colours, no boxes: plain lines
    assert on_terminal.splitlines() == help_of(["text"]).splitlines()


def test_text_help_groups_its_flags_with_their_values_named():
    shown = help_of(["text"])
    headings = [line for line in shown.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings == ["Arguments:", "Model and device:", "Generation:", "Options:"]
    for row in (
        "Usage: aigc text [OPTIONS] [PROMPT]", "  PROMPT  ", "-m, --model MODEL", "--device DEVICE",
        "--dtype DTYPE", "--backend BACKEND", "--max-tokens N", "--temperature X", "--top-k K", "--top-p P",
        "-n, --count N", "--seed N", "--stop TEXT", "--raw / --no-raw", "--cid ID",
    ):  # fmt: skip
        assert row in shown, row


def test_other_commands_name_their_values():
    rows = {
        "image": ["-o, --out FILE", "--init-image FILE", "--width PIXELS", "--scheduler NAME", "--lora LORA[:WEIGHT]"],
        "speak": ["Usage: aigc speak [OPTIONS] [TEXT]", "--format FORMAT", "--sentence-silence SECONDS", "--voice VOICE"],
        "batch": ["JOBS", "-o, --out RESULTS", "--out-dir FOLDER", "--task TASK", "--engine ENGINE", "--workers N"],
        "serve": ["--host ADDRESS", "--port PORT", "--keep-alive DURATION", "--preload MODEL", "--api-key KEY"],
    }  # fmt: skip
    for command, expected in rows.items():
        shown = help_of([command])
        for row in expected:
            assert row in shown, (command, row)
    batch = help_of(["batch"])
    for heading in ("Every job:", "Text jobs:", "Image jobs:", "Speech jobs:"):
        assert f"\n{heading}\n" in batch
    # the flags every task shares, whose default each task has its own of
    assert batch.index("-m, --model MODEL") < batch.index("Text jobs:")
    assert "-m, --model MODEL Alias, Hub repo id or local folder. Default: each task's own." in " ".join(
        batch.split()
    )


def test_the_command_list_is_one_line_each():
    listing = help_of([]).split("\nCommands:\n")[1]
    mine = [line for line in listing.splitlines() if line.split()[0] not in ("models", "logs")]
    assert len(mine) == 11 and all(not line.endswith("...") for line in mine), mine


# --- completion -----------------------------------------------------------------------------------------


def complete(words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash's completion function offers for the last of `words` (an empty last word after a space)."""
    argv = words.split()
    cword = len(argv) if words.endswith(" ") else len(argv) - 1
    shown = subprocess.run(
        [AIGC],
        capture_output=True,
        env={**os.environ, **(env or {}), "_AIGC_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)},
    )  # fmt: skip
    assert shown.returncode == 0 and shown.stderr == b"", shown.stderr
    return shown.stdout.decode().split()


def test_the_bash_script_completes_model_aliases():
    # the script `aigc --show-completion` prints, run by bash as a user's shell runs it on TAB
    script = (
        'eval "$(_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION=1 aigc --show-completion bash)"; '
        "COMP_WORDS=(aigc text -m smo); COMP_CWORD=3; _aigc_completion aigc; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    path = f"{Path(AIGC).parent}:{os.environ['PATH']}"
    shown = subprocess.run(["bash", "-c", script], capture_output=True, env={**os.environ, "PATH": path})
    assert shown.stdout.decode().split() == ["smollm2", "smollm2-135m", "smollm2-360m"], shown.stderr


def test_model_names_are_those_of_the_command():
    assert complete("aigc text -m smo") == ["smollm2", "smollm2-135m", "smollm2-360m"]
    assert "sd-turbo" in complete("aigc image -m sd") and "smollm2" not in complete("aigc image -m ")
    assert "piper-joe" in complete("aigc speak --model ") and "gpt2" not in complete("aigc speak --model ")
    assert {"smollm2", "sd-turbo", "piper-joe"} <= set(complete("aigc batch jobs.jsonl -m "))
    assert complete("aigc text -m ./") == []  # a folder: the shell's own file completion takes over


def test_cached_models_are_offered_by_modality(isolated):
    hub = isolated / "hf-home" / "hub"
    configs = {
        "models--someone--tiny-llama": ("config.json", {"architectures": ["LlamaForCausalLM"]}),
        "models--someone--tiny-sd": ("model_index.json", {"_class_name": "StableDiffusionPipeline"}),
        "models--someone--tiny-vits": ("config.json", {"model_type": "vits"}),
    }
    for repo, (name, content) in configs.items():
        (hub / repo / "snapshots" / "abc").mkdir(parents=True)
        (hub / repo / "snapshots" / "abc" / name).write_text(json.dumps(content))
    voice = hub / "models--rhasspy--piper-voices" / "snapshots" / "abc" / "en" / "en_GB" / "alan" / "low"
    voice.mkdir(parents=True)
    (voice / "en_GB-alan-low.onnx.json").write_text("{}")
    assert complete("aigc text -m someone/") == ["someone/tiny-llama"]
    assert complete("aigc image -m someone/") == ["someone/tiny-sd"]
    assert complete("aigc speak -m someone/") == ["someone/tiny-vits"]
    assert complete("aigc speak -m en_GB") == ["en_GB-alan-low"]
    assert "en_GB-alan-low" not in complete("aigc text -m ")


def test_choices_complete():
    assert complete("aigc text --backend ") == ["auto", "torch", "onnx"]
    assert complete("aigc image --backend ") == ["auto", "torch", "openvino"]
    assert complete("aigc batch jobs.jsonl --backend ") == ["auto", "torch", "onnx", "openvino"]
    assert complete("aigc speak --format ") == ["wav", "flac", "ogg", "mp3", "opus", "aac", "raw"]
    assert complete("aigc speak --format o") == ["ogg", "opus"]
    assert complete("aigc text --dtype ") == ["auto", "float32", "float16", "bfloat16"]
    assert complete("aigc text --precision ") == ["fp32", "int4"]
    assert complete("aigc image --device ") == ["auto", "cpu", "cuda", "mps", "xpu"]
    assert complete("aigc doctor --device c") == ["cpu", "cuda"]
    assert complete("aigc image --scheduler dpm") == ["dpm++", "dpm++-karras", "dpm++-sde"]
    assert complete("aigc batch jobs.jsonl --task ") == ["text", "image", "speech"]
    assert complete("aigc batch jobs.jsonl --engine ") == ["local", "ray"]


def test_voice_completes_the_speakers_of_the_piper_voice_named(isolated):
    voice = isolated / "voice"
    voice.mkdir()
    (voice / "many.onnx").write_bytes(b"")
    (voice / "many.onnx.json").write_text(json.dumps({"speaker_id_map": {"bob": 1, "alice": 0, "carol": 2}}))
    assert complete(f"aigc speak -m {voice} --voice ") == ["alice", "bob", "carol"]
    assert complete("aigc speak --voice ") == []  # the embedded joe has one speaker, no names


def test_zsh_and_fish_get_values_with_what_they_are():
    zsh = subprocess.run(
        [AIGC],
        capture_output=True,
        env={**os.environ, "_AIGC_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "aigc text -m smollm2-3"},
    )  # fmt: skip
    assert zsh.stdout.decode().startswith('_arguments \'*: :(("smollm2-360m":"SmolLM2 360M Instruct"')
    fish = subprocess.run(
        [AIGC],
        capture_output=True,
        env={**os.environ, "_AIGC_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args",
             "_TYPER_COMPLETE_ARGS": "aigc speak --format w"},
    )  # fmt: skip
    assert fish.stdout.decode().split() == ["wav"]


@pytest.mark.parametrize("words", ["aigc text -m ", "aigc speak --voice ", "aigc image --scheduler "])
def test_completion_imports_nothing_heavy(words):
    env = {"_AIGC_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()))}
    heavy, result = heavy_imports(env=env, modules=("torch", "transformers", "diffusers", "numpy", "PIL"))
    assert heavy == [] and result.returncode == 0, result.stderr
