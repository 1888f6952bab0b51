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


def home_problem() -> str | None:
    """What keeps aigc from keeping files in AIGC_HOME (a file in its place, no permission), or None."""
    import os as _os

    home = settings().home
    existing = next((p for p in (home, *home.parents) if p.exists()), None)
    if existing is None:
        return None
    if not existing.is_dir():
        return f"AIGC_HOME ({home}) is not a folder: {existing} is a file; point AIGC_HOME at a folder"
    if not _os.access(existing, _os.W_OK | _os.X_OK):
        return f"AIGC_HOME ({home}) cannot be written: no permission on {existing}"
    return None


def ensure_home(path: Path) -> None:
    """Make `path` (a folder under AIGC_HOME), or raise UsageError (exit 2) saying what is wrong."""
    from .errors import UsageError

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(home_problem() or f"Cannot make {path}: {exc.strerror or exc}") from exc


def is_offline() -> bool:
    """HF_HUB_OFFLINE (set by --offline too): never touch the network."""
    return _flag("HF_HUB_OFFLINE") or _flag("TRANSFORMERS_OFFLINE")


def go_offline() -> None:
    """Apply --offline before any Hugging Face library is imported (they read the variable once)."""
    os.environ["HF_HUB_OFFLINE"] = "1"


# --- AIGC_HOME/config.toml -------------------------------------------------------------------------------
# One table per modality; its keys are the settings schema's (settings.py), whose resolver checks the values.


def config_path() -> Path:
    return settings().home / "config.toml"


def read_config_file() -> tuple[dict[str, dict[str, object]], Path]:
    """(the tables of config.toml, its path); a malformed file is a usage error naming file and line.

    Parsed once per version of the file (its inode too: an atomic rewrite is a new one): every setting of a
    command looks here.
    """
    path = config_path()
    if not path.is_file():
        return {}, path
    stat = path.stat()
    return _parse_config(path, stat.st_mtime_ns, stat.st_size, stat.st_ino), path


@lru_cache(maxsize=4)
def _parse_config(path: Path, mtime_ns: int, size: int, inode: int) -> dict[str, dict[str, object]]:
    import tomllib

    from .errors import UsageError
    from .settings import SCHEMAS, check_value, config_keys, knobs

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}: fix that line, or move the file away to start afresh") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read {path}: {exc}") from exc
    for section, values in data.items():
        if section not in (*SCHEMAS, "credentials"):
            raise UsageError(
                f"{path}: unknown section [{section}] (use [text], [image], [speech] or [credentials])"
            )
        if not isinstance(values, dict):
            raise UsageError(f"{path}: {section} must be a table, [{section}], with settings under it")
        if section == "credentials":
            _check_credentials(path, values)
            continue
        known = config_keys(section)
        for key, value in values.items():
            if key not in known:
                raise UsageError(
                    f"{path}: unknown setting '{key}' in [{section}] (known: {', '.join(known)})"
                )
            # Every line is checked whichever command runs: a bad [image] width fails `aigc text` too.
            check_value(key, knobs(SCHEMAS[section])[key], value, f"[{section}] {key} in {path}")
    return data


CREDENTIAL_KEYS = ("cert", "key", "tsa", "trust")
"""The keys of the [credentials] table (credentials.py reads them)."""


def _check_credentials(path: Path, values: dict[str, object]) -> None:
    """[credentials]: cert, key, trust (file paths) and tsa (a URL), each a string."""
    from .errors import UsageError

    for key, value in values.items():
        if key not in CREDENTIAL_KEYS:
            raise UsageError(
                f"{path}: unknown setting '{key}' in [credentials] (known: {', '.join(CREDENTIAL_KEYS)})"
            )
        if not isinstance(value, str) or not value:
            raise UsageError(f"{path}: [credentials] {key} must be a non-empty string (a file path or URL)")


def write_default_model(modality: str, name: str) -> Path:
    """Set `model = NAME` in the [modality] table of config.toml and return the file's path.

    tomlkit edits the file, so the user's comments, other tables and layout stay as they were. The new text
    is written atomically, and only once it parses and reads back as the old settings plus this one value:
    a file that does not parse now, or an edit that would not read back, leaves the old file untouched.
    """
    import stat
    import tomllib

    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    from .errors import OutputError, UsageError
    from .output import write_atomic
    from .settings import knob_env
    from .streams import as_text

    _, path = read_config_file()  # a file that does not parse fails here, naming file, line and remedy
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes of argv that are not UTF-8 (kept as lone surrogates)
        raise UsageError(
            f"'{as_text(name)}' cannot be kept in {path}: it holds bytes that are not UTF-8, and a TOML file "
            f"is UTF-8 text; rename the folder, or set {knob_env(modality)} instead"
        ) from None
    cannot = f"Cannot set the {modality} model in {path}"
    remedy = f"the file is as it was; edit it by hand, or set {knob_env(modality)} instead"
    old_text = path.read_text(encoding="utf-8") if path.is_file() else ""
    try:
        document = tomlkit.parse(old_text)
        if modality in document:
            document[modality]["model"] = name
        else:
            document[modality] = {"model": name}
        new_text = tomlkit.dumps(document)
    except TOMLKitError as exc:  # a file tomllib reads and tomlkit does not: refuse rather than guess
        raise OutputError(f"{cannot}: tomlkit cannot edit it ({exc}); {remedy}") from exc
    expected = tomllib.loads(old_text)  # the settings before, as tomllib reads them
    expected.setdefault(modality, {})["model"] = name
    try:
        read_back = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as exc:
        raise OutputError(f"{cannot}: the new text would not parse ({exc}); {remedy}") from exc
    if read_back != expected:
        raise OutputError(f"{cannot}: the new text would not read back model = {name!r}; {remedy}")
    ensure_home(path.parent)
    # A config.toml that links into the user's dotfiles stays a link: the file it points to is replaced.
    target = path.resolve() if path.is_symlink() else path
    mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else None
    write_atomic(target, new_text.encode("utf-8"), mode=mode)
    return path
