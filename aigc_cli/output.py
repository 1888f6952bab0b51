"""Payload output: the one output planner for binary results (file, auto-name, stdout, -n naming, format),
atomic file writes, text streamed to stdout, JSON lines, audio encoding."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OutputError, PipeClosed, UsageError
from .terminal import terminal

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
AUDIO_FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
    "aac": ("adts", "aac"),
}
"""Audio file format -> (container, codec): soundfile's format and subtype; aac: PyAV's muxer and encoder."""
AUDIO_MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
}
"""The media type (HTTP Content-Type) of each audio file format (opus is Ogg Opus, RFC 7845)."""
AUDIO_FORMAT_NAMES = "wav, flac, ogg, mp3, opus, aac"
AUDIO_SUFFIX_NAMES = ".wav, .flac, .ogg, .mp3, .opus or .aac"
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def check_stdout() -> None:
    """Fail before any work when stdout is closed (`aigc ... >&-`): the payload would go nowhere."""
    if sys.stdout is None:
        raise OutputError(
            "Cannot write to stdout: it is closed (`>&-`): give aigc a file or a pipe to write to"
        )


def _stdout_failed(exc: OSError) -> OutputError:
    return OutputError(f"Cannot write to stdout: {exc.strerror or exc}")


def write_text(text: str) -> None:
    """Write and flush at once, so that a pipe sees each token as it comes. A closed pipe is PipeClosed
    (quiet, exit 0); any other failure (a full disk, a closed stdout) is OutputError (exit 4)."""
    if text:
        check_stdout()
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError as exc:
            raise PipeClosed() from exc
        except OSError as exc:
            raise _stdout_failed(exc) from exc
        if terminal.stdout():  # an error line after a reply cut short starts a line of its own
            terminal.line_open = not text.endswith("\n")


def end_text(text: str) -> None:
    """Finish one completion with a newline unless it ends with one."""
    if not text.endswith("\n"):
        write_text("\n")


def write_json_line(record: dict[str, Any]) -> None:
    write_text(json.dumps(record, ensure_ascii=False) + "\n")


def write_binary(data: bytes) -> None:
    """Bytes to stdout (the caller made sure it is not a terminal)."""
    check_stdout()
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError as exc:
        raise PipeClosed() from exc
    except OSError as exc:
        raise _stdout_failed(exc) from exc


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """A temp file in the same folder, then a rename: an interrupted run leaves no truncated file. The file
    gets permission bits `mode` (those of the file it replaces, say), else a new file's (by the umask)."""
    folder = path.parent
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temp, 0o666 & ~_umask() if mode is None else mode)
        os.replace(temp, path)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def check_writable(path: Path) -> None:
    """Fail before a long generation, not after it, when the output cannot be written: OutputError (exit 4)
    for a missing or read-only folder, a directory named as the file, or a special file (a device, a FIFO:
    the atomic rename would replace it, not write into it)."""
    if path.is_dir():
        raise OutputError(
            f"Cannot write {path}: it is a directory: name a file in it (-o {path}/NAME{path.suffix})"
        )
    if path.exists() and not path.is_file():
        raise OutputError(
            f"Cannot write {path}: it is not a regular file (a device or a pipe): write to stdout with -o - "
            f"and redirect it (> {path})"
        )
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"Cannot write {path}: No such file or directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write {path}: Permission denied")
    try:  # what os.access cannot tell (root in a read-only or special file system such as /proc)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}") from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def image_format(path: Path) -> str:
    fmt = IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"Cannot tell the image format of '{path}': use .png, .jpg, .jpeg or .webp")
    return fmt


