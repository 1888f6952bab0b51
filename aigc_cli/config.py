"""Environment variables, read in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TRUTHY = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUTHY


@dataclass(frozen=True)
class Settings:
    home: Path
    """AIGC_HOME: where aigc keeps what it makes (converted embedded models). Default ~/.local/share/aigc."""
    device: str
    """AIGC_DEVICE: the default for --device."""
    debug: bool
    """AIGC_DEBUG=1: show tracebacks."""
    text_model: str | None
    image_model: str | None
    speech_model: str | None

    def default_model(self, modality: str) -> str | None:
        return {"text": self.text_model, "image": self.image_model, "speech": self.speech_model}[modality]


def settings() -> Settings:
    """The settings in force now (cheap: read afresh so that flags that set variables are seen)."""
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    home = Path(os.environ.get("AIGC_HOME") or data_home / "aigc").expanduser()
    return Settings(
        home=home,
        device=os.environ.get("AIGC_DEVICE", "auto") or "auto",
        debug=_flag("AIGC_DEBUG"),
        text_model=os.environ.get("AIGC_TEXT_MODEL") or None,
        image_model=os.environ.get("AIGC_IMAGE_MODEL") or None,
        speech_model=os.environ.get("AIGC_SPEECH_MODEL") or None,
    )


def is_offline() -> bool:
    """HF_HUB_OFFLINE (set by --offline too): never touch the network."""
    return _flag("HF_HUB_OFFLINE") or _flag("TRANSFORMERS_OFFLINE")


def go_offline() -> None:
    """Apply --offline before any Hugging Face library is imported (they read the variable once)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
