"""`aigc models list|pull|path|rm|default`: models in the Hugging Face cache (no second copy) and the
embedded ones."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..config import write_default_model
from ..console import Console, terminal
from ..errors import ModelUnavailableError, UsageError
from ..output import write_json_line, write_text
from ..registry import DEFAULT_MODELS, MODALITIES, SPECS, ModelSpec, lookup, resolve
from ..settings import configured
from .doctor import folder_size, human_size


def _check_modality(modality: str | None) -> None:
    if modality is not None and modality not in MODALITIES:
        raise UsageError(f"Unknown modality '{modality}': use {', '.join(MODALITIES)}")


def _spec_folder(spec: ModelSpec) -> tuple[str, Path | None]:
    """(source, local folder or None) for an alias, without downloading or converting anything."""
    from huggingface_hub import try_to_load_from_cache

    from ..hub import cached_snapshot
    from ..loading import embedded_package

    if spec.embedded and (package := embedded_package(spec)) is not None:
        return "embedded", package
    if spec.files:
        cached = [try_to_load_from_cache(spec.repo, f) for f in spec.files]
        return "hub", Path(cached[0]).parent if all(isinstance(c, str) for c in cached) else None
    return "hub", cached_snapshot(spec.repo)


def _cache_repo_folder(repo: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"


def _rows(modality: str | None) -> list[dict[str, Any]]:
    from ..loading import detect_modality

    rows = []
    known_repos = set()
    for spec in SPECS:
        known_repos.add(spec.repo)
        if modality and spec.modality != modality:
            continue
        source, folder = _spec_folder(spec)
        size = (
            folder_size(folder)
            if source == "embedded" and folder
            else folder_size(_cache_repo_folder(spec.repo))
        )
        rows.append(
            {
                "name": spec.name,
                "modality": spec.modality,
                "source": source,
                "repo": spec.repo,
                "license": spec.license,
                "offline": folder is not None,
                "size": size if folder is not None else 0,
                "path": str(folder) if folder else None,
                "description": spec.description,
            }
        )
    from huggingface_hub import scan_cache_dir

    try:
        cached = scan_cache_dir().repos
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
            }
        )
    return rows


def run_list(modality: str | None, as_json: bool) -> None:
    _check_modality(modality)
    rows = _rows(modality)
    if as_json:
        for row in rows:
            write_json_line(row)
        return
    for row in rows:
        mark = "offline" if row["offline"] else "download"
        size = human_size(row["size"]) if row["offline"] else "-"
        write_text(
            f"{row['name']:<22} {row['modality'] or '?':<7} {row['source']:<9} {mark:<9} {size:>9}  "
            f"{row['license'] or '-':<22} {row['repo']}\n"
        )


def _modality_of(name: str) -> str:
    spec = lookup(name)
    return spec.modality if spec else "text"


def run_pull(names: list[str], console: Console) -> None:
    from ..hub import download, fetch_files

    if not console.chatty:
        import huggingface_hub.utils

        huggingface_hub.utils.disable_progress_bars()
    for name in names:
        ref = resolve(name, _modality_of(name))
        if ref.folder is not None:
            raise UsageError(f"'{name}' is a local folder: nothing to pull")
        assert ref.repo is not None
        if ref.files:
            folder = fetch_files(ref.repo, ref.files, name, console)
        else:
            folder = download(ref.repo, console, name=name)
        if ref.spec is not None and ref.spec.vocoder:
            download(ref.spec.vocoder, console, name=ref.spec.vocoder)
        write_text(f"{folder}\n")


def run_path(name: str) -> None:
    from ..loading import locate

    ref = resolve(name, _modality_of(name))
    write_text(f"{locate(ref, None, Console(quiet=True))}\n")


def run_rm(name: str, yes: bool) -> None:
    """Remove a model from the Hugging Face cache (or an embedded model's conversion and exports)."""
    from ..config import settings

    spec = lookup(name)
    ref = resolve(name, spec.modality if spec else "text")
    if ref.folder is not None:
        raise UsageError(f"'{name}' is a local folder: aigc removes only what it downloaded or made")
    targets = []
    if spec is not None and spec.embedded and spec.modality == "text":
        home = settings().home
        converted = [p for p in (home / "embedded").glob("*") if p.is_dir()]
        names = tuple(f"{p.name}-" for p in converted)
        targets += converted + [
            p for p in (home / "onnx").glob("*") if p.is_dir() and p.name.startswith(names)
        ]
    assert ref.repo is not None
    if not ref.files and _cache_repo_folder(ref.repo).is_dir():
        targets.append(_cache_repo_folder(ref.repo))
    if not targets:
        raise ModelUnavailableError(f"'{name}' is not in the cache: nothing to remove")
    size = sum(folder_size(t) for t in targets)
    if not yes:
        if not terminal.stdin():
            raise UsageError(
                f"Removing {name} ({human_size(size)}) needs --yes when there is no terminal to ask"
            )
        import typer

        if not typer.confirm(
            f"Remove {name} ({human_size(size)}): {', '.join(map(str, targets))}?", err=True
        ):
            raise UsageError("Nothing removed")
    for target in targets:
        shutil.rmtree(target)
    write_text(f"removed {name} ({human_size(size)})\n")


def run_default(modality: str | None, name: str | None) -> None:
    if modality is None:
        for each in MODALITIES:
            value, source = configured(each, "model")
            write_text(f"{each:<7} {value or DEFAULT_MODELS[each]}  ({source or 'registry default'})\n")
        return
    _check_modality(modality)
    if name is None:
        value, source = configured(modality, "model")
        write_text(f"{value or DEFAULT_MODELS[modality]}  ({source or 'registry default'})\n")
        return
    resolve(name, modality)  # an unknown name or the wrong modality fails here, before the file changes
    path = write_default_model(modality, name)
    write_text(f"{modality} model: {name} (in {path})\n")
    value, source = configured(modality, "model")
    if value != name:
        Console().warn(f"{source} still sets the {modality} model to {value}: it comes before the file")
