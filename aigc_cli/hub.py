"""The Hugging Face Hub, offline-first: what is cached is used without a round-trip; what is not fails at
once when offline or unreachable (never a retry loop), with the `aigc models pull` that fetches it."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from .config import is_offline
from .errors import ModelNotCachedError, WrongModalityError

if TYPE_CHECKING:
    from .core.events import Reporter

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".ot")
SKIPPED_DIRS = ("onnx/", "openvino/", "flax/", "tf/", "coreml/", "original/", "gguf/", "mlx/")
VARIANT = re.compile(r"\.(fp16|fp32|bf16|non_ema|ema)\.|-(fp16|ema-only|non-ema)\.")
SKIPPED_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".mp4", ".wav", ".onnx_data")


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, so that no network never means a long retry loop."""
    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the proxy knows; let huggingface_hub try through it

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def pick_files(files: list[str]) -> list[str]:
    """The files a pipeline needs: one weight format (safetensors when there is any), no alternatives."""
    kept = [
        f
        for f in files
        if not f.startswith(SKIPPED_DIRS)
        and not f.endswith(SKIPPED_SUFFIXES)
        and not f.startswith(".")
        and "/." not in f
    ]
    weights = [f for f in kept if f.endswith(WEIGHT_SUFFIXES)]
    others = [f for f in kept if not f.endswith(WEIGHT_SUFFIXES)]
    if "model_index.json" in files:  # a diffusers pipeline: its weights live in component folders
        weights = [f for f in weights if "/" in f]
    chosen = []
    for folder in sorted({f.rpartition("/")[0] for f in weights}):
        here = [f for f in weights if f.rpartition("/")[0] == folder]
        plain = [f for f in here if not VARIANT.search(f.rpartition("/")[2])] or here
        chosen += (
            [f for f in plain if f.endswith(".safetensors")]
            or [f for f in plain if f.endswith(".bin")]
            or plain
        )
    return sorted(others + chosen)


def cached_snapshot(repo: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception as exc:  # any failure here only means "not cached"
        if type(exc).__name__ in {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "FileNotFoundError"}:
            return None
        if "local" in str(exc).lower() or "cache" in str(exc).lower():
            return None
        raise


SERVER_NO_PULL = "AIGC_SERVER_NO_PULL"
"""Set to 1 by `aigc serve` without --allow-pull (with HF_HUB_OFFLINE): a model not cached is named as the
server's choice, with its remedy, not as an offline mode the user turned on."""


def not_cached(name: str, why: str) -> ModelNotCachedError:
    return ModelNotCachedError(
        f"Model '{name}' is not cached and {why}: run `aigc models pull {name}` online"
    )


def network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a connection to the Hub that failed: huggingface_hub's own, and the transport
    errors of the HTTP library it uses (httpx2 in huggingface_hub 2.x, httpx in 1.x; found among the
    modules it imported, so whichever it is)."""
    import sys

    from huggingface_hub.errors import LocalEntryNotFoundError

    found: list[type[BaseException]] = [LocalEntryNotFoundError]
    for module in ("httpx2", "httpx"):
        cls = getattr(sys.modules.get(module), "TransportError", None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def require_hub(name: str, pulling: bool = False) -> None:
    """Fail at once, with the remedy, when a download cannot happen. For `aigc models pull` itself
    (`pulling`), the remedy is not that same command but what blocks it."""
    if is_offline():
        if pulling:
            raise ModelNotCachedError(
                f"Cannot download {name}: offline mode is on (HF_HUB_OFFLINE=1 or --offline): "
                "unset it to download"
            )
        if os.environ.get(SERVER_NO_PULL) == "1":  # `aigc serve` without --allow-pull: not the user's offline
            raise ModelNotCachedError(
                f"Model '{name}' is not cached on this server, which downloads nothing unless started with "
                f"--allow-pull: run `aigc models pull {name}` where it runs, or restart it with --allow-pull"
            )
        raise not_cached(name, "offline mode is on")
    if not hub_reachable():
        if pulling:
            raise ModelNotCachedError(
                f"Cannot download {name}: the Hugging Face Hub cannot be reached: "
                "check the network or proxy (HTTPS_PROXY), or run `aigc doctor`"
            )
        raise not_cached(name, "the Hugging Face Hub cannot be reached")


def download(
    repo: str,
    console: Reporter,
    name: str | None = None,
    before_weights: Callable[[Path], None] | None = None,
    pulling: bool = False,
) -> Path:
    """Fetch what the pipeline needs into the Hugging Face cache; `before_weights(folder)` sees the
    config files first (a modality check), so that a wrong model fails before gigabytes move.
    `pulling`: asked for by `aigc models pull` (its failures name another remedy)."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    name = name or repo
    require_hub(name, pulling)
    files = [s.rfilename for s in HfApi().model_info(repo).siblings or []]
    wanted = pick_files(files)
    if before_weights is not None:
        configs = [f for f in ("model_index.json", "config.json") if f in files]
        if not configs:
            raise WrongModalityError(
                f"'{name}' has no config.json or model_index.json: not a model aigc runs"
            )
        paths = [hf_hub_download(repo, f) for f in configs]
        before_weights(Path(paths[0]).parent)
    console.note(f"Downloading {repo} ({len(wanted)} files) into the Hugging Face cache")
    return Path(snapshot_download(repo, allow_patterns=wanted))


def fetch_files(
    repo: str, files: tuple[str, ...], name: str, console: Reporter, pulling: bool = False
) -> Path:
    """Some files of a repo (a Piper voice), from the cache or the Hub; the folder of the first."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = [try_to_load_from_cache(repo, f) for f in files]
    if all(isinstance(c, str) for c in cached):
        return Path(cached[0]).parent
    require_hub(name, pulling)
    console.note(f"Downloading {name} from {repo} into the Hugging Face cache")
    paths = [hf_hub_download(repo, f) for f in files]
    return Path(paths[0]).parent