@dataclass(frozen=True)
class OutputPlan:
    """Where the results of one command go, decided once before any work (see `plan_output`)."""

    kind: str
    """image or audio."""
    format: str
    """PNG, JPEG or WEBP for images; wav, flac, ogg, mp3, opus, aac or raw for audio."""
    to_stdout: bool
    """The bytes go to stdout (a pipe or a file, never a terminal)."""
    target: Path | None
    """The -o file (numbered cat-1.png, cat-2.png... when count > 1)."""
    auto_name: bool
    """Files get new names in the current folder from the prompt and seed."""
    count: int
    print_paths: bool
    """Each written path is printed on stdout (it is a terminal, and no --json)."""
    folder: Path | None = None
    """Where auto-named files go (None: the current folder)."""

    @property
    def suffix(self) -> str:
        return f".{self.format.lower()}" if self.kind == "audio" else IMAGE_SUFFIXES[self.format]

    def path(self, index: int, prompt: str, seed: int) -> Path | None:
        """The file result `index` goes to; None when it goes to stdout or nowhere (--play alone)."""
        if self.target is not None:
            return numbered(self.target, index, self.count)
        if self.auto_name:
            return auto_path(prompt, seed, self.suffix, self.folder)
        return None


IMAGE_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


def _format_of(kind: str, path: Path) -> str | None:
    suffix = path.suffix.lower()
    if kind == "image":
        return IMAGE_FORMATS.get(suffix)
    return suffix.lstrip(".") if suffix.lstrip(".") in AUDIO_FORMATS else None


def plan_file(kind: str, out: str | None, folder: Path) -> OutputPlan:
    """Where one result of a batch job goes: its `out` file (format by extension), else an auto-name in
    `folder`. Raises UsageError for a name without a known extension, OutputError for a folder that cannot
    be written."""
    from .credentials import signing_setup

    signing_setup()
    if out is None:
        check_writable(folder / "probe")
        return OutputPlan(kind, "PNG" if kind == "image" else "wav", False, None, True, 1, False, folder)
    path = Path(out) if Path(out).is_absolute() else folder / out
    found = _format_of(kind, path)
    if found is None:
        known = ".png, .jpg, .jpeg or .webp" if kind == "image" else AUDIO_SUFFIX_NAMES
        raise UsageError(f"Cannot tell the {kind} format of '{out}': use {known}")
    check_encoder(found)
    check_writable(path)
    return OutputPlan(kind, found, False, path, False, 1, False)


def plan_output(
    kind: str, out: str | None, count: int = 1, json: bool = False, fmt: str | None = None, play: bool = False
) -> OutputPlan:
    """Decide where binary results go, or raise UsageError (exit 2) / OutputError (exit 4) before any work.

    kind: image or audio. out: the -o value ("-" is stdout). fmt: --format (audio: wav, flac, ogg, mp3, opus,
    aac, raw).
    Without -o: a pipe gets the bytes; a terminal or --json gets auto-named files in the current folder
    (never overwriting); --play alone writes nothing. With -o FILE the format is the extension's, and a
    --format that contradicts it is refused.
    """
    from .credentials import signing_setup

    signing_setup()  # a half-set or broken signing setup fails now, not after the work
    image = kind == "image"
    noun, example = ("image", "NAME.png") if image else ("audio", "NAME.wav")
    default = "PNG" if image else "wav"
    wanted = None
    if fmt is not None:
        wanted = fmt.strip().lower()
        if wanted not in (*AUDIO_FORMATS, "raw"):
            raise UsageError(f"Unknown format '{fmt}': use {AUDIO_FORMAT_NAMES} or raw")
        check_encoder(wanted)
    payload = "PNG" if image else "audio"
    bytes_to_terminal = UsageError(
        f"Not writing {payload} bytes to a terminal: pipe stdout somewhere, or use -o FILE"
    )
    if out == "-":
        if json:
            raise UsageError(f"--json prints JSON on stdout: write the {noun} to a file with -o")
        if count > 1:
            raise UsageError(f"-o - writes one {default} to stdout: use -o {example} for several (NAME-1...)")
        if terminal.stdout():
            raise bytes_to_terminal
        check_stdout()
        return OutputPlan(kind, wanted or default, True, None, False, 1, False)
    if out is not None:
        path = Path(out)
        found = _format_of(kind, path)
        if wanted is not None:
            if found is not None and found != wanted:
                raise UsageError(
                    f"--format {wanted} contradicts the file name {out}: "
                    f"name it {path.stem}.{wanted} or leave --format out"
                )
            found = wanted
        if found is None:
            known = ".png, .jpg, .jpeg or .webp" if image else f"{AUDIO_SUFFIX_NAMES}, or --format"
            raise UsageError(f"Cannot tell the {noun} format of '{out}': use {known}")
        check_encoder(found)
        for index in range(min(count, 100)):  # NAME-1, NAME-2...: a directory among them is found now too
            check_writable(numbered(path, index, count))
        return OutputPlan(kind, found, False, path, False, count, terminal.stdout() and not json)
    if play and not json:
        return OutputPlan(kind, wanted or default, False, None, False, count, False)
    if json or terminal.stdout():
        if wanted == "raw" and not json:
            raise bytes_to_terminal
        return OutputPlan(kind, wanted or default, False, None, True, count, not json)
    if count > 1:
        raise UsageError(f"Several {noun}s cannot go to one stream: use -o {example} (NAME-1, NAME-2...)")
    check_stdout()
    return OutputPlan(kind, wanted or default, True, None, False, 1, False)


