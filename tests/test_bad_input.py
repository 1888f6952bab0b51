"""Bad input gets a clear answer: each kind of fault found by replaying bug reports of similar tools, as a
real `aigc` process, with the exit code, the stderr line and the stdout bytes asserted."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess

import numpy as np
import pytest
from conftest import AIGC
from inproc import run_cli
from PIL import Image

SMALL = ["--steps", "2", "--width", "64", "--height", "64"]
HAS_ONNX = importlib.util.find_spec("onnxruntime_genai") is not None


def one_error(result, code: int) -> str:
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert err.count("\n") == 1 and err.startswith("aigc: error: ") and "Error:" not in err, err
    return err.removeprefix("aigc: error: ").rstrip("\n")


# --- inputs the model cannot take ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["torch", pytest.param("onnx", marks=pytest.mark.skipif(not HAS_ONNX, reason="no onnx"))]
)
def test_a_prompt_past_the_context_is_refused_alike_on_every_backend(aigc, tiny, backend):
    """tiny-llama reads 512 positions on both backends; the prompt alone is longer: exit 2, nothing out."""
    words = "word " * 600
    assert (
        aigc("text", "hi", "-m", str(tiny["llama"]), "--max-tokens", "1", "--backend", backend).returncode
        == 0
    )
    result = aigc("text", "-m", str(tiny["llama"]), "--max-tokens", "5", "--backend", backend, input=words)
    message = one_error(result, 2)
    assert re.fullmatch(
        r"The prompt is \d+ tokens and the model reads 512 in all \(prompt and reply\): shorten the prompt",
        message,
    ), message
    assert result.stdout == b""


def test_max_tokens_past_the_context_are_capped_and_said(aigc, tiny):
    """tiny-gpt2 has 512 positions: --max-tokens 1000 after a short prompt runs to the end of the context
    (it used to stream 254 tokens and then fail with an IndexError)."""
    args = ["text", "hi", "-m", str(tiny["gpt2"]), "--temperature", "0", "--json"]
    result = aigc(*args, "--max-tokens", "1000")
    record = json.loads(result.stdout)
    assert result.returncode == 0
    room = 512 - record["prompt_tokens"]
    assert record["max_new_tokens"] == room and record["completion_tokens"] <= room
    assert result.stderr.decode() == (
        f"aigc: warning: --max-tokens 1000 capped to {room}: {tiny['gpt2']} reads 512 tokens in all and "
        f"the prompt is {record['prompt_tokens']}\n"
    )
    assert aigc(*args, "--max-tokens", str(room)).stderr == b""  # what fits is not capped


def test_text_a_voice_cannot_say_is_exit_2(aigc, vits):
    message = one_error(aigc("speak", "-m", str(vits), "2024", "-o", "x.wav"), 2)
    assert message == (
        'Nothing in "2024" is in the alphabet of tiny-vits, which drops what it cannot say: '
        "spell numbers and symbols out in words"
    )


# --- bytes that are not UTF-8 ------------------------------------------------------------------------------


def test_an_argument_that_is_not_utf8_reads_as_stdin_does(tiny):
    args = [AIGC.encode(), b"text", b"-m", str(tiny["gpt2"]).encode(), b"--temperature", b"0", b"--json"]
    by_argument = subprocess.run([*args, b"caf\xe9"], capture_output=True, stdin=subprocess.DEVNULL)
    by_stdin = run_cli(*(os.fsdecode(a) for a in args[1:]), input=b"caf\xe9")  # the reference, in-process
    assert by_argument.returncode == 0, by_argument.stderr
    assert by_argument.stderr == b""
    said, read = json.loads(by_argument.stdout), json.loads(by_stdin.stdout)
    assert said["text"] == read["text"] and said["prompt_tokens"] == read["prompt_tokens"]


# --- stdout that cannot be written ------------------------------------------------------------------------------


def test_a_closed_stdout_is_exit_4_before_anything_loads(tiny):
    result = subprocess.run(
        f"'{AIGC}' text hi -m '{tiny['gpt2']}' >&-", shell=True, capture_output=True, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 4
    assert result.stderr.decode() == (
        "aigc: error: Cannot write to stdout: it is closed (`>&-`): give aigc a file or a pipe to write to\n"
    )


@pytest.mark.parametrize(
    "command", [["text", "hi", "--max-tokens", "4"], ["text", "hi", "--json", "--max-tokens", "4"]]
)
def test_a_full_stdout_is_exit_4(tiny, command):
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [AIGC, *command, "-m", str(tiny["gpt2"]), "--temperature", "0"],
            stdout=full,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 4
    assert result.stderr.decode() == "aigc: error: Cannot write to stdout: No space left on device\n"


# --- images read as a viewer shows them; what CLIP drops is said --------------------------------------------


def test_an_init_image_is_used_upright(aigc, pipes, tmp_path):
    """A phone photo stored 80x48 with EXIF orientation 6 is shown upright, 48x80: the output is 48x80,
    and equals the run from the same photo already turned upright."""
    stored = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to view
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    from PIL import ImageOps

    with Image.open(tmp_path / "phone.jpg") as photo:
        upright = ImageOps.exif_transpose(photo)
        upright.save(tmp_path / "upright.png")
    assert upright.size == (48, 80)
    args = ["image", "a fox", "-m", str(pipes["sd"]), "--steps", "2", "--seed", "3"]
    for name in ("phone.jpg", "upright.png"):
        result = aigc(*args, "--init-image", str(tmp_path / name), "-o", f"out-{name}.png")
        assert result.returncode == 0, result.stderr
    with (
        Image.open(tmp_path / "out-phone.jpg.png") as made,
        Image.open(tmp_path / "out-upright.png.png") as ref,
    ):
        assert made.size == (48, 80) and np.array_equal(np.asarray(made), np.asarray(ref))


def test_a_prompt_longer_than_clip_reads_is_said(aigc, pipes):
    prompt = "a red fox in the snow " * 30
    result = aigc("image", prompt, "-m", str(pipes["sd"]), *SMALL, "--seed", "1", "-o", "-")
    assert result.returncode == 0
    warning = result.stderr.decode().splitlines()[0]
    match = re.fullmatch(
        rf"aigc: warning: the prompt is \d+ tokens and {re.escape(str(pipes['sd']))}'s text encoder reads 75: "
        r'about this much is dropped: "(.*)"',
        warning,
    )
    assert match is not None, warning
    dropped = match.group(1).removesuffix(" ...")
    assert dropped and (" " + prompt.strip()).find(" " + dropped) > 0  # whole words, as the user wrote them
    with Image.open(io.BytesIO(result.stdout)) as image:
        assert json.loads(image.text["aigc"])["prompt"] == prompt  # the record keeps all of it


# --- help and completion ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], ["text"], ["image"], ["speak"], ["doctor"], ["models", "list"], ["info"]]
)
def test_help_has_no_stray_characters(command):
    shown = subprocess.run(
        [AIGC, *command, "--help"], capture_output=True, env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"}
    )
    text = shown.stdout.decode()
    assert shown.returncode == 0 and "Usage" in text
    assert not re.search(r" \.(\s|$)", text) and "[default: (" not in text, text


def test_shell_completion_is_offered():
    shown = subprocess.run(
        [AIGC, "--help"], capture_output=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    )
    assert "--install-completion" in shown.stdout.decode()


# --- the second trial as a new user ------------------------------------------------------------------------


def test_non_utf8_bytes_in_other_text_flags(tiny):
    # argv as a real process gets it: the bytes decoded with surrogateescape (os.fsdecode)
    for flag, value in (("--system", b"x\xff"), ("--stop", b"caf\xe9")):
        result = run_cli(
            "text", "hi", "-m", str(tiny["llama"]), "--max-tokens", "3", flag, os.fsdecode(value)
        )
        assert result.returncode == 0 and result.stderr == b"", result.stderr


@pytest.mark.parametrize(("scheduler", "steps"), [("pndm", "1"), ("pndm", "3"), ("lms", "2")])
def test_every_listed_scheduler_runs_with_few_steps(aigc, pipes, scheduler, steps):
    result = aigc("image", "a cat", "-m", str(pipes["sd"]), "--steps", steps, "--width", "64", "--height", "64",
                  "--scheduler", scheduler, "--seed", "1", "-o", "x.png")  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_from_takes_low_memory_from_the_record(aigc, pipes, tmp_path):
    args = ["image", "a cat", "-m", str(pipes["sd"]), *SMALL, "--seed", "2"]
    assert aigc(*args, "--low-memory", "-o", "lm.png").returncode == 0
    again = json.loads(aigc("image", "--from", "lm.png", "-o", "again.png", "--json").stdout)
    assert again["low_memory"] is True
    with Image.open(tmp_path / "lm.png") as a, Image.open(tmp_path / "again.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_bad_line_in_another_section_fails_every_command(aigc, isolated, tiny):
    path = isolated / "aigc-home" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[image]\nwidth = 65\n")
    assert one_error(aigc("text", "hi", "-m", str(tiny["gpt2"])), 2) == (
        f"[image] width in {path} must be a positive multiple of 8 (got 65)"
    )


def test_an_init_image_that_is_not_an_image(aigc, pipes, tmp_path):
    (tmp_path / "notes.md").write_text("# notes\n")
    message = one_error(
        aigc("image", "a cat", "-m", str(pipes["sd"]), "--init-image", "notes.md", "-o", "x.png"), 2
    )
    assert message == "The init image (notes.md) is not an image Pillow can read: give a PNG, JPEG or WebP"


def test_an_output_folder_that_refuses_files_fails_before_generating(aigc, pipes):
    result = aigc("image", "a cat", "-m", str(pipes["sd"]), *SMALL, "-o", "/proc/x.png")
    assert one_error(result, 4) == "Cannot write /proc/x.png: No such file or directory"  # no seed was drawn
