"""`aigc image` and `aigc info` through real processes on tiny SD and SDXL pipelines."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import raw
from conftest import AIGC
from inproc import run_cli
from PIL import Image
from ptys import run_in_pty

SMALL = ["--steps", "2", "--width", "64", "--height", "64"]


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_pixels_equal_raw_diffusers(aigc, pipes, tmp_path, kind):
    out = tmp_path / "fox.png"
    ok(
        aigc(
            "image",
            "a red fox",
            "-m",
            str(pipes[kind]),
            *SMALL,
            "--seed",
            "7",
            "--negative",
            "blurry",
            "-o",
            str(out),
        )
    )
    expected = raw.image(
        pipes[kind], "a red fox", 7, negative_prompt="blurry", num_inference_steps=2, width=64, height=64
    )
    assert np.array_equal(pixels(out), expected)


def test_count_numbers_files_and_uses_seed_plus_i(aigc, pipes, tmp_path):
    out = tmp_path / "fox.png"
    result = ok(
        aigc(
            "image",
            "a red fox",
            "-m",
            str(pipes["sd"]),
            *SMALL,
            "-n",
            "3",
            "--seed",
            "7",
            "-o",
            str(out),
            "--json",
        )
    )
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["seed"] for r in records] == [7, 8, 9]
    assert [r["path"] for r in records] == [str(tmp_path / f"fox-{i}.png") for i in (1, 2, 3)]
    assert not out.exists()
    for record in records:
        expected = raw.image(
            pipes["sd"], "a red fox", record["seed"], num_inference_steps=2, width=64, height=64
        )
        assert np.array_equal(pixels(record["path"]), expected)
    assert records[0]["model"] == str(pipes["sd"]) and records[0]["steps"] == 2 and records[0]["seconds"] > 0


def test_image_to_image_equals_raw(aigc, pipes, tmp_path):
    start = tmp_path / "start.png"
    gradient = np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint8)
    Image.fromarray(gradient).save(start)
    args = ["--init-image", str(start), "--strength", "0.6", "--steps", "4", "--seed", "3"]
    ok(aigc("image", "a cat", "-m", str(pipes["sd"]), *args, "-o", str(tmp_path / "a.png")))
    expected = raw.image(
        pipes["sd"], "a cat", 3, image=Image.open(start).convert("RGB"), strength=0.6, num_inference_steps=4
    )
    assert np.array_equal(pixels(tmp_path / "a.png"), expected)
    args[1] = "-"
    ok(
        aigc(
            "image",
            "a cat",
            "-m",
            str(pipes["sd"]),
            *args,
            "-o",
            str(tmp_path / "b.png"),
            input=start.read_bytes(),
        )
    )
    assert np.array_equal(pixels(tmp_path / "b.png"), expected)
    record = json.loads(ok(aigc("info", str(tmp_path / "a.png"), "--json")).stdout)
    assert record["strength"] == 0.6 and record["init_image"] == "start.png"
    assert record["parameters"].endswith("Denoising strength: 0.6")


def test_scheduler_choice_equals_raw(aigc, pipes, tmp_path):
    out = tmp_path / "a.png"
    ok(
        aigc(
            "image",
            "a cat",
            "-m",
            str(pipes["sd"]),
            *SMALL,
            "--seed",
            "1",
            "--scheduler",
            "euler-a",
            "-o",
            str(out),
        )
    )
    expected = raw.image(
        pipes["sd"],
        "a cat",
        1,
        scheduler="EulerAncestralDiscreteScheduler",
        num_inference_steps=2,
        width=64,
        height=64,
    )
    assert np.array_equal(pixels(out), expected)
    assert json.loads(ok(aigc("info", str(out), "--json")).stdout)["sampler"] == "Euler a"


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_formats_record_their_parameters(aigc, pipes, tmp_path, suffix):
    out = tmp_path / f"fox{suffix}"
    args = [
        "image",
        "a red fox",
        "-m",
        str(pipes["sd"]),
        *SMALL,
        "--seed",
        "7",
        "--negative",
        "blurry",
        "-o",
        str(out),
    ]
    ok(aigc(*args))
    with Image.open(out) as image:
        assert image.format == {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}[suffix]
    record = json.loads(ok(aigc("info", str(out), "--json")).stdout)
    assert record["prompt"] == "a red fox" and record["negative"] == "blurry" and record["seed"] == 7
    assert (record["steps"], record["width"], record["height"]) == (2, 64, 64)
    assert record["parameters"] == (
        f"a red fox\nNegative prompt: blurry\nSteps: 2, Sampler: Euler, CFG scale: 7.5, Seed: 7, Size: 64x64, "
        f"Model hash: {record['model_hash']}, Model: tiny-sd"  # a local model by its name, not its path
    )
    assert len(record["model_hash"]) == 10 and record["model"] == record["source"] == "tiny-sd"
    human = ok(aigc("info", str(out))).stdout.decode()
    assert re.search(r"^prompt +a red fox$", human, re.M) and "Seed: 7" in human
    if suffix == ".png":  # other tools read the A1111 chunk
        with Image.open(out) as image:
            assert image.text["parameters"] == record["parameters"]


def test_from_reproduces_the_same_pixels(aigc, pipes, tmp_path):
    first = tmp_path / "first.png"
    ok(
        aigc(
            "image",
            "a lighthouse",
            "-m",
            str(pipes["sd"]),
            *SMALL,
            "--seed",
            "5",
            "--guidance",
            "3",
            "-o",
            str(first),
        )
    )
    again = tmp_path / "again.png"
    ok(aigc("image", "--from", str(first), "-o", str(again)))
    assert np.array_equal(pixels(again), pixels(first))
    other = tmp_path / "other.png"
    ok(aigc("image", "--from", str(first), "--seed", "6", "-o", str(other)))
    expected = raw.image(
        pipes["sd"], "a lighthouse", 6, num_inference_steps=2, width=64, height=64, guidance_scale=3.0
    )
    assert np.array_equal(pixels(other), expected)


def test_stdout_pipe_gets_one_png(pipes):
    script = (
        f"'{AIGC}' image 'a red fox' -m '{pipes['sd']}' {' '.join(SMALL)} --seed 7 -o - | "
        f"'{sys.executable}' -c \"import sys, io; from PIL import Image; "
        "im = Image.open(io.BytesIO(sys.stdin.buffer.read())); print(im.format, im.size, im.text['aigc'][:9])\""
    )
    result = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == 'PNG (64, 64) {"kind": \n'
    plain = run_cli("image", "a red fox", "-m", str(pipes["sd"]), *SMALL, "--seed", "7")  # no -o: bytes too
    assert plain.stdout.startswith(b"\x89PNG") and plain.stderr == b""
    expected = raw.image(pipes["sd"], "a red fox", 7, num_inference_steps=2, width=64, height=64)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(plain.stdout)).convert("RGB")), expected)


def test_terminal_gets_new_auto_named_files(pipes, tmp_path, monkeypatch):
    args = [AIGC, "image", "A red fox!", "-m", str(pipes["sd"]), *SMALL, "--seed", "7"]
    first = re.search(r"/\S+\.png", run_in_pty(args)).group(0)  # a real terminal
    assert first == str(tmp_path / "a-red-fox-7.png")
    # The rest through the terminal seam (aigc_cli.terminal), in-process: stdout is a terminal.
    from aigc_cli.terminal import terminal

    monkeypatch.setattr(terminal, "stdout", lambda: True)
    again = ok(run_cli(*args[1:]))
    assert again.stdout.decode() == f"{tmp_path / 'a-red-fox-7-2.png'}\n"  # never overwritten
    assert np.array_equal(pixels(first), pixels(tmp_path / "a-red-fox-7-2.png"))
    refused = run_cli(*args[1:], "-o", "-")
    assert refused.returncode == 2 and refused.stdout == b""
    assert refused.stderr.decode() == (
        "aigc: error: Not writing PNG bytes to a terminal: pipe stdout somewhere, or use -o FILE\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "65"], "--width must be a positive multiple of 8 (got 65)"),
        (["--scheduler", "warp"], "Unknown scheduler 'warp': use one of euler, euler-a"),
        (["-o", "x.gif"], "Cannot tell the image format of 'x.gif'"),
        (["-n", "2", "-o", "-"], "-o - writes one PNG to stdout"),
        (["-n", "2"], "Several images cannot go to one stream"),
        (["--strength", "0.5"], "--strength needs --init-image"),
        (["--init-image", "missing.png"], "No such file: missing.png (--init-image)"),
    ],
)
def test_usage_errors_exit_2(aigc, pipes, args, message):
    result = aigc("image", "a fox", "-m", str(pipes["sd"]), *SMALL, *args)
    assert result.returncode == 2, result.stderr
    err = result.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("aigc: error: ") and message in err
    assert result.stdout == b""


def test_models_that_are_not_available_exit_3(aigc, tiny):
    cases = [
        (["-m", str(tiny["llama"])], "is a llama model (LlamaForCausalLM), not a text-to-image pipeline"),
        (["-m", "gpt2"], "'gpt2' is a text model, not an image model"),
        ([], "Model 'sd-turbo' is not cached and offline mode is on: run `aigc models pull sd-turbo` online"),
    ]
    for args, message in cases:
        result = aigc("image", "a fox", *args, "-o", "x.png")
        assert result.returncode == 3
        assert message in result.stderr.decode() and result.stderr.decode().count("\n") == 1


def test_unwritable_output_exit_4_and_no_partial_file(aigc, pipes, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        for target in (locked / "x.png", tmp_path / "no-such-dir" / "x.png"):
            result = aigc("image", "a fox", "-m", str(pipes["sd"]), *SMALL, "-o", str(target))
            if os.geteuid() == 0 and target.parent == locked:
                continue  # root writes anywhere
            assert result.returncode == 4, result.stderr
            assert result.stderr.decode() in (  # found before any generation: no seed drawn, nothing loaded
                f"aigc: error: Cannot write {target}: No such file or directory\n",
                f"aigc: error: Cannot write {target}: Permission denied\n",
            )
        assert list(locked.iterdir()) == [] or os.geteuid() == 0
    finally:
        locked.chmod(0o700)


def test_low_memory_equals_raw_with_the_same_savings(aigc, pipes, tmp_path):
    from diffusers import AutoPipelineForText2Image

    out = tmp_path / "low.png"
    ok(aigc("image", "a cat", "-m", str(pipes["sd"]), *SMALL, "--seed", "2", "--low-memory", "-o", str(out)))
    pipe = AutoPipelineForText2Image.from_pretrained(pipes["sd"])
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_attention_slicing()
    pipe.vae.enable_tiling()
    import torch

    expected = pipe(
        "a cat", num_inference_steps=2, width=64, height=64, generator=torch.Generator("cpu").manual_seed(2)
    )
    assert np.array_equal(pixels(out), np.asarray(expected.images[0]))
    assert json.loads(ok(aigc("info", str(out), "--json")).stdout)["low_memory"] is True
