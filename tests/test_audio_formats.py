"""MP3, Opus and AAC speech (output.encode_audio): each file decodes back to the sine it was made from, at the
rate the codec takes; the record reads back where the container has tags; `aigc speak` writes them."""

from __future__ import annotations

import io
import json
import sys

import av
import numpy as np
import pytest
import soundfile

from aigc_cli.errors import OutputError
from aigc_cli.output import AUDIO_MEDIA_TYPES, encode_audio, plan_output

RATE = 22050  # a Piper voice's rate: not one Opus takes
RECORD = {"kind": "speech", "text": "Héllo wörld, 世界.", "model": "tiny", "seed": 7, "aigc_version": "0.1.0"}


def sine(rate: int = RATE, seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """(mono float samples, rate): soundfile for mp3 and opus, PyAV for the ADTS AAC stream."""
    if fmt != "aac":
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
        return samples, rate
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name == "aac"
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return np.concatenate(frames), stream.sample_rate


def pitch(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


@pytest.mark.parametrize(
    ("fmt", "rate", "head"), [("mp3", RATE, b"ID3"), ("opus", 48000, b"OggS"), ("aac", RATE, b"\xff\xf1")]
)
def test_each_format_decodes_back_to_the_sine(fmt, rate, head):
    data = encode_audio(sine(), RATE, fmt, RECORD)
    assert data.startswith(head)
    samples, found_rate = decode(data, fmt)
    assert found_rate == rate
    assert abs(len(samples) / found_rate - 1.0) < 0.1  # AAC adds priming and padding (~0.07 s)
    assert np.sqrt(np.mean(samples**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.15)
    assert pitch(samples, found_rate) == pytest.approx(440, abs=5)


def test_the_record_reads_back_from_mp3_and_opus_tags():
    for fmt in ("mp3", "opus"):
        with soundfile.SoundFile(io.BytesIO(encode_audio(sine(), RATE, fmt, RECORD))) as f:
            assert json.loads(f.comment) == RECORD
            assert f.artist == "tiny"
            # ID3 text as LAME writes it is Latin-1: the mp3 title is kept ASCII; Vorbis comments are UTF-8
            assert f.title == ("Hello world, ??." if fmt == "mp3" else RECORD["text"])
    with av.open(io.BytesIO(encode_audio(sine(), RATE, "mp3", RECORD))) as container:  # as FFmpeg reads it
        assert json.loads(container.metadata["comment"]) == RECORD


@pytest.mark.parametrize(
    ("fmt", "rate", "written"), [("opus", 16000, 16000), ("mp3", 25000, 32000), ("aac", 25000, 32000)]
)
def test_a_rate_the_codec_cannot_take_is_resampled_up(fmt, rate, written):
    samples, found_rate = decode(encode_audio(sine(rate), rate, fmt, RECORD), fmt)
    assert found_rate == written
    assert pitch(samples, found_rate) == pytest.approx(440, abs=5)


def test_aac_without_pyav_names_the_remedy(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError, find_spec says None
    for attempt in (lambda: encode_audio(sine(), RATE, "aac", RECORD), lambda: plan_output("audio", "x.aac")):
        with pytest.raises(OutputError, match=r"pip install av"):
            attempt()


def test_media_types():
    assert AUDIO_MEDIA_TYPES["mp3"] == "audio/mpeg" and AUDIO_MEDIA_TYPES["aac"] == "audio/aac"
    assert AUDIO_MEDIA_TYPES["opus"] == "audio/ogg; codecs=opus"


def test_speak_writes_mp3_opus_and_aac(aigc, vits, tmp_path):
    speak = ("speak", "hello there.", "-m", str(vits), "--seed", "2", "--json")
    for name, slack in (("a.mp3", 0.01), ("a.aac", 0.2)):  # AAC: priming and padding (1024 samples each)
        result = aigc(*speak, "-o", name)
        assert result.returncode == 0, result.stderr.decode()
        said = json.loads(result.stdout)
        assert said["format"] == name[2:] and said["path"] == name
        samples, rate = decode((tmp_path / name).read_bytes(), name[2:])
        assert rate == 16000 and np.abs(samples).max() > 0.01
        assert said["duration"] <= len(samples) / rate <= said["duration"] + slack
    record = json.loads(aigc("info", "a.mp3", "--json").stdout)
    assert record["text"] == "hello there." and record["seed"] == 2 and record["model"] == vits.name
    info = aigc("info", "a.aac")
    assert (
        info.returncode == 2
        and info.stderr
        == b"aigc: error: a.aac: an AAC (ADTS) stream has no tags, so aigc records nothing in it\n"
    )

    piped = aigc(*speak[:-1], "--format", "opus", "-o", "-")
    samples, rate = decode(piped.stdout, "opus")
    assert rate == 16000 and np.abs(samples).max() > 0.01
