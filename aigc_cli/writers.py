"""Payload output: text streamed to stdout, JSON lines."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from .errors import OutputError, PipeClosed, UsageError

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
AUDIO_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}


def write_text(text: str) -> None:
    """Write and flush at once, so that a pipe sees each token as it comes."""
    if text:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError as exc:
            raise PipeClosed() from exc


def end_text(text: str) -> None:
    """Finish one completion with a newline unless it ends with one."""
    if not text.endswith("\n"):
        write_text("\n")


def write_json_line(record: dict[str, Any]) -> None:
    write_text(json.dumps(record, ensure_ascii=False) + "\n")


def write_binary(data: bytes) -> None:
    """Bytes to stdout (the caller made sure it is not a terminal)."""
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError as exc:
        raise PipeClosed() from exc


def write_atomic(path: Path, data: bytes) -> None:
    """A temp file in the same folder, then a rename: an interrupted run leaves no truncated file."""
    folder = path.parent
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def check_writable(path: Path) -> None:
    """Fail before a long generation, not after it, when the output cannot be written."""
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"Cannot write {path}: No such file or directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write {path}: Permission denied")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def image_format(path: Path) -> str:
    fmt = IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"Cannot tell the image format of '{path}': use .png, .jpg, .jpeg or .webp")
    return fmt


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


def encode_audio(samples: Any, sample_rate: int, fmt: str, record: dict[str, Any]) -> bytes:
    """A whole WAV, FLAC or OGG file in memory (soundfile cannot seek a pipe), with the record as tags."""
    import io

    import soundfile

    container, subtype = AUDIO_FORMATS[fmt]
    buffer = io.BytesIO()
    with soundfile.SoundFile(
        buffer, "w", samplerate=sample_rate, channels=1, format=container, subtype=subtype
    ) as f:
        f.title = record.get("text", "")[:200]
        f.artist = str(record.get("model", ""))
        f.software = f"aigc {record.get('aigc_version', '')}".strip()
        f.comment = json.dumps(record, ensure_ascii=True)
        f.write(samples)
    return buffer.getvalue()


def pcm16(samples: Any) -> bytes:
    """16-bit little-endian PCM, as Piper makes it."""
    import numpy as np

    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
