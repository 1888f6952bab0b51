"""C2PA content credentials: a signed manifest in each image and WAV/FLAC/MP3 aigc writes when a signing
certificate is configured, and reading one back (`aigc verify`). c2pa-python (the Content Authenticity
Initiative's library, an optional extra) is imported only inside the functions that need it.

Where the certificate comes from: AIGC_SIGN_CERT and AIGC_SIGN_KEY (PEM files), else `cert` and `key` under
`[credentials]` in config.toml (a relative path is relative to that file's folder); `tsa` there (or
AIGC_SIGN_TSA) names an RFC 3161 timestamp authority; `trust` (or AIGC_TRUST_ANCHORS) a PEM file of the CA
certificates `aigc verify` trusts.

Signing is the last write: `sign` returns the file's final bytes, and nothing may change them after it (a
chunk added later breaks the credential's hash).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .marking import source_type_url

SIGNED_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
}
"""The formats aigc signs (its name for the format -> the media type); ogg and opus files are marked but not
signed, aac neither: c2pa-python 0.38 has no Ogg or ADTS support."""
RECORD_LABEL = "org.aigc.record"
"""The manifest assertion that holds aigc's record (prompt, model, revision, seed, settings)."""
NEEDS_C2PA = "Content credentials need c2pa-python: pip install 'aigc[c2pa]'"


@dataclass(frozen=True)
class SigningSetup:
    """The certificate chain and key that sign, and where they were set."""

    cert: Path
    key: Path
    source: str
    """AIGC_SIGN_CERT / AIGC_SIGN_KEY, or [credentials] in PATH: what an error names."""
    tsa: str | None = None


def _credentials_table() -> tuple[dict[str, Any], Path]:
    from .config import read_config_file

    tables, path = read_config_file()
    return dict(tables.get("credentials") or {}), path


def _path(value: str, base: Path | None) -> Path:
    path = Path(value).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def signing_setup() -> SigningSetup | None:
    """The signing certificate and key in force, None when none is configured; UsageError (exit 2) for half
    a setup, a missing file, or c2pa-python not installed."""
    cert, key = os.environ.get("AIGC_SIGN_CERT"), os.environ.get("AIGC_SIGN_KEY")
    tsa = os.environ.get("AIGC_SIGN_TSA") or None
    base = None
    source = "AIGC_SIGN_CERT / AIGC_SIGN_KEY"
    if not cert and not key:
        table, config = _credentials_table()
        cert, key, tsa = table.get("cert"), table.get("key"), tsa or table.get("tsa")
        base, source = config.parent, f"[credentials] in {config}"
    if not cert and not key:
        return None
    if not cert or not key:
        raise UsageError(f"Signing needs both a certificate chain and its key: {source} sets only one")
    setup = SigningSetup(_path(cert, base), _path(key, base), source, tsa)
    for what, path in (("certificate chain", setup.cert), ("private key", setup.key)):
        if not path.is_file():
            raise UsageError(f"The signing {what} {path} ({source}) is not a file: fix the path")
    import importlib.util

    if importlib.util.find_spec("c2pa") is None:
        raise UsageError(f"{NEEDS_C2PA} (or unset {source} to write unsigned files)")
    return setup


def trust_anchors(given: str | None = None) -> Path | None:
    """The PEM file of trusted CA certificates: `given` (--trust), else AIGC_TRUST_ANCHORS, else `trust`
    in [credentials]; None when none is set. UsageError when the file is missing."""
    base = None
    value, source = given, "--trust"
    if not value:
        value, source = os.environ.get("AIGC_TRUST_ANCHORS"), "AIGC_TRUST_ANCHORS"
    if not value:
        table, config = _credentials_table()
        value, base, source = table.get("trust"), config.parent, f"[credentials] trust in {config}"
    if not value:
        return None
    path = _path(value, base)
    if not path.is_file():
        raise UsageError(
            f"The trust anchors {path} ({source}) is not a file: give a PEM file of CA certificates"
        )
    return path


