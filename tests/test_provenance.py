"""The "made by AI" mark (marking.py): exiftool, as photo sites and news tools read files, finds the IPTC
digital source type in every image and WAV aigc writes, and the Vorbis comment in FLAC and Ogg; the A1111
`parameters` record is still there; --no-mark, AIGC_MARK and config.toml turn it off."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile
from PIL import Image

from aigc_cli import marking
from aigc_cli.output import encode_audio

SMALL = ["--steps", "2", "--width", "64", "--height", "64", "--seed", "3"]
MADE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None,
    reason="exiftool is not installed (apt-get install libimage-exiftool-perl)",
)


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result


def exiftool(*paths) -> list[dict]:
    """What exiftool reads of each file, group names kept (XMP-iptcExt:DigitalSourceType...)."""
    out = subprocess.run(["exiftool", "-j", "-G1", "-a", *map(str, paths)], capture_output=True, check=True)
    return json.loads(out.stdout)


A1111 = re.compile(
    r"^(?P<prompt>.*)\nSteps: (?P<steps>\d+), Sampler: [^,]+, CFG scale: [\d.]+, Seed: (?P<seed>\d+), "
    r"Size: (?P<size>\d+x\d+), (?:Model hash: (?P<hash>[0-9a-f]+), )?Model: (?P<model>[^,\n]+)",
    re.S,
)
"""The AUTOMATIC1111 infotext as its own reader (and sd-parsers) splits it."""


@needs_exiftool
def test_every_image_format_says_it_is_ai_made_and_keeps_its_a1111_record(aigc, pipes, tmp_path):
    paths = [tmp_path / f"fox.{ext}" for ext in ("png", "jpg", "webp")]
    for path in paths:
        ok(aigc("image", "a red fox", "-m", str(pipes["sd"]), *SMALL, "-o", str(path)))
    for path, tags in zip(paths, exiftool(*paths), strict=True):
        assert tags["XMP-iptcExt:DigitalSourceType"] == MADE, path
        assert tags["XMP-xmp:CreatorTool"].startswith("aigc "), path
    with Image.open(paths[0]) as png:
        found = A1111.match(png.text["parameters"])
    assert found is not None
    assert (found["prompt"], found["steps"], found["seed"], found["size"]) == ("a red fox", "2", "3", "64x64")
    assert (found["model"], len(found["hash"])) == ("tiny-sd", 10)  # a local model by name and hash
    for path in paths:  # aigc info reads the record back from each, and says the mark
        record = json.loads(ok(aigc("info", str(path), "--json")).stdout)
        assert record["digital_source_type"] == "trainedAlgorithmicMedia"


@needs_exiftool
def test_image_to_image_is_a_composite_and_no_mark_leaves_it_out(aigc, pipes, tmp_path):
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (30, 120, 200)).save(init)
    edited, plain = tmp_path / "edited.png", tmp_path / "plain.png"
    args = ["-m", str(pipes["sd"]), *SMALL]
    ok(aigc("image", "a cat", *args, "--init-image", str(init), "--strength", "0.5", "-o", str(edited)))
    ok(aigc("image", "a cat", *args, "--no-mark", "-o", str(plain)))
    tags = exiftool(edited, plain)
    assert tags[0]["XMP-iptcExt:DigitalSourceType"] == COMPOSITE
    assert not any(key.startswith("XMP") for key in tags[1])
    with Image.open(plain) as image:  # the record is still there, and says it was not marked
        assert json.loads(image.text["aigc"])["digital_source_type"] is None
        assert marking.XMP_KEYWORD not in image.text


@needs_exiftool
def test_speech_is_marked_in_wav_flac_and_ogg(aigc, vits, tmp_path):
    paths = [tmp_path / f"hi.{ext}" for ext in ("wav", "flac", "ogg")]
    for path in paths:
        ok(aigc("speak", "hello there.", "-m", str(vits), "--seed", "1", "-o", str(path)))
    wav, flac, ogg = exiftool(*paths)
    assert wav["XMP-iptcExt:DigitalSourceType"] == MADE
    assert flac["Vorbis:DigitalSourceType"] == ogg["Vorbis:DigitalSourceType"] == MADE
    for path in paths:  # still whole audio with its record
        with soundfile.SoundFile(path) as f:
            assert f.frames > 0
            assert json.loads(f.comment)["digital_source_type"] == "trainedAlgorithmicMedia"


@needs_exiftool
def test_the_mark_is_off_from_the_environment_or_config_file(aigc, vits, pipes, tmp_path, isolated):
    config = isolated / "aigc-home" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[speech]\nmark = false\n", encoding="utf-8")
    wav, png = tmp_path / "hi.wav", tmp_path / "a.png"
    ok(aigc("speak", "hello there.", "-m", str(vits), "-o", str(wav)))
    ok(aigc("image", "a cat", "-m", str(pipes["sd"]), *SMALL, "-o", str(png), env={"AIGC_MARK": "0"}))
    for tags in exiftool(wav, png):
        assert "XMP-iptcExt:DigitalSourceType" not in tags
    assert b"_PMX" not in wav.read_bytes()


def sine(rate: int = 22050) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["flac", "ogg", "opus"])
def test_vorbis_comments_keep_the_file_whole_even_when_the_header_spans_pages(fmt):
    record = {"text": "hello", "model": "tiny", "aigc_version": "1", "digital_source_type": marking.MADE}
    data = encode_audio(sine(), 22050, fmt, record)
    tags = marking.read_vorbis_comments(data)
    assert tags[marking.VORBIS_TAG] == MADE
    assert tags[marking.VORBIS_TOOL] == "aigc 1"
    # ~150 kB more of comments: the Ogg header packet spans several pages, so the pages after it move
    if fmt != "flac":
        data = marking.ogg_add_comments(data, [f"NOTE{i}={'x' * 500}" for i in range(300)])
        assert len(marking.read_vorbis_comments(data)) >= 302
    with soundfile.SoundFile(io.BytesIO(data)) as f:
        assert json.loads(f.comment) == record
        samples = f.read(dtype="float32")
    assert abs(len(samples) / f.samplerate - 1.0) < 0.05
    assert np.sqrt(np.mean(samples**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.15)


def test_wav_xmp_chunk_is_in_the_riff_and_the_sizes_add_up():
    data = encode_audio(
        sine(),
        22050,
        "wav",
        {"text": "hi", "model": "t", "aigc_version": "1", "digital_source_type": marking.MADE},
    )
    chunks = marking.riff_chunks(data)
    assert MADE.encode() in chunks[b"_PMX"]
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    assert len(soundfile.read(io.BytesIO(data))[0]) == 22050


def test_records_name_local_models_not_paths_and_from_finds_them_again(
    aigc, pipes, vits, tmp_path, monkeypatch
):
    png, jpg, wav = tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "a.wav"
    for out in (png, jpg):
        ok(aigc("image", "a red fox", "-m", str(pipes["sd"]), *SMALL, "--no-log", "-o", str(out)))
    ok(aigc("speak", "hello there.", "-m", str(vits), "--no-log", "-o", str(wav)))
    for path in (png, jpg, wav):  # the user's folders are nowhere in the file
        assert str(pipes["sd"].parent).encode() not in path.read_bytes()
        assert str(vits.parent).encode() not in path.read_bytes()
    with Image.open(png) as image:
        record = json.loads(image.text["aigc"])
        assert f"Model hash: {record['model_hash']}, Model: tiny-sd" in image.text["parameters"]
    assert json.loads(ok(aigc("info", "--json", str(wav))).stdout)["model"] == vits.name

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = tmp_path / "again.png"
    lost = aigc(
        "image", "--from", str(png), "-o", str(again), cwd=elsewhere
    )  # not logged, not in a folder named
    assert lost.returncode == 3
    assert lost.stderr.decode() == (
        f"aigc: error: {png} was made with the local model tiny-sd (hash {record['model_hash']}), which is not "
        "here: give its folder with -m, or put the folder that holds it in AIGC_MODEL_PATH\n"
    )
    monkeypatch.setenv("AIGC_MODEL_PATH", str(pipes["sd"].parent))
    ok(aigc("image", "--from", str(png), "-o", str(again), cwd=elsewhere))
    assert again.read_bytes() == png.read_bytes()


@needs_exiftool
def test_mp3_carries_the_mark_as_id3_user_text(tmp_path):
    record = {"text": "hi", "model": "t", "aigc_version": "1", "digital_source_type": marking.MADE}
    path = tmp_path / "a.mp3"
    path.write_bytes(encode_audio(sine(), 22050, "mp3", record))
    assert marking.read_mark(path.read_bytes()) == (MADE, "aigc 1")
    texts = subprocess.run(
        ["exiftool", "-a", "-s3", "-UserDefinedText", str(path)], capture_output=True, check=True
    )
    assert f"(DIGITAL_SOURCE_TYPE) {MADE}" in texts.stdout.decode()
    with soundfile.SoundFile(path) as f:  # still whole, its record still read
        assert json.loads(f.comment) == record and f.frames > 20000


def test_a_server_takes_a_preload_folder_by_the_name_a_record_gives(server, pipes):
    import base64

    from server_helpers import http

    answers = []
    for model in (str(pipes["sd"]), pipes["sd"].name):  # the path it was started with, the record's name
        body = {"model": model, "prompt": "a boat", "size": "64x64", "seed": 4, "num_inference_steps": 2}
        status, _, answer = http(f"{server.url}/v1/images/generations", "POST", body)
        assert status == 200, answer.decode()
        answers.append(base64.b64decode(json.loads(answer)["data"][0]["b64_json"]))
    assert answers[0] == answers[1]
    with Image.open(io.BytesIO(answers[1])) as image:
        assert json.loads(image.text["aigc"])["model"] == "tiny-sd"
