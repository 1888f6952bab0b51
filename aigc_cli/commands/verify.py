"""`aigc verify FILE...`: is the file marked as AI-made, does it carry a C2PA manifest, is its signature valid
and its hash intact, who signed it, what it records; with --replay, make it again from its record and
compare. Exit 0 when every file's credential is intact (and its replay identical); 1 otherwise, with one
line on stderr per file naming what failed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..console import Console, error_line
from ..errors import GenerationError, UsageError
from ..output import write_json_line, write_text


@dataclass
class Report:
    """What `aigc verify` found in one file."""

    path: str
    marked: str | None = None
    """The IPTC digital source type URL the file's XMP (or Vorbis comment) says; None: not marked."""
    creator_tool: str | None = None
    credential: dict[str, Any] | None = None
    """credentials.Credential as a dict; None: no manifest."""
    record: dict[str, Any] | None = None
    """aigc's record: the manifest's (signed) where there is one, else the file's own."""
    replay: dict[str, Any] | None = None
    problem: str | None = None
    """What failed, one line; None when the file verifies."""
    lines: list[str] = field(default_factory=list)


def run_verify(files: list[str], trust: str | None, replay: bool, as_json: bool, console: Console) -> None:
    """`aigc verify`."""
    import importlib.util

    from ..credentials import NEEDS_C2PA, trust_anchors

    if importlib.util.find_spec("c2pa") is None:
        raise UsageError(f"aigc verify reads C2PA manifests with c2pa-python: {NEEDS_C2PA.split(': ', 1)[1]}")
    anchors = trust_anchors(trust)
    reports = [verify_file(Path(name), anchors, replay, console) for name in files]
    for report in reports:
        if as_json:
            data = asdict(report)
            data.pop("lines")
            write_json_line({**data, "ok": report.problem is None})
        else:
            write_text("\n".join(report.lines) + "\n")
    failed = [r for r in reports if r.problem is not None]
    if len(failed) == 1 and len(reports) == 1:
        raise GenerationError(failed[0].problem or "")
    for report in failed:
        error_line(report.problem or "")
    if failed:
        raise GenerationError(f"{len(failed)} of {len(reports)} files failed verification")


def verify_file(path: Path, trust: Path | None, replay: bool, console: Console) -> Report:
    """The report on one file (UsageError for a file that is missing or not readable)."""
    from ..credentials import read_credential, sniff_any
    from ..marking import read_mark

    if not path.is_file():
        raise UsageError(f"No such file: {path}" if not path.exists() else f"{path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror or exc}") from exc
    report = Report(str(path))
    report.marked, report.creator_tool = read_mark(data)
    credential = read_credential(path, trust)
    report.record = _own_record(path)
    kind = report.marked.rsplit("/", 1)[-1] if report.marked else None
    by = f" ({report.creator_tool})" if report.creator_tool else ""
    report.lines.append(f"{path}")
    report.lines.append(f"  marked      {kind + by if kind else 'no: it does not say it is AI-made'}")
    if credential is None:
        covered = sniff_any(data) is not None
        why = "it carries no C2PA manifest"
        if not covered:
            why = "C2PA does not cover this format" + (" (it is marked only)" if report.marked else "")
        report.problem = f"{path}: unsigned: {why}"
        report.lines.append(f"  manifest    none: {why}")
    else:
        report.credential = asdict(credential)
        if credential.record is not None:
            report.record = credential.record
        report.lines += _credential_lines(credential, trust)
        if credential.state in ("Invalid", "Damaged"):
            what = "damaged manifest" if credential.state == "Damaged" else _what_failed(credential.failures)
            report.problem = f"{path}: {what}: {credential.failures[0] if credential.failures else 'invalid'}"
    if report.record:
        report.lines.append(f"  record      {_summary(report.record)}")
    if replay:
        report.replay = replay_image(path, data, report.record, console)
        report.lines.append(f"  replay      {report.replay['summary']}")
        if not report.replay["identical"] and report.problem is None:
            report.problem = f"{path}: replay: {report.replay['summary']}"
    return report


def _own_record(path: Path) -> dict[str, Any] | None:
    from ..metadata import read_metadata

    try:
        return read_metadata(path)
    except UsageError:
        return None


def _what_failed(failures: list[str]) -> str:
    """tampered (the content no longer matches its signed hash) or invalid (anything else)."""
    return "tampered" if any("hash" in f.split(":", 1)[0].lower() for f in failures) else "invalid"