def _algorithm(key_pem: bytes, where: Path) -> str:
    """The C2PA signing algorithm for a private key: es256/es384/es512 (EC P-256/384/521), ps256 (RSA),
    ed25519."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"The signing key {where} is not an unencrypted PEM private key: {exc}".rstrip(". ")
        ) from exc
    if isinstance(key, ec.EllipticCurvePrivateKey):
        bits = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in bits:
            return bits[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise UsageError(
        f"The signing key {where} is of a kind C2PA cannot sign with: use EC P-256, RSA or Ed25519"
    )


def manifest(record: dict[str, Any], mime: str, title: str, edited: bool) -> dict[str, Any]:
    """The C2PA manifest of one file: c2pa.created (or c2pa.opened + c2pa.edited for an image made from
    the user's init image, its ingredient) with the digital source type and aigc as software agent, and
    aigc's record as an assertion of its own."""
    from .records import public_record

    record = public_record(record)
    version = str(record.get("aigc_version", ""))
    agent = {"name": "aigc", "version": version}
    source = source_type_url(str(record.get("digital_source_type")))
    if edited:
        actions = [
            {"action": "c2pa.opened", "parameters": {"ingredientIds": ["init"]}},
            {"action": "c2pa.edited", "digitalSourceType": source, "softwareAgent": agent},
        ]
    else:
        actions = [{"action": "c2pa.created", "digitalSourceType": source, "softwareAgent": agent}]
    return {
        "claim_generator_info": [agent],
        "title": title,
        "format": mime,
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": actions}},
            {"label": RECORD_LABEL, "data": record},
        ],
    }


def sign(
    data: bytes, fmt: str, record: dict[str, Any], ingredient: bytes | None = None, title: str = ""
) -> bytes:
    """The file `data` (format `fmt`: PNG, JPEG, WEBP, wav, flac, mp3) with a signed C2PA manifest when a
    certificate is configured and the record is marked; `data` unchanged otherwise (and for formats C2PA
    does not cover). `ingredient`: the init image's file, for image-to-image. A certificate or key c2pa
    refuses is a UsageError naming where it was set."""
    if not record.get("digital_source_type") or fmt not in SIGNED_FORMATS:
        return data
    setup = signing_setup()
    if setup is None:
        return data
    import c2pa

    mime = SIGNED_FORMATS[fmt]
    cert, key = setup.cert.read_bytes(), setup.key.read_bytes()
    try:
        info = c2pa.C2paSignerInfo(_algorithm(key, setup.key), cert, key, setup.tsa)
        with c2pa.Signer.from_info(info) as signer:
            edited = ingredient is not None
            name = title or f"aigc{_suffix(fmt)}"
            # No thumbnail: the file is its own picture, and one made by c2pa is larger than a small image.
            settings = c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}})
            with (
                c2pa.Context(settings) as context,
                c2pa.Builder(manifest(record, mime, name, edited), context) as builder,
            ):
                if edited:
                    parent = {"title": record.get("init_image") or "init", "relationship": "parentOf"}
                    builder.add_ingredient(
                        {**parent, "label": "init"}, _sniff(ingredient), io.BytesIO(ingredient)
                    )
                out = io.BytesIO()
                builder.sign(signer, mime, io.BytesIO(data), out)
                return out.getvalue()
    except c2pa.C2paError as exc:
        raise UsageError(
            f"Cannot sign with the certificate and key of {setup.source}: {exc}: check that the key matches "
            "the certificate, and that the certificate is fit for C2PA (digitalSignature key usage, an "
            "emailProtection or documentSigning extended key usage, not a CA, issued by one)"
        ) from exc


def signed_png(data: bytes) -> bool:
    """Whether PNG bytes carry a C2PA manifest (a caBX chunk before the image data)."""
    import struct

    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    offset = 8
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"caBX":
            return True
        if kind == b"IDAT":
            return False
        offset += 12 + size
    return False


