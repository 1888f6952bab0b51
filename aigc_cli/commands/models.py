"""`aigc models list|pull|path`."""

from __future__ import annotations

from pathlib import Path

from ..console import Console
from ..errors import UsageError
from ..registry import MODALITIES, SPECS, resolve
from ..writers import write_json_line, write_text


def _local_folder(spec, console: Console):
    from huggingface_hub import try_to_load_from_cache

    from ..hub import cached_snapshot
    from ..loading import embedded_package

    if spec.embedded and (package := embedded_package(spec)) is not None:
        return "embedded", package
    if spec.files:
        cached = [try_to_load_from_cache(spec.repo, f) for f in spec.files]
        return "hub", Path(cached[0]).parent if all(isinstance(c, str) for c in cached) else None
    return "hub", cached_snapshot(spec.repo)


def run_list(modality: str | None, as_json: bool) -> None:
    if modality is not None and modality not in MODALITIES:
        raise UsageError(f"Unknown modality '{modality}': use {', '.join(MODALITIES)}")
    console = Console(quiet=True)
    rows = []
    for spec in SPECS:
        if modality and spec.modality != modality:
            continue
        source, folder = _local_folder(spec, console)
        rows.append(
            {
                "name": spec.name,
                "modality": spec.modality,
                "source": source,
                "repo": spec.repo,
                "license": spec.license,
                "offline": folder is not None,
                "path": str(folder) if folder else None,
                "description": spec.description,
            }
        )
    if as_json:
        for row in rows:
            write_json_line(row)
        return
    for row in rows:
        mark = "offline" if row["offline"] else "download"
        write_text(f"{row['name']:<14} {row['modality']:<7} {mark:<9} {row['license']:<11} {row['repo']}\n")


def run_pull(names: list[str], console: Console) -> None:
    from ..hub import download

    for name in names:
        ref = resolve(name, _modality_of(name))
        if ref.folder is not None:
            raise UsageError(f"'{name}' is a local folder: nothing to pull")
        folder = download(ref.repo, console, name=name)
        write_text(f"{folder}\n")


def run_path(name: str) -> None:
    from ..loading import locate

    ref = resolve(name, _modality_of(name))
    write_text(f"{locate(ref, None, Console(quiet=True))}\n")


def _modality_of(name: str) -> str:
    from ..registry import lookup

    spec = lookup(name)
    return spec.modality if spec else "text"