def _credential_lines(credential: Any, trust: Path | None) -> list[str]:
    states = {
        "Trusted": f"signed, intact, and its signer is trusted ({trust})",
        "Valid": "signed and intact; its signer is not among the trust anchors"
        + (f" ({trust})" if trust else " (none set: --trust, AIGC_TRUST_ANCHORS or [credentials] trust)"),
        "Invalid": "signed, but it does not verify",
        "Damaged": "a C2PA manifest that cannot be read",
    }
    lines = [f"  manifest    {states.get(credential.state, credential.state)}"]
    if credential.state == "Damaged":
        return lines
    signer = credential.signer
    who = signer.get("common_name") or "unknown"
    if signer.get("issuer"):
        who += f" (issued by {signer['issuer']})"
    when = signer.get("time") or "not timestamped"
    lines.append(f"  signed by   {who}, {str(signer.get('alg', '')).lower()}, {when}")
    source = (credential.digital_source_type or "").rsplit("/", 1)[-1] or "none"
    actions = ", ".join(credential.actions) or "none"
    lines.append(
        f"  claims      {actions}; digital source type {source}; by {credential.generator or 'unknown'}"
    )
    lines += [f"  failed      {failure}" for failure in credential.failures]
    return lines


def _summary(record: dict[str, Any]) -> str:
    keys = ("kind", "model", "revision", "seed", "steps", "guidance", "width", "height", "voice")
    parts = [f"{k} {record[k]}" for k in keys if record.get(k) is not None]
    text = record.get("prompt") or record.get("text")
    if text:
        parts.insert(0, repr(text if len(text) <= 60 else text[:57] + "..."))
    return ", ".join(parts)


def replay_image(path: Path, data: bytes, record: dict[str, Any] | None, console: Console) -> dict[str, Any]:
    """Make the image again from its record, here, and compare: {"identical": bool, "summary": one line,
    and "max_difference"/"mean_difference" (of 255) where the pixels differ}."""
    from ..errors import AigcError

    def cannot(why: str) -> dict[str, Any]:
        return {"identical": False, "summary": f"cannot replay: {why}"}

    if not record or record.get("kind") != "image":
        kind = (record or {}).get("kind")
        return cannot(
            f"only images replay, and this records {'a ' + kind + ' run' if kind else 'no aigc run'}"
        )
    if record.get("init_image"):
        return cannot(
            f"it was made from an init image ({record['init_image']}): give it to aigc image --from"
        )
    try:
        made = _make_again(path, record, console)
    except AigcError as exc:
        return cannot(str(exc))
    ours = strip_png_manifest(data)
    device = record.get("device")
    elsewhere = f" (made on {device}, replayed on {made['device']})" if device != made["device"] else ""
    if made["bytes"] == ours:
        return {
            "identical": True,
            "summary": "identical bytes" + (" (but the C2PA manifest)" if ours != data else ""),
        }
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        theirs = np.asarray(image.convert("RGB"), dtype=np.int16)
    with Image.open(io.BytesIO(made["bytes"])) as image:  # encoded as the file was (JPEG, WebP: lossy)
        again = np.asarray(image.convert("RGB"), dtype=np.int16)
    if theirs.shape != again.shape:
        return {
            "identical": False,
            "summary": f"a different size: {again.shape[1]}x{again.shape[0]}{elsewhere}",
        }
    diff = np.abs(theirs - again)
    if not diff.any():
        return {"identical": True, "summary": "identical pixels (other bytes of the file differ)"}
    return {
        "identical": False,
        "max_difference": int(diff.max()),
        "mean_difference": round(float(diff.mean()), 4),
        "summary": f"the pixels differ: at most {int(diff.max())} of 255, {float(diff.mean()):.4f} on average"
        + elsewhere,
    }


def _make_again(path: Path, record: dict[str, Any], console: Console) -> dict[str, Any]:
    """The image made again from `record` on this machine: its file's bytes (unsigned) in the format of
    `path`, and the device it ran on."""
    from .. import logs
    from ..core import image as core_image
    from ..core.events import Result
    from ..metadata import image_metadata
    from ..output import IMAGE_FORMATS, encode_image
    from ..pool import default_pool
    from ..records import localize
    from ..settings import resolve_settings

    record = localize(record, str(path), lambda message, _code: console.warn(message), logs.used_paths)
    flags = {"mark": record.get("digital_source_type") is not None, "count": 1}
    resolved = resolve_settings("image", flags, record, str(path))
    pool = default_pool()
    job = core_image.prepare(resolved, str(record.get("prompt", "")), console.reporter(seeds=False), pool)
    for event in core_image.run(job, pool.get(job.key)):
        if isinstance(event, Result):
            fmt = IMAGE_FORMATS.get(path.suffix.lower(), "PNG")
            data = encode_image(event.payload, fmt, image_metadata(fmt, event.record))
            return {"bytes": data, "device": job.key.device}
    raise GenerationError("the replay made no image")


def strip_png_manifest(data: bytes) -> bytes:
    """A PNG without its C2PA chunk (caBX): the bytes it had before it was signed."""
    import struct

    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, offset = [data[:8]], 8
    while offset + 8 <= len(data):
        size = struct.unpack(">I", data[offset : offset + 4])[0]
        end = offset + 12 + size
        if data[offset + 4 : offset + 8] != b"caBX":
            out.append(data[offset:end])
        offset = end
    return b"".join(out)
