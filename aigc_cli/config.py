"""Environment variables, read in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TRUTHY = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUTHY


@dataclass(frozen=True)
class Settings:
    home: Path
    """AIGC_HOME: where aigc keeps what it makes (converted embedded models). Default ~/.local/share/aigc."""
    debug: bool
    """AIGC_DEBUG=1: show tracebacks."""


def settings() -> Settings:
    """The settings in force now (cheap: read afresh so that flags that set variables are seen)."""
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    home = Path(os.environ.get("AIGC_HOME") or data_home / "aigc").expanduser()
    return Settings(
        home=home,
        debug=_flag("AIGC_DEBUG"),
    )


def is_offline() -> bool:
    """HF_HUB_OFFLINE (set by --offline too): never touch the network."""
    return _flag("HF_HUB_OFFLINE") or _flag("TRANSFORMERS_OFFLINE")


def go_offline() -> None:
    """Apply --offline before any Hugging Face library is imported (they read the variable once)."""
    os.environ["HF_HUB_OFFLINE"] = "1"


# --- AIGC_HOME/config.toml -------------------------------------------------------------------------------
# Precedence for every setting: the flag, then the environment variable (where one exists), then this
# file, then the model's registry defaults.

SETTING_TYPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "text": {
        "model": str,
        "system": str,
        "max_tokens": int,
        "temperature": (int, float),
        "top_k": int,
        "top_p": (int, float),
        "repetition_penalty": (int, float),
        "backend": str,
        "precision": str,
        "device": str,
        "dtype": str,
    },
    "image": {
        "model": str,
        "negative": str,
        "steps": int,
        "guidance": (int, float),
        "width": int,
        "height": int,
        "scheduler": str,
        "low_memory": bool,
        "device": str,
        "dtype": str,
    },
    "speech": {
        "model": str,
        "voice": str,
        "speed": (int, float),
        "sentence_silence": (int, float),
        "device": str,
        "dtype": str,
    },
}
ENV_SETTINGS = {
    ("text", "model"): "AIGC_TEXT_MODEL",
    ("image", "model"): "AIGC_IMAGE_MODEL",
    ("speech", "model"): "AIGC_SPEECH_MODEL",
    ("text", "backend"): "AIGC_TEXT_BACKEND",
    ("text", "device"): "AIGC_DEVICE",
    ("image", "device"): "AIGC_DEVICE",
    ("speech", "device"): "AIGC_DEVICE",
}


def config_path() -> Path:
    return settings().home / "config.toml"


def read_config_file() -> dict[str, dict[str, object]]:
    """The settings in config.toml, checked; a malformed file is a usage error naming file and line.

    Parsed once per version of the file: every setting of a command looks here.
    """
    path = config_path()
    if not path.is_file():
        return {}
    stat = path.stat()
    return _parse_config(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _parse_config(path: Path, mtime_ns: int, size: int) -> dict[str, dict[str, object]]:
    import tomllib

    from .errors import UsageError

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read {path}: {exc}") from exc
    for section, values in data.items():
        if section not in SETTING_TYPES or not isinstance(values, dict):
            raise UsageError(f"{path}: unknown section [{section}] (use [text], [image] or [speech])")
        for key, value in values.items():
            wanted = SETTING_TYPES[section].get(key)
            if wanted is None:
                known = ", ".join(SETTING_TYPES[section])
                raise UsageError(f"{path}: unknown setting '{key}' in [{section}] (known: {known})")
            if not isinstance(value, wanted) or (isinstance(value, bool) and wanted is not bool):
                raise UsageError(f"{path}: [{section}] {key} = {value!r} has the wrong type")
    return data


def configured(modality: str, key: str) -> tuple[object | None, str]:
    """(value, where it came from) from the environment or config.toml; (None, "") when neither sets it."""
    variable = ENV_SETTINGS.get((modality, key))
    if variable and os.environ.get(variable):
        return os.environ[variable], f"environment ({variable})"
    value = read_config_file().get(modality, {}).get(key)
    if value is not None:
        return value, f"config file ({config_path()})"
    return None, ""


def write_default_model(modality: str, name: str) -> Path:
    """Set `model = NAME` in the [modality] table of config.toml, keeping the rest of the file as it is."""
    import re

    read_config_file()  # refuse to edit a file that does not parse
    path = config_path()
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    line = f'model = "{name}"'
    header = next((i for i, text in enumerate(lines) if text.strip() == f"[{modality}]"), None)
    if header is None:
        lines += ([""] if lines else []) + [f"[{modality}]", line]
    else:
        end = next((i for i in range(header + 1, len(lines)) if lines[i].strip().startswith("[")), len(lines))
        found = next((i for i in range(header + 1, end) if re.match(r"\s*model\s*=", lines[i])), None)
        if found is None:
            lines.insert(header + 1, line)
        else:
            lines[found] = line
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
