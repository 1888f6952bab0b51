"""What a generated file records, and reading it back (`aigc info`).

Images: PNG text chunks `parameters` (the AUTOMATIC1111 form other tools read) and `aigc` (JSON);
JPEG and WebP: the same in EXIF (UserComment: parameters, ImageDescription: the JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UsageError

EXIF_USER_COMMENT = 0x9286
EXIF_IMAGE_DESCRIPTION = 0x010E
EXIF_IFD = 0x8769
UNICODE_PREFIX = b"UNICODE\x00"


def a1111_parameters(record: dict[str, Any]) -> str:
    """The AUTOMATIC1111 form: the prompt, `Negative prompt: ...`, then
    `Steps: N, Sampler: X, CFG scale: G, Seed: S, Size: WxH, Model: M`."""
    lines = [record["prompt"]]
    if record.get("negative"):
        lines.append(f"Negative prompt: {record['negative']}")
    fields = [
        f"Steps: {record['steps']}",
        f"Sampler: {record['sampler']}",
        f"CFG scale: {record['guidance']}",
        f"Seed: {record['seed']}",
        f"Size: {record['width']}x{record['height']}",
        f"Model: {record['model']}",
    ]
    if record.get("strength") is not None:
        fields.append(f"Denoising strength: {record['strength']}")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def image_metadata(fmt: str, record: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for PIL's Image.save that carry the record."""
    from PIL import Image, PngImagePlugin

    parameters = a1111_parameters(record)
    as_json = json.dumps(record, ensure_ascii=True)
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("parameters", parameters)
        info.add_itxt("aigc", as_json)
        return {"pnginfo": info}
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = as_json
    exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = UNICODE_PREFIX + parameters.encode("utf-16-be")
    return {"exif": exif.tobytes()}


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def read_audio_metadata(path: Path) -> dict[str, Any]:
    """The aigc record in an audio file's tags (WAV INFO, FLAC/OGG comments)."""
    import soundfile

    try:
        with soundfile.SoundFile(path) as f:
            raw_json, frames, rate = f.comment, f.frames, f.samplerate
    except (RuntimeError, OSError) as exc:  # soundfile raises LibsndfileError, a RuntimeError
        raise UsageError(f"Cannot read {path}: not an audio file aigc can read") from exc
    try:
        record = json.loads(raw_json) if raw_json else None
    except ValueError as exc:
        raise UsageError(f"{path} has a damaged aigc record: {exc}") from exc
    if not isinstance(record, dict):
        raise UsageError(f"{path} records no aigc parameters")
    record.setdefault("duration", round(frames / rate, 3))
    return record


def read_metadata(path: Path) -> dict[str, Any]:
    """The aigc record a file carries; `parameters` added when present."""
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() in AUDIO_SUFFIXES:
        return read_audio_metadata(path)

    try:
        with Image.open(path) as image:
            found: dict[str, Any] = {}
            text = getattr(image, "text", None) or {}
            raw_json = text.get("aigc")
            parameters = text.get("parameters")
            exif = image.getexif()
            if raw_json is None and EXIF_IMAGE_DESCRIPTION in exif:
                raw_json = exif[EXIF_IMAGE_DESCRIPTION]
            comment = exif.get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
            if parameters is None and isinstance(comment, bytes) and comment.startswith(UNICODE_PREFIX):
                parameters = comment[len(UNICODE_PREFIX) :].decode("utf-16-be", errors="replace")
            found["format"] = image.format
            found["size"] = list(image.size)
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(
            f"Cannot read {path}: not an image aigc can read ({exc.__class__.__name__})"
        ) from exc
    if raw_json is None:
        raise UsageError(f"{path} records no aigc parameters")
    try:
        record = json.loads(raw_json)
    except ValueError as exc:
        raise UsageError(f"{path} has a damaged aigc record: {exc}") from exc
    record.setdefault("parameters", parameters)
    return record
