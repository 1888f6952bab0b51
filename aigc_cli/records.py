"""Records that leave the machine name no path of it: a local model, LoRA or VAE is recorded by its folder or
file name and a hash (as AUTOMATIC1111 records `Model: NAME, Model hash: ...`), and found again by that name
and hash for `--from` and `aigc verify --replay`. The log keeps the full paths (logs.py) for local reruns.

A folder's hash: the SHA-256 of the sorted lines `RELATIVE_PATH SHA256_OF_THE_FILE` of every file in it; the
record keeps its first 10 hex digits, as A1111 does for a checkpoint. File hashes are remembered per
(path, size, modification time) in AIGC_HOME/hashes.json, so a large model is read once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import ModelUnavailableError
from .registry import is_path

HASH_DIGITS = 10
_memory: dict[str, list[Any]] = {}
_served: dict[str, Path] = {}
"""Folder name -> folder, for the local folders `aigc serve` was started with (--preload)."""


def public_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record as a file carries it: `model`, `source`, `vae`, `vae_source` and each LoRA that name a
    path here become that folder's or file's name, with `model_hash` / `vae_hash` (a LoRA has its sha256
    already). Idempotent; a record with no local path comes back equal."""
    out = dict(record)
    for key, hash_key in (("model", "model_hash"), ("vae", "vae_hash")):
        value = out.get(key)
        if _local(value):
            if hash_key not in out:
                out[hash_key] = folder_hash(Path(value).expanduser())
            out[key] = _name(value)
    for key in ("source", "vae_source"):
        if _local(out.get(key)):
            out[key] = _name(out[key])
    if out.get("lora"):
        out["lora"] = [_public_lora(spec) for spec in out["lora"]]
    if out.get("loras"):
        out["loras"] = [
            {**x, "name": _lora_name(x["name"]) if _local(x.get("name")) else x["name"]} for x in out["loras"]
        ]
    return out