def numbered(path: Path, index: int, count: int) -> Path:
    """cat.png -> cat-1.png, cat-2.png... when there are several."""
    return path if count == 1 else path.with_name(f"{path.stem}-{index + 1}{path.suffix}")


def auto_path(prompt: str, seed: int, suffix: str, folder: Path | None = None) -> Path:
    """A new file name in the current folder from the prompt and seed; never an existing file."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40].strip("-") or "aigc"
    folder = folder or Path.cwd()
    candidate = folder / f"{slug}-{seed}{suffix}"
    number = 2
    while candidate.exists():
        candidate = folder / f"{slug}-{seed}-{number}{suffix}"
        number += 1
    return candidate


AAC_NEEDS_AV = "AAC output needs PyAV (the av package): pip install av, or pip install 'aigc[serve]'"


def check_encoder(fmt: str) -> None:
    """Fail before any work when `fmt` needs a package that is not installed (aac: PyAV): OutputError."""
    import importlib.util

    if fmt == "aac" and importlib.util.find_spec("av") is None:
        raise OutputError(AAC_NEEDS_AV)


def encode_audio(samples: Any, sample_rate: int, fmt: str, record: dict[str, Any]) -> bytes:
    """A whole audio file in memory (soundfile cannot seek a pipe), with the record as tags where the
    container has them. samples: float32 mono in [-1, 1]; fmt: a key of AUDIO_FORMATS.

    wav, flac (16-bit), ogg (Vorbis), opus (Ogg Opus) and mp3 (LAME, ID3 tags) through soundfile; aac (an
    ADTS stream, as OpenAI returns it; no tags: ADTS has none) through PyAV, imported here (OutputError when
    it is not installed). A lossy codec that cannot take the voice's rate gets the samples resampled with
    scipy.signal.resample_poly (polyphase, Kaiser window): opus to 48 kHz unless the rate is 8, 12, 16 or
    24 kHz; mp3 and aac to the next rate up that they take. The file then says the new rate. wav, flac, ogg
    and opus also carry the mark (marking.mark_audio) unless the record's digital_source_type is null; wav,
    flac and mp3 are then signed (credentials.sign) when a signing certificate is set: the last write."""
    import io

    from .records import public_record

    record = public_record(record)  # no path of this machine leaves it in a file
    container, subtype = AUDIO_FORMATS[fmt]
    allowed = {"mp3": MP3_RATES, "aac": AAC_RATES, "opus": OPUS_RATES}.get(fmt)
    if allowed is not None:  # lossy: clipped to [-1, 1] as the 16-bit formats are, or decoders overshoot
        import numpy as np

        samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        if sample_rate not in allowed:
            to = 48000 if fmt == "opus" else next((r for r in allowed if r > sample_rate), allowed[-1])
            samples, sample_rate = _resample(samples, sample_rate, to), to
    if fmt == "aac":
        return _encode_aac(samples, sample_rate)
    import soundfile

    buffer = io.BytesIO()
    with soundfile.SoundFile(
        buffer, "w", samplerate=sample_rate, channels=1, format=container, subtype=subtype
    ) as f:
        title = record.get("text", "")[:200]
        # LAME writes ID3 text as Latin-1 but soundfile hands it UTF-8: keep the mp3 title ASCII (the comment,
        # the whole record, is ASCII JSON, so the exact text is still there).
        f.title = _ascii(title) if fmt == "mp3" else title
        f.artist = str(record.get("model", ""))
        f.software = f"aigc {record.get('aigc_version', '')}".strip()
        f.comment = json.dumps(record, ensure_ascii=True)
        f.write(samples)
    from .credentials import sign
    from .marking import mark_audio

    return sign(mark_audio(buffer.getvalue(), fmt, record), fmt, record)


def _ascii(text: str) -> str:
    """Accents dropped (é -> e), anything else outside ASCII as '?'."""
    import unicodedata

    folded = unicodedata.normalize("NFKD", text)
    return "".join(c for c in folded if not unicodedata.combining(c)).encode("ascii", "replace").decode()


def _resample(samples: Any, rate: int, to: int) -> Any:
    """float32 samples at `rate` -> at `to` (scipy's polyphase resampler), clipped to [-1, 1]."""
    from math import gcd

    import numpy as np
    from scipy.signal import resample_poly

    samples = np.asarray(samples, dtype=np.float32)
    if samples.size == 0:
        return samples
    step = gcd(rate, to)
    return np.clip(resample_poly(samples, to // step, rate // step), -1.0, 1.0).astype(np.float32)


def _encode_aac(samples: Any, sample_rate: int) -> bytes:
    """An ADTS AAC stream (FFmpeg's native AAC-LC encoder, its default bit rate) of mono float32 samples."""
    import io

    import numpy as np

    try:
        import av
    except ImportError:
        raise OutputError(AAC_NEEDS_AV) from None
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="adts") as out:
        stream = out.add_stream("aac", rate=sample_rate, layout="mono")
        pcm = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(1, -1))
        if pcm.size:
            frame = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
            frame.sample_rate = sample_rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def pcm16(samples: Any) -> bytes:
    """16-bit little-endian PCM, as Piper makes it."""
    import numpy as np

    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def audio_json(
    record: dict[str, Any], path: Path | None, fmt: str, duration: float | None, compute: float | None
) -> dict[str, Any]:
    """What --json prints of one audio result (and a batch job's result)."""
    total = duration if duration is not None else 0.0
    return {
        **record,
        "path": str(path) if path else None,
        "format": fmt,
        "duration": round(total, 3),
        "real_time_factor": round(compute / total, 4) if total and compute is not None else None,
    }


def encode_image(image: Any, fmt: str, metadata: dict[str, Any]) -> bytes:
    """The image file's bytes in `fmt` (PNG, JPEG, WEBP), with its record (metadata.image_metadata)."""
    import io

    buffer = io.BytesIO()
    extra = {"quality": 95} if fmt in {"JPEG", "WEBP"} else {}
    image.save(buffer, format=fmt, **metadata, **extra)
    return buffer.getvalue()


def image_file(
    image: Any, fmt: str, record: dict[str, Any], ingredient: bytes | None = None, title: str = ""
) -> bytes:
    """An image file's final bytes: encoded in `fmt` with its record and mark (metadata.image_metadata),
    then signed (credentials.sign) when a signing certificate is configured; nothing may change them after.
    `ingredient`: the init image's file, which the credential names as the image's parent."""
    from .credentials import sign
    from .metadata import image_metadata

    return sign(encode_image(image, fmt, image_metadata(fmt, record)), fmt, record, ingredient, title)


def save_image(
    image: Any,
    index: int,
    record: dict[str, Any],
    plan: OutputPlan,
    ingredient: bytes | None = None,
    made: bytes | None = None,
) -> Path | None:
    """Write one image (PIL) where the plan says, with its record (signed when configured): the path
    written, or None (stdout). `made`: a PNG file already made (a server's signed one), written unchanged
    when the plan wants a PNG."""
    if plan.to_stdout:
        write_binary(made if made is not None else image_file(image, "PNG", record, ingredient))
        return None
    path = plan.path(index, record["prompt"], record["seed"])
    assert path is not None
    if made is not None and plan.format == "PNG":
        write_atomic(path, made)
    else:
        write_atomic(path, image_file(image, plan.format, record, ingredient, path.name))
    return path
