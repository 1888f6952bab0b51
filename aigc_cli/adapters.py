"""What an image request adds to its model: LoRA adapters (`--lora`) and another VAE (`--vae`), found as
models are (a local file or folder, else the Hugging Face cache, else a download unless offline) and
checked before any weights load."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .engines.image import Lora, parse_lora, tiny_vae_repo
from .errors import AigcError, ModelUnavailableError, UsageError
from .hub import cached_snapshot, download, fetch_files
from .registry import REPO_ID, is_path

if TYPE_CHECKING:
    from .core.events import Reporter

VAE_CLASSES = ("AutoencoderTiny", "AutoencoderKL")
HUB_BLOB = re.compile(r"^[0-9a-f]{64}$")


def find_lora(spec: str, console: Reporter, what: str = "--lora") -> Lora:
    """The adapter `spec` names (`NAME_OR_PATH[:WEIGHT]`, settings-checked): a local .safetensors file, a
    local folder holding one, a Hub repo (`owner/name`) or a file in one (`owner/name/file.safetensors`).
    Raises UsageError (exit 2: no such file, no adapter in the folder) or ModelNotCachedError (exit 3:
    a Hub repo not cached while offline)."""
    name, weight = parse_lora(spec)
    path = Path(name).expanduser()
    if is_path(name) or (name.endswith(".safetensors") and not _hub(name)):
        if not path.exists():
            raise UsageError(f"No such file: {name} ({what})")
        file = _adapter_file(path, name, what)
    else:
        repo, inside = _split_hub(name, what)
        with _named_as("LoRA", what):  # the remedy pulls the repo: `aigc models pull owner/name`
            folder = fetch_files(repo, (inside,), repo, console) if inside else _snapshot(repo, console, repo)
        file = folder / inside if inside else _adapter_file(folder, name, what)
    return Lora(name, weight, str(file), _sha256(file))


@contextmanager
def _named_as(noun: str, what: str) -> Iterator[None]:
    """A Hub error about a LoRA or VAE says so ("The LoRA 'x' is not cached ... (--lora)"), not "Model"."""
    try:
        yield
    except AigcError as exc:
        if exc.message.startswith("Model '"):
            exc.message = f"The {noun} '" + exc.message.removeprefix("Model '") + f" ({what})"
        raise


def local_parts(lora: list[str] | None, vae: str | None) -> list[tuple[str, str]]:
    """(setting, name) of each LoRA and VAE a request names by a path on this machine (a server loads
    those only from the Hub; the CLI then runs here)."""
    named = [("lora", parse_lora(spec)[0]) for spec in lora or []] + ([("vae", vae)] if vae else [])
    return [(setting, name) for setting, name in named if is_path(name)]


def _hub(name: str) -> bool:
    parts = name.split("/")
    return len(parts) >= 3 and REPO_ID.match("/".join(parts[:2])) is not None


def _split_hub(name: str, what: str) -> tuple[str, str]:
    """(owner/repo, the file inside it or "")."""
    parts = name.split("/")
    repo = "/".join(parts[:2])
    if len(parts) < 2 or not REPO_ID.match(repo) or (len(parts) > 2 and not name.endswith(".safetensors")):
        raise UsageError(
            f"No such file or Hub repo: {name} ({what}): give a .safetensors file, a folder, "
            "owner/repo or owner/repo/file.safetensors"
        )
    return repo, "/".join(parts[2:])


def _snapshot(repo: str, console: Reporter, name: str) -> Path:
    return cached_snapshot(repo) or download(repo, console, name)


def _adapter_file(path: Path, name: str, what: str) -> Path:
    """The .safetensors file of a LoRA: the path itself, or the one a folder holds (diffusers' own name,
    pytorch_lora_weights.safetensors, when there are several)."""
    if path.is_file():
        if path.suffix != ".safetensors":
            raise UsageError(
                f"{name} ({what}) is not a .safetensors file: LoRA adapters come as .safetensors"
            )
        return path
    files = sorted(path.glob("*.safetensors"))
    preferred = [f for f in files if f.name == "pytorch_lora_weights.safetensors"]
    if len(preferred) == 1 or len(files) == 1:
        return (preferred or files)[0]
    if not files:
        raise UsageError(f"{name} ({what}) holds no .safetensors file: give the LoRA's file")
    shown = ", ".join(f.name for f in files[:4])
    raise UsageError(
        f"{name} ({what}) holds several .safetensors files ({shown}): name one, {name}/{files[0].name}"
    )


def _sha256(file: Path) -> str:
    """The file's SHA-256, hex. A Hub cache file links to a blob named by its SHA-256: that name is used."""
    blob = file.resolve()
    if blob.parent.name == "blobs" and HUB_BLOB.match(blob.name):
        return blob.name
    digest = hashlib.sha256()
    try:
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise UsageError(f"Cannot read {file}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def find_vae(name: str, model_folder: Path, console: Reporter, what: str = "--vae") -> tuple[Path, str]:
    """(the folder of the VAE `name` names, where it came from: the Hub repo or the folder). `taesd` is
    the tiny autoencoder for the model's family (engines.image.TINY_VAES); else a local folder (a VAE's,
    or a pipeline's with a vae/ subfolder) or a Hub repo of an AutoencoderTiny or AutoencoderKL.
    Raises UsageError (exit 2) for what is not a VAE, ModelNotCachedError (exit 3) offline."""
    if name.lower() == "taesd":
        pipeline = _class_name(model_folder / "model_index.json") or ""
        repo = tiny_vae_repo(pipeline)
        if repo is None:
            raise UsageError(f"--vae taesd: there is no tiny autoencoder for a {pipeline or 'this'} pipeline")
        with _named_as("VAE", what):
            return _checked(_snapshot(repo, console, repo), name, what), repo
    path = Path(name).expanduser()
    if path.is_dir():
        return _checked(path / "vae" if (path / "vae" / "config.json").is_file() else path, name, what), str(
            path
        )
    if is_path(name) or not REPO_ID.match(name):
        raise UsageError(f"No such folder: {name} ({what}): give taesd, a VAE's folder or a Hub repo id")
    with _named_as("VAE", what):
        return _checked(_snapshot(name, console, name), name, what), name


def _checked(folder: Path, name: str, what: str) -> Path:
    cls = _class_name(folder / "config.json")
    if cls not in VAE_CLASSES:
        found = f"a {cls}" if cls else "no VAE config"
        raise UsageError(f"{name} ({what}) holds {found}: give an AutoencoderTiny or AutoencoderKL")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ModelUnavailableError(f"{name} ({what}) has no weights in {folder}")
    return folder


def _class_name(config: Path) -> str | None:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("_class_name") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
