"""What a generated file records, and reading it back (`aigc info`).

Images: PNG text chunks `parameters` (the AUTOMATIC1111 form other tools read) and `aigc` (JSON);
JPEG and WebP: the same in EXIF (UserComment: parameters, ImageDescription: the JSON). Each also says it is
AI-made in XMP (marking.py), and may carry a C2PA manifest when signing is set up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UsageError
from .marking import XMP_KEYWORD, creator_tool, xmp_packet
from .records import public_record

EXIF_USER_COMMENT = 0x9286
EXIF_IMAGE_DESCRIPTION = 0x010E
EXIF_IFD = 0x8769
UNICODE_PREFIX = b"UNICODE\x00"


def a1111_parameters(record: dict[str, Any]) -> str:
    """The AUTOMATIC1111 form: the prompt (with a `<lora:NAME:WEIGHT>` tag per LoRA, as A1111 prompts carry
    them), `Negative prompt: ...`, then `Steps: N, Sampler: X, CFG scale: G, Seed: S, Size: WxH, Model: M`
    and, where used, `Denoising strength`, `Lora hashes: "NAME: first 12 hex of its SHA-256, ..."` and
    `VAE: NAME`. A local model is named by its folder's name, after `Model hash: ...` (records.public_record),
    as A1111 names a checkpoint file."""
    record = public_record(record)
    loras = record.get("loras") or []
    tags = [f"<lora:{_lora_alias(x['name'])}:{x['weight']:g}>" for x in loras]
    lines = [" ".join([record["prompt"], *tags])]
    if record.get("negative"):
        lines.append(f"Negative prompt: {record['negative']}")
    fields = [
        f"Steps: {record['steps']}",
        f"Sampler: {record['sampler']}",
        f"CFG scale: {record['guidance']}",
        f"Seed: {record['seed']}",
        f"Size: {record['width']}x{record['height']}",
        *([f"Model hash: {record['model_hash']}"] if record.get("model_hash") else []),
        f"Model: {record['model']}",
    ]
    if record.get("strength") is not None:
        fields.append(f"Denoising strength: {record['strength']}")
    if loras:
        hashes = ", ".join(f"{_lora_alias(x['name'])}: {x['sha256'][:12]}" for x in loras)
        fields.append(f"Lora hashes: {_quoted(hashes)}")
    if record.get("vae"):
        fields.append(f"VAE: {_quoted(_lora_alias(record['vae']))}")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def _lora_alias(name: str) -> str:
    """How A1111 names a LoRA or VAE file: its file name without the extension (a Hub repo: its name);
    diffusers' default file name (pytorch_lora_weights) by its folder's name, which tells LoRAs apart."""
    parts = name.rstrip("/").split("/")
    stem = parts[-1].removesuffix(".safetensors")
    return parts[-2] if stem == "pytorch_lora_weights" and len(parts) > 1 else stem


def _quoted(value: str) -> str:
    """A field value as A1111 writes one: JSON-quoted when it holds a comma, colon or line break."""
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ",:\n") else value


def image_metadata(fmt: str, record: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for PIL's Image.save that carry the record, and the mark (an XMP packet with the
    IPTC digital source type, marking.xmp_packet) unless the record's digital_source_type is null."""
    from PIL import Image, PngImagePlugin

    record = public_record(record)  # no path of this machine leaves it in a file
    parameters = a1111_parameters(record)
    as_json = json.dumps(record, ensure_ascii=True)
    kind = record.get("digital_source_type")
    xmp = xmp_packet(kind, creator_tool(record)) if kind else None
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("parameters", parameters)
        info.add_itxt("aigc", as_json)
        if xmp is not None:
            info.add_itxt(XMP_KEYWORD, xmp.decode("utf-8"))
        return {"pnginfo": info}
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = as_json
    exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = UNICODE_PREFIX + parameters.encode("utf-16-be")
    return {"exif": exif.tobytes(), **({"xmp": xmp} if xmp is not None else {})}


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aac")


