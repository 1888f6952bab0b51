"""GET /v1/audio/voices: the voices each speech model here offers (the route Speaches and Kokoro-FastAPI
serve), read from files: a Piper voice's .onnx.json (its language and speakers), a transformers TTS model's
config. Nothing is loaded to answer it."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ..core.speech import DEFAULT_VOICE


def voices_of(folder: Path | None) -> tuple[str | None, list[str]]:
    """(language code or None, the voice names a request may send) of the speech model in `folder`: a
    Piper voice's speaker names, else ["default"]; a SpeechT5 model has none a request may send (it needs an
    x-vector file, which the server does not read)."""
    from ..catalog import voice_config, voice_facts

    if folder is None:
        return None, [DEFAULT_VOICE]
    config = voice_config(folder)
    if config is not None:
        facts = voice_facts(config)
        return facts["language"], [DEFAULT_VOICE, *(facts["speaker_names"] or [])]
    model_type = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    return None, [] if model_type == "speecht5" else [DEFAULT_VOICE]


def voice_list(loaded: list[dict[str, Any]], model: str | None) -> dict[str, Any]:
    """The answer of GET /v1/audio/voices: {"object": "list", "data": [{"id", "object": "voice", "model",
    "language"}...], "voices": [ids]} for the speech models here (embedded, cached, loaded), or those of
    `model` (a name /v1/models lists, or an alias of one); UnknownModelError (404) for a model not here."""
    from ..catalog import rows
    from ..errors import UnknownModelError
    from ..registry import lookup

    models: dict[str, Path | None] = {}
    for row in rows("speech"):
        if row["offline"]:
            models.setdefault(row["name"], Path(row["path"]) if row["path"] else None)
    for row in loaded:
        if row["modality"] == "speech":
            models.setdefault(row["model"], Path(row["folder"]))
    if model is not None:
        spec = lookup(model)
        wanted = spec.name if spec is not None else model
        if wanted not in models:
            raise UnknownModelError(
                f"No speech model '{model}' on this server: GET /v1/audio/voices lists the voices of "
                "those it has",
                model,
            )
        models = {wanted: models[wanted]}
    data = []
    for name, folder in models.items():
        language, names = voices_of(folder)
        data += [{"id": v, "object": "voice", "model": name, "language": language} for v in names]
    return {"object": "list", "data": data, "voices": sorted({entry["id"] for entry in data})}
