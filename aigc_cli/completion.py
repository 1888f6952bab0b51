"""Shell completion of values (`aigc text -m smo<TAB>`, `--backend <TAB>`): model names, the choices of a
setting, devices, audio formats, a Piper voice's speakers. Typer calls these on every TAB in a fresh
process, so they read a few small files and import nothing heavy (no torch, no transformers)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .registry import DEFAULT_MODELS, PIPER_NAME, PIPER_REPO, SPECS, lookup

DEVICES = ("auto", "cpu", "cuda", "mps", "xpu")
"""What --device takes, but cuda:N (which GPUs there are is torch's to say, and a colon splits a word in
bash's completion)."""


def choices(values: Iterable[str]) -> Callable[[str], list[str]]:
    """A completer that offers these values."""
    offered = tuple(values)

    def complete(incomplete: str) -> list[str]:
        return [value for value in offered if value.startswith(incomplete)]

    return complete


def models(*modalities: str) -> Callable[[str], list[tuple[str, str]]]:
    """A completer of model names for -m/--model of these modalities: every alias (with what it is), then
    the models in the Hugging Face cache (Piper voices by name). A name that starts like a path (., /, ~)
    gets nothing, so that the shell completes folders."""

    def complete(incomplete: str) -> list[tuple[str, str]]:
        if incomplete.startswith((".", "/", "~")):
            return []
        return [(name, about) for name, about in model_names(modalities) if name.startswith(incomplete)]

    return complete


def model_names(modalities: Iterable[str]) -> list[tuple[str, str]]:
    """(name, what it is) of the aliases of these modalities and of the cached models that are not
    aliases: what `aigc models list` shows, found without the network or a model's weights."""
    wanted = set(modalities)
    names = []
    for spec in SPECS:
        if spec.modality in wanted:
            names.append((spec.name, spec.description or spec.repo))
            names += [(alias, f"same as {spec.name}") for alias in spec.aliases]
    known = {spec.repo for spec in SPECS} | {name for name, _ in names}
    for repo, snapshots in cached_repos():
        if repo == PIPER_REPO:
            if "speech" in wanted:
                voices = {
                    c.name.removesuffix(".onnx.json") for s in snapshots for c in s.rglob("*.onnx.json")
                }
                names += [(voice, "Piper voice (cached)") for voice in sorted(voices - known)]
        elif repo not in known and (found := cached_modality(snapshots[0])) in wanted | {None}:
            names.append((repo, f"{found or 'a'} model (cached)"))
    return names


def cached_repos() -> list[tuple[str, list[Path]]]:
    """(repo id, its snapshot folders, newest first) of every model in the Hugging Face cache, from the
    folders' names alone."""
    from huggingface_hub import constants  # the cache's place only: no Hub client

    found = []
    for folder in sorted(Path(constants.HF_HUB_CACHE).glob("models--*")):
        snapshots = [p for p in (folder / "snapshots").glob("*") if p.is_dir()]
        if snapshots:
            repo = folder.name.removeprefix("models--").replace("--", "/")
            found.append((repo, sorted(snapshots, key=lambda p: p.stat().st_mtime, reverse=True)))
    return found


def cached_modality(snapshot: Path) -> str | None:
    """The modality a snapshot's config files name (as loading.detect_modality reads them); None where
    they do not say without asking transformers."""
    from .loading import SPEECH_MODEL_TYPES

    if (snapshot / "model_index.json").is_file():
        return "image"
    config = _read_json(snapshot / "config.json")
    if config.get("model_type") in SPEECH_MODEL_TYPES:
        return "speech"
    architectures = config.get("architectures") or []
    if any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "text"
    return None


def speakers(ctx: Any, incomplete: str) -> list[str]:
    """--voice: the speaker names of the Piper voice that -m names (else the configured or default speech
    model), from its .onnx.json. Other models name no speakers: SpeechT5 takes an x-vector .npy, which the
    shell completes as a file. OpenAI's voice names are not offered: only `aigc serve` takes them (a voice
    without that speaker speaks with its own), a local run refuses them."""
    model = (getattr(ctx, "params", None) or {}).get("model") or _configured_speech_model()
    names: list[str] = []
    for config in _voice_configs(model):
        ids = _read_json(config).get("speaker_id_map")
        if isinstance(ids, dict):
            names += sorted(ids, key=lambda name: ids[name] if isinstance(ids[name], int) else 0)
    return [name for name in names if name.startswith(incomplete)]


def _configured_speech_model() -> str:
    from .errors import AigcError
    from .settings import configured

    try:
        value, _ = configured("speech", "model")
    except AigcError:  # a bad value in config.toml: the run will say so; completion stays quiet
        value = None
    return value or DEFAULT_MODELS["speech"]


def _voice_configs(model: str) -> list[Path]:
    """The .onnx.json of a Piper voice named by an alias, a cached voice name or a folder; [] otherwise."""
    spec = lookup(model)
    if spec is not None:
        if spec.repo != PIPER_REPO or not spec.files:
            return []
        from .catalog import spec_folder

        _, folder = spec_folder(spec)
        name = f"{Path(spec.files[0]).name}.json"
        return [p for p in (folder / name, folder / "data" / name) if p.is_file()] if folder else []
    path = Path(model).expanduser()
    if path.is_dir():
        return sorted(path.glob("*.onnx.json"))
    if PIPER_NAME.match(model):
        for repo, snapshots in cached_repos():
            if repo == PIPER_REPO:
                return [c for s in snapshots for c in s.rglob(f"{model}.onnx.json")][:1]
    return []


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def audio_formats(incomplete: str) -> list[str]:
    """--format of `aigc speak`: the audio file formats, and raw."""
    from .output import AUDIO_FORMATS

    return [name for name in (*AUDIO_FORMATS, "raw") if name.startswith(incomplete)]