class _NotThisKind(Exception):
    """The file is not of the kind tried (not an image, not audio): try the other one."""


def _read_audio(path: Path) -> tuple[str | None, dict[str, Any]]:
    """(the aigc JSON or None, facts about the file) from an audio file's tags (WAV INFO, FLAC/OGG/Opus
    comments, MP3 ID3). An AAC (ADTS) stream has no tags, and soundfile cannot read it."""
    import soundfile

    try:
        with soundfile.SoundFile(path) as f:
            raw_json, frames, rate = f.comment, f.frames, f.samplerate
    except (RuntimeError, OSError) as exc:  # soundfile raises LibsndfileError, a RuntimeError
        raise _NotThisKind from exc
    return raw_json or None, {"duration": round(frames / rate, 3) if rate else None}


def _read_image(path: Path) -> tuple[str | None, dict[str, Any]]:
    """(the aigc JSON or None, facts about the file) from PNG text chunks or JPEG/WebP EXIF."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            text = getattr(image, "text", None) or {}
            raw_json = text.get("aigc")
            parameters = text.get("parameters")
            exif = image.getexif()
            if raw_json is None and EXIF_IMAGE_DESCRIPTION in exif:
                raw_json = exif[EXIF_IMAGE_DESCRIPTION]
            comment = exif.get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
            if parameters is None and isinstance(comment, bytes) and comment.startswith(UNICODE_PREFIX):
                parameters = comment[len(UNICODE_PREFIX) :].decode("utf-16-be", errors="replace")
            found = {"parameters": parameters}
    except UnidentifiedImageError as exc:
        raise _NotThisKind from exc
    except OSError as exc:
        if exc.errno is not None:  # the file system's refusal (permissions...), not the content
            raise
        raise _NotThisKind from exc  # a damaged image
    return raw_json, found


def read_metadata(path: Path) -> dict[str, Any]:
    """The aigc record an image or audio file carries (`parameters` added for images, `duration` for
    audio); a UsageError (exit 2) naming what is wrong otherwise: a missing file, a file that is neither
    an image nor audio, one that records nothing of aigc's."""
    if not path.exists():
        raise UsageError(f"No such file: {path}")
    if path.is_dir():
        raise UsageError(f"{path} is a folder: give an image or audio file that aigc wrote")
    readers = [_read_image, _read_audio]
    if path.suffix.lower() in AUDIO_SUFFIXES:
        readers.reverse()
    for reader in readers:
        try:
            raw_json, found = reader(path)
            break
        except _NotThisKind:
            continue
        except OSError as exc:
            raise UsageError(f"Cannot read {path}: {exc.strerror or exc}") from exc
    else:
        if path.suffix.lower() == ".aac":
            raise UsageError(f"{path}: an AAC (ADTS) stream has no tags, so aigc records nothing in it")
        raise UsageError(f"{path} is neither an image nor audio that aigc wrote")
    if raw_json is None:
        raise UsageError(f"{path} records no aigc parameters")
    try:
        record = json.loads(raw_json)
    except ValueError as exc:
        raise UsageError(f"{path} has a damaged aigc record: {exc}") from exc
    if not isinstance(record, dict):
        raise UsageError(f"{path} records no aigc parameters")
    for key, value in found.items():
        record.setdefault(key, value)
    return record


def read_image_record(path: Path) -> dict[str, Any]:
    """The record of an image aigc made (for `aigc image --from FILE`); a UsageError (exit 2) when FILE
    is missing, is not such a file, or records another kind of run (a WAV from `aigc speak`)."""
    record = read_metadata(path)
    kind = record.get("kind")
    if kind != "image":
        made = f"a {kind} run" if isinstance(kind, str) and kind else "no image settings"
        raise UsageError(f"{path} records {made}, not an image: --from takes an image aigc made")
    return record