def _suffix(fmt: str) -> str:
    return {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}.get(fmt, f".{fmt}")


def _sniff(data: bytes) -> str:
    """The media type of an init image's file from its first bytes (PNG, JPEG, WebP; else PNG's)."""
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


# --- reading back -------------------------------------------------------------------------------------------


@dataclass
class Credential:
    """What a file's C2PA manifest says, as `aigc verify` reports it."""

    state: str
    """Trusted, Valid (intact, signer not trusted here), Invalid, or Damaged (the manifest cannot be read)."""
    failures: list[str] = field(default_factory=list)
    """What failed, each 'code: explanation' (c2pa's validation codes)."""
    signer: dict[str, Any] = field(default_factory=dict)
    """common_name, issuer, alg, time (when timestamped)."""
    actions: list[str] = field(default_factory=list)
    digital_source_type: str | None = None
    generator: str | None = None
    record: dict[str, Any] | None = None
    """aigc's record, when the manifest holds one."""


UNTRUSTED = "signingCredential.untrusted"


def read_credential(path: Path, trust: Path | None) -> Credential | None:
    """The file's C2PA manifest and its validation against `trust` (a PEM of CA certificates; None: none
    trusted), or None when it has none. A file c2pa cannot read a manifest from gives Damaged."""
    import c2pa

    settings = None
    if trust is not None:
        anchors = trust.read_text(encoding="utf-8", errors="replace")
        settings = c2pa.Settings.from_dict(
            {"trust": {"trust_anchors": anchors}, "verify": {"verify_trust": True}}
        )
    data = path.read_bytes()
    mime = sniff_any(data)
    if mime is None:  # a format C2PA does not cover (Ogg, ADTS, text...): nothing to read
        return None
    try:
        with c2pa.Context(settings) if settings is not None else _no_context() as context:
            reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, context)
            if reader is None:
                return None
            with reader:
                store = json.loads(reader.json())
                state = reader.get_validation_state() or "Invalid"
                results = reader.get_validation_results() or {}
    except c2pa.C2paError.ManifestNotFound:
        return None
    except c2pa.C2paError as exc:
        return Credential("Damaged", [str(exc)])
    failures = [
        f"{f.get('code')}: {f.get('explanation')}"
        for f in (results.get("activeManifest") or {}).get("failure", [])
        if f.get("code") != UNTRUSTED
    ]
    failures += [
        f"{s.get('code')}: {s.get('explanation')}"
        for s in store.get("validation_status") or []
        if s.get("code") != UNTRUSTED
    ]
    failures = list(dict.fromkeys(failures))
    if failures:
        state = "Invalid"
    active = (store.get("manifests") or {}).get(store.get("active_manifest") or "", {})
    found = Credential(state, failures)
    found.signer = dict(active.get("signature_info") or {})
    generators = active.get("claim_generator_info") or []
    found.generator = " ".join(str(generators[0].get(k, "")) for k in ("name", "version")).strip() or None
    for assertion in active.get("assertions") or []:
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in (assertion.get("data") or {}).get("actions") or []:
                found.actions.append(str(action.get("action")))
                found.digital_source_type = found.digital_source_type or action.get("digitalSourceType")
        elif assertion.get("label") == RECORD_LABEL and isinstance(assertion.get("data"), dict):
            found.record = assertion["data"]
    return found


class _no_context:
    """`with` that yields None: c2pa's default context."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def sniff_any(data: bytes) -> str | None:
    """The media type of a file C2PA covers, from its first bytes; None for any other."""
    from .marking import skip_id3

    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data.startswith((b"\x89PNG", b"\xff\xd8")) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return _sniff(data)
    after = skip_id3(data)
    if after[:4] == b"fLaC":
        return "audio/flac"
    if after is not data or after[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    return None
