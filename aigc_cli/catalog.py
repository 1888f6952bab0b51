"""What models are here without the network: every alias (embedded, cached or not), the other models in
the Hugging Face cache, their sizes and voices, and the modality of a name. `aigc models list`, the
server's /v1/models and `aigc serve --preload` read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .registry import PIPER_NAME, PIPER_REPO, SPECS, ModelSpec, lookup


def folder_size(path: Path) -> int:
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def spec_folder(spec: ModelSpec) -> tuple[str, Path | None]:
    """(source, local folder or None) for an alias, without downloading or converting anything."""
    from huggingface_hub import try_to_load_from_cache

    from .hub import cached_snapshot
    from .loading import embedded_package

    if spec.embedded and (package := embedded_package(spec)) is not None:
        return "embedded", package
    if spec.files:
        cached = [try_to_load_from_cache(spec.repo, f) for f in spec.files]
        return "hub", Path(cached[0]).parent if all(isinstance(c, str) for c in cached) else None
    return "hub", cached_snapshot(spec.repo)


def cache_repo_folder(repo: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"


def made_from_embedded() -> list[Path]:
    """What aigc made from the embedded text model: its conversions (AIGC_HOME/embedded/*) and the ONNX
    exports of them (AIGC_HOME/onnx/<conversion>-<key>-<precision>)."""
    from .config import settings

    home = settings().home
    converted = sorted(p for p in (home / "embedded").glob("*") if p.is_dir())
    names = tuple(f"{p.name}-" for p in converted)
    exports = sorted(p for p in (home / "onnx").glob("*") if p.is_dir() and p.name.startswith(names))
    return converted + exports


def _embedded_size(spec: ModelSpec, package: Path) -> int:
    """What an embedded model takes on disk: the text model's GGUF and what aigc made from it; a voice's
    package."""
    if spec.modality != "text":
        return folder_size(package)
    from .loading import embedded_gguf

    gguf = embedded_gguf(spec)
    return (gguf.stat().st_size if gguf else 0) + sum(folder_size(p) for p in made_from_embedded())


def voice_facts(config: Path | None) -> dict[str, Any]:
    """A Piper voice's language and speakers, from the .onnx.json beside its .onnx."""
    facts: dict[str, Any] = {"language": None, "speakers": None, "speaker_names": None}
    if config is None:
        return facts
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return facts
    if not isinstance(data, dict):
        return facts
    language = data.get("language")
    if isinstance(language, dict):
        facts["language"] = language.get("code")
    ids = data.get("speaker_id_map")
    names = sorted(ids, key=lambda n: ids[n]) if isinstance(ids, dict) else []
    speakers = data.get("num_speakers")
    facts["speakers"] = speakers if isinstance(speakers, int) and speakers > 0 else max(len(names), 1)
    facts["speaker_names"] = names
    return facts


def voice_config(folder: Path | None, voice: str | None = None) -> Path | None:
    """The .onnx.json of the Piper voice in a folder (an embedded package's data/ folder too)."""
    if folder is None:
        return None
    for place in (folder, folder / "data"):
        configs = sorted(place.glob(f"{voice or '*'}.onnx.json"))
        if configs:
            return configs[0]
    return None


def _file_sizes(folder: Path, files: tuple[str, ...]) -> int:
    """The size of some files of a repo, all in `folder` (the cached blobs they point to)."""
    paths = [folder / Path(f).name for f in files]
    return sum(p.stat().st_size for p in paths if p.is_file())


def _cached_piper_voices(covered: set[str]) -> list[dict[str, Any]]:
    """Every Piper voice in the Hugging Face cache of rhasspy/piper-voices, but those an alias names."""
    snapshots = cache_repo_folder(PIPER_REPO) / "snapshots"
    newest_first = sorted(
        (p for p in snapshots.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    rows: dict[str, dict[str, Any]] = {}
    for snapshot in newest_first:
        for config in sorted(snapshot.rglob("*.onnx.json")):
            voice = config.name.removesuffix(".onnx.json")
            onnx = config.with_name(f"{voice}.onnx")
            if voice in rows or voice in covered or not onnx.is_file():
                continue
            rows[voice] = {
                "name": voice,
                "modality": "speech",
                "source": "hub",
                "repo": PIPER_REPO,
                "license": None,
                "offline": True,
                "size": onnx.stat().st_size + config.stat().st_size,
                "path": str(config.parent),
                "description": f"Piper voice {voice}",
                **voice_facts(config),
            }
    return [rows[voice] for voice in sorted(rows)]


def rows(modality: str | None) -> list[dict[str, Any]]:
    from .loading import detect_modality

    rows = []
    known_repos = set()
    voices_of_aliases = set()
    for spec in SPECS:
        known_repos.add(spec.repo)
        if spec.repo == PIPER_REPO and spec.files:
            voices_of_aliases.add(Path(spec.files[0]).name.removesuffix(".onnx"))
        if modality and spec.modality != modality:
            continue
        source, folder = spec_folder(spec)
        if folder is None:
            size = 0
        elif source == "embedded":
            size = _embedded_size(spec, folder)
        elif spec.files:
            size = _file_sizes(folder, spec.files)
        else:
            size = folder_size(cache_repo_folder(spec.repo))
        voice = Path(spec.files[0]).name.removesuffix(".onnx") if spec.files else None
        facts = voice_facts(voice_config(folder, voice) if spec.modality == "speech" else None)
        rows.append(
            {
                "name": spec.name,
                "modality": spec.modality,
                "source": source,
                "repo": spec.repo,
                "license": spec.license,
                "offline": folder is not None,
                "size": size,
                "path": str(folder) if folder else None,
                "description": spec.description,
                **facts,
            }
        )
    if modality in (None, "speech"):
        rows += _cached_piper_voices(voices_of_aliases)
    from huggingface_hub import constants, scan_cache_dir

    try:  # the cache named now (scan_cache_dir's default is the one named when it was first imported)
        cached = scan_cache_dir(constants.HF_HUB_CACHE).repos
    except Exception:  # no cache folder yet (CacheNotFound) or an unreadable one: nothing else to list
        cached = []
    for repo in sorted(cached, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or repo.repo_id in known_repos or not repo.revisions:
            continue
        snapshot = Path(max(repo.revisions, key=lambda r: r.last_modified).snapshot_path)
        found, described = detect_modality(snapshot)
        if modality and found != modality:
            continue
        rows.append(
            {
                "name": repo.repo_id,
                "modality": found,
                "source": "hub",
                "repo": repo.repo_id,
                "license": None,
                "offline": True,
                "size": repo.size_on_disk,
                "path": str(snapshot),
                "description": described,
                **voice_facts(voice_config(snapshot) if found == "speech" else None),
            }
        )
    return rows


def available_models() -> list[tuple[str, str | None]]:
    """(name, modality) of every model here without the network: aliases that are embedded or cached,
    then the other models in the Hugging Face cache (what the server lists in /v1/models)."""
    return [(row["name"], row["modality"]) for row in rows(None) if row["offline"]]


def model_here(name: str, modality: str) -> bool:
    """Whether `name` (an alias, a folder, a Hub repo id or a Piper voice's name) can run without the
    network: embedded, a folder, or in the Hugging Face cache. Raises what registry.resolve raises."""
    from .hub import cached_snapshot
    from .registry import resolve

    ref = resolve(name, modality)
    if ref.folder is not None:
        return True
    if ref.spec is not None:
        return spec_folder(ref.spec)[1] is not None
    if ref.repo is None:
        return False
    snapshot = cached_snapshot(ref.repo)
    return snapshot is not None and all((snapshot / f).is_file() for f in ref.files)


def modality_of(name: str) -> str:
    """The modality of an alias, a local folder or a cached repo (from its config files); "text" when
    nothing tells (a repo not downloaded yet)."""
    from .hub import cached_snapshot
    from .loading import detect_modality
    from .registry import REPO_ID

    spec = lookup(name)
    if spec is not None:
        return spec.modality
    path = Path(name).expanduser()
    if path.is_dir():
        return detect_modality(path)[0] or "text"
    if PIPER_NAME.match(name) and not path.exists():  # a Piper voice by its name: en_GB-alan-low
        return "speech"
    if REPO_ID.match(name) and (snapshot := cached_snapshot(name)) is not None:
        return detect_modality(snapshot)[0] or "text"
    return "text"
