"""`aigc models list|pull|path|rm|default`: models in the Hugging Face cache (no second copy) and the
embedded ones."""

from __future__ import annotations

import shutil

from ..catalog import (
    cache_repo_folder,
    folder_size,
    human_size,
    made_from_embedded,
    modality_of,
    model_here,
    rows,
)
from ..config import is_offline, write_default_model
from ..console import Console, terminal
from ..errors import ModelNotCachedError, ModelUnavailableError, UsageError
from ..output import write_json_line, write_text
from ..registry import (
    DEFAULT_MODELS,
    MODALITIES,
    lookup,
    resolve,
)
from ..settings import configured
from .table import Column, render


def _check_modality(modality: str | None) -> None:
    if modality is not None and modality not in MODALITIES:
        raise UsageError(f"Unknown modality '{modality}': use {', '.join(MODALITIES)}")


def run_list(modality: str | None, as_json: bool) -> None:
    """Every alias, then the other models in the cache: a table (table.py: fitted to a terminal, whole in
    a pipe) or JSON lines. A speech list shows each voice's language and speakers."""
    _check_modality(modality)
    found = rows(modality)
    if as_json:
        for row in found:
            write_json_line(row)
        return
    voices = modality == "speech"
    columns = [c for c in COLUMNS if voices or c.header not in ("LANGUAGE", "SPEAKERS")]
    cells = []
    for row in found:
        cells.append(
            (
                row["name"],
                row["modality"] or "?",
                row["source"],
                "offline" if row["offline"] else "download",
                human_size(row["size"]) if row["offline"] else "-",
                *((row["language"] or "-", row["speakers"] or "-") if voices else ()),
                row["license"] or "-",
                row["repo"],
            )
        )
    write_text("".join(f"{line}\n" for line in render(columns, cells, terminal.columns())))


COLUMNS = (
    Column("NAME", give=1, least=24),
    Column("MODALITY"),
    Column("SOURCE"),
    Column("STATUS"),
    Column("SIZE", right=True),
    Column("LANGUAGE"),
    Column("SPEAKERS", right=True),
    Column("LICENSE", give=2, least=10),
    Column("REPO", give=4, least=12, tail=True),
)
"""`models list`'s columns: on a terminal the repo id gives way, then the license; the size and the rest
stay whole, and so does the name (what -m takes) but for a long repo id on a narrow terminal."""


def run_pull(names: list[str], console: Console) -> None:
    from huggingface_hub.errors import OfflineModeIsEnabled

    from ..hub import download, fetch_files, network_errors

    if not console.chatty:
        import huggingface_hub.utils

        huggingface_hub.utils.disable_progress_bars()
    for name in names:
        ref = resolve(name, modality_of(name))
        if ref.folder is not None:
            raise UsageError(f"'{name}' is a local folder: nothing to pull")
        assert ref.repo is not None
        try:
            if ref.files:
                folder = fetch_files(ref.repo, ref.files, name, console, pulling=True)
            else:
                folder = download(ref.repo, console, name=name, pulling=True)
            if ref.spec is not None and ref.spec.vocoder:
                download(ref.spec.vocoder, console, name=ref.spec.vocoder, pulling=True)
        except OfflineModeIsEnabled as exc:
            raise ModelNotCachedError(
                f"Cannot download {name}: offline mode is on (HF_HUB_OFFLINE=1 or --offline): "
                "unset it to download"
            ) from exc
        except network_errors() as exc:  # the Hub went away midway, or a proxy did not answer
            raise ModelNotCachedError(
                f"Cannot download {name}: the Hugging Face Hub cannot be reached: "
                "check the network or proxy (HTTPS_PROXY), or run `aigc doctor`"
            ) from exc
        write_text(f"{folder}\n")


def run_path(name: str) -> None:
    from ..loading import locate

    ref = resolve(name, modality_of(name))
    write_text(f"{locate(ref, None, Console(quiet=True))}\n")


def run_rm(name: str, yes: bool) -> None:
    """Remove a model from the Hugging Face cache (or an embedded model's conversion and exports)."""
    spec = lookup(name)
    ref = resolve(name, spec.modality if spec else "text")
    if ref.folder is not None:
        raise UsageError(f"'{name}' is a local folder: aigc removes only what it downloaded or made")
    targets = []
    if spec is not None and spec.embedded and spec.modality == "text":
        targets += made_from_embedded()
    assert ref.repo is not None
    if not ref.files and cache_repo_folder(ref.repo).is_dir():
        targets.append(cache_repo_folder(ref.repo))
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
            Console().info("Nothing removed")  # the user's answer, not a failure: exit 0
            return
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
    elif not model_here(name, modality):
        from ..hub import hub_reachable

        why = "offline mode is on" if is_offline() else None
        if why is None and not hub_reachable(timeout=2.0):
            why = "the Hugging Face Hub cannot be reached"
        if why is not None:  # online, the first run downloads it
            Console().warn(
                f"{name} is not here and {why}: runs fail until `aigc models pull {name}` runs online"
            )