def _local(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and (Path(value).is_absolute() or is_path(value))


def _name(value: str) -> str:
    return Path(value).expanduser().resolve().name or value


def _public_lora(spec: str) -> str:
    from .engines.image import parse_lora

    try:
        name, weight = parse_lora(spec)
    except ValueError:
        return spec
    return f"{_lora_name(name)}:{weight:g}" if _local(name) else spec


def _lora_name(value: str) -> str:
    """A local LoRA file by its name; diffusers' default file name (pytorch_lora_weights.safetensors) by
    its folder's, which tells LoRAs apart (and which diffusers loads the same file from)."""
    path = Path(value).expanduser().resolve()
    return path.parent.name if path.stem == "pytorch_lora_weights" and path.parent.name else path.name


def file_sha256(path: Path) -> str:
    """A file's SHA-256 (hex), remembered by path, size and modification time."""
    from .adapters import _sha256

    stat = path.stat()
    key = str(path.resolve())
    cache = _load_cache()
    known = cache.get(key)
    if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
        return str(known[2])
    digest = _sha256(path)
    cache[key] = [stat.st_size, stat.st_mtime_ns, digest]
    _save_cache(cache)
    return digest


def folder_hash(path: Path) -> str:
    """The first HASH_DIGITS hex digits of a model folder's (or file's) hash."""
    if path.is_file():
        return file_sha256(path)[:HASH_DIGITS]
    lines = []
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        lines.append(f"{file.relative_to(path).as_posix()} {file_sha256(file)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:HASH_DIGITS]


def _cache_path() -> Path:
    from .config import settings

    return settings().home / "hashes.json"


def _load_cache() -> dict[str, list[Any]]:
    if not _memory:
        try:
            data = json.loads(_cache_path().read_text(encoding="utf-8"))
            _memory.update(data if isinstance(data, dict) else {})
        except (OSError, ValueError):
            pass
    return _memory


def _save_cache(cache: dict[str, list[Any]]) -> None:
    """Best effort: a cache that cannot be written only costs reading the file again next time."""
    from .errors import OutputError
    from .output import write_atomic

    try:
        _cache_path().parent.mkdir(parents=True, exist_ok=True)
        write_atomic(_cache_path(), json.dumps(cache).encode())
    except (OSError, OutputError):  # the hash is still right
        pass


# --- finding a recorded local part again ------------------------------------------------------------------


def search_folders() -> list[Path]:
    """Where a recorded name is looked for: each folder of AIGC_MODEL_PATH (os.pathsep-separated), then the
    current folder."""
    named = [Path(p).expanduser() for p in os.environ.get("AIGC_MODEL_PATH", "").split(os.pathsep) if p]
    return [*named, Path.cwd()]


def _candidates(name: str, logged: list[str]) -> list[Path]:
    found = [folder / name for folder in search_folders()]
    found += [Path(p) for p in logged if Path(p).name == name]
    unique: dict[str, Path] = {}
    for path in found:
        if path.exists():
            unique.setdefault(str(path.resolve()), path.resolve())
    return list(unique.values())


def locate(name: str, digest: str | None, logged: list[str]) -> tuple[Path | None, bool]:
    """(the path of a recorded local part, whether its hash matches): the first candidate whose hash is
    `digest` (a prefix of its SHA-256 for a file), else the first one named so; (None, False) when there is
    none. Candidates: AIGC_MODEL_PATH's folders, the current folder, and the paths the log has used."""
    candidates = _candidates(name, logged)
    for path in candidates:
        if digest and _hash_of(path).startswith(digest):
            return path, True
    return (candidates[0], not digest) if candidates else (None, False)


def _hash_of(path: Path) -> str:
    return file_sha256(path) if path.is_file() else folder_hash(path)


def localize(
    record: dict[str, Any], origin: str, warn: Any, used: Any, model_given: bool = False
) -> dict[str, Any]:
    """A file's record with the local parts it names by name (model, LoRAs, VAE) replaced by where they are
    here, for `--from` and `--replay`; `warn(message, code)` when one is found by name but its hash differs.
    used(part): the paths of a part (model, lora, vae) the log has used (logs.used_paths). model_given: -m
    names the model, so the record's is not looked for.
    ModelUnavailableError (exit 3) when the model is not found, naming the remedies."""
    out = dict(record)
    model = out.get("model")
    if isinstance(model, str) and out.get("model_hash") and not is_path(model) and not model_given:
        path, same = locate(model, out["model_hash"], used("model"))
        if path is None:
            raise ModelUnavailableError(
                f"{origin} was made with the local model {model} (hash {out['model_hash']}), which is not "
                "here: give its folder with -m, or put the folder that holds it in AIGC_MODEL_PATH"
            )
        if not same:
            warn(
                f"the model {path} has changed since the image was made: the image will differ",
                "model_changed",
            )
        out["model"] = str(path)
    vae = out.get("vae")
    if isinstance(vae, str) and out.get("vae_hash") and not is_path(vae):
        path, _same = locate(vae, out["vae_hash"], used("vae"))
        out["vae"] = str(path) if path is not None else vae
    loras = {x.get("name"): x.get("sha256") for x in out.get("loras") or [] if isinstance(x, dict)}
    if out.get("lora"):
        from .engines.image import parse_lora

        specs = []
        for spec in out["lora"]:
            name, weight = parse_lora(spec)
            if not is_path(name) and name.endswith(".safetensors") and "/" not in name:
                path, _same = locate(name, loras.get(name), used("lora"))
                name = str(path) if path is not None else name
            specs.append(f"{name}:{weight:g}")
        out["lora"] = specs
    return out


def serve_by_name(folder: Path) -> None:
    """Let requests name this local folder by its name, as a file's record does (aigc serve's --preload
    folders: a client that makes a file again from its record sends the name)."""
    _served.setdefault(folder.resolve().name, folder.resolve())


def served_folder(name: str) -> str:
    """The model setting's normalizer: a --preload folder's name -> that folder; anything else as it is."""
    path = _served.get(name)
    return str(path) if path is not None and not is_path(name) else name
