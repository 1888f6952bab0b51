"""What a running server holds: the engine pool with its keep-alive, the models a client may name, and
what `aigc ps` reports of each loaded engine."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path
from typing import Any

from ..console import Console
from ..engines import EngineKey
from ..errors import UsageError
from ..pool import EnginePool
from ..settings import Resolved
from .protocol import LOCAL_PATH, RefusedError


class ServerState:
    """The pool and the rules of one `aigc serve` process.

    keep_alive: seconds an idle engine stays loaded (0: unloaded after each request; None: for ever).
    preload: model names loaded at start; local folders among them are the only ones clients may name.
    """

    def __init__(self, keep_alive: float | None, preload: list[str], console: Console) -> None:
        self.pool = EnginePool(keep_alive)
        self.keep_alive = keep_alive
        self.preload_names = list(preload)
        self.console = console
        self.allowed_folders: set[Path] = set()
        self.labels: dict[EngineKey, str] = {}
        self.loading = threading.Event()
        """Set while the --preload models load (/health answers 503 "loading")."""
        self.failed: Any = None
        """The AigcError that stopped a preload: the server stops and exits with its code."""
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        from .batching import Batchers

        self.batchers = Batchers(self.pool)

    def reporter(self, also: Callable[[str], None] | None = None) -> Any:
        """A request's Reporter: its notices are kept for the response (the `aigc` object, an MCP result)
        and written to the server's log as a local run prints them (notes with -v); `also(text)` hears what
        a slow step says as it begins (loading a model, a one-time conversion or export)."""
        return self.console.reporter(seeds=False, also=also)

    # --- which models a request may name ---------------------------------------------------------------

    def check_model(self, resolved: Resolved) -> None:
        """Refuse (RefusedError, HTTP 403) a model the request names by a local path the server was not
        started with. Aliases, Hub repo ids (from the cache, or pulled with --allow-pull) and what the
        server's own config names are fine."""
        from ..adapters import local_parts
        from ..registry import is_path, lookup

        s = resolved.values
        for field, each in local_parts(getattr(s, "lora", None), getattr(s, "vae", None)):
            if resolved.sources.get(field, "").startswith("request"):
                raise RefusedError(
                    f"'{each}' ({field}) is a local path: this server loads adapters and VAEs only "
                    "from the Hugging Face Hub",
                    LOCAL_PATH,
                )
        if not resolved.sources.get("model", "").startswith("request"):
            return
        name = resolved.values.model
        if name in self.preload_names:
            return
        if lookup(name) is not None:
            return
        if is_path(name):
            path = Path(name).expanduser()
            if path.exists() and path.resolve() in self.allowed_folders:
                return
            raise RefusedError(
                f"'{name}' is a local path: this server loads only the folders it was started with "
                "(aigc serve --preload PATH)",
                LOCAL_PATH,
            )

    def allow_folder(self, folder: Path) -> None:
        from ..records import serve_by_name

        self.allowed_folders.add(folder.resolve())
        serve_by_name(folder)  # a record names it by its name: a request may too

    # --- a generation: prepare, then run on the engine ----------------------------------------------------

    def start(
        self, modality: str, resolved: Resolved, prompt: str, reporter: Any, previews: int = 0, **extra: Any
    ) -> Run:
        """Prepare a generation (`core.<modality>.prepare`: model, backend, checks, the seed), reporting to
        `reporter`; the Run's `events()` runs it. extra: prepare's own arguments (a text conversation's
        `messages`, an image's `inputs`, speech's `fallback_said`); previews: image previews every this many
        steps (0: none). Raises what prepare raises. A Ray Serve ingress (server/ray_serve.py) prepares and
        runs on a replica instead, with the same result."""
        from dataclasses import replace

        from ..core import MODALITIES

        job = MODALITIES[modality].prepare(resolved, prompt, reporter, self.pool, **extra)
        if previews:
            job = replace(job, request=replace(job.request, previews=previews))
        self.labels[job.key] = job.label
        return Run(self, modality, job)

    # --- text engines, batched where the settings allow ---------------------------------------------------

    def text_engine(self, key: EngineKey, request: Any) -> AbstractContextManager[Any]:
        """The engine to run a TextRequest on, batched with others where its settings allow."""
        return self.batchers.engine(key, request)

    def batch_sizes(self) -> dict[str, list[int]]:
        """The size of every batch run so far, by model."""
        return {self.labels.get(k, k.folder): sizes for k, sizes in self.batchers.sizes().items()}

    # --- keep-alive ---------------------------------------------------------------------------------------

    def start_reaper(self) -> None:
        """Unload idle engines in the background, checking a few times per keep-alive (at most every
        second)."""
        if self.keep_alive is None or self._reaper is not None:
            return
        interval = min(1.0, max(0.05, self.keep_alive / 4))

        def reap() -> None:
            while not self._stop.wait(interval):
                self.unload_idle()

        self._reaper = threading.Thread(target=reap, name="aigc-keep-alive", daemon=True)
        self._reaper.start()

    def unload_idle(self) -> None:
        for key in self.pool.unload_idle():
            self.console.info(f"aigc: unloaded {self.labels.pop(key, key.folder)} (idle past the keep-alive)")

    def after_request(self) -> None:
        if self.keep_alive == 0:
            self.unload_idle()

    def stop(self) -> None:
        self._stop.set()

    # --- /v1/models and the MCP tool list_models ------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """Loaded models, what --preload named, and every alias whose files are here (embedded or cached):
        one row each, {"id", "modality" (None for a --preload name not loaded yet), "loaded"}."""
        from ..catalog import available_models

        seen: dict[str, dict[str, Any]] = {}
        for row in self.loaded():
            seen.setdefault(row["model"], {"modality": row["modality"], "loaded": True})
        for name in self.preload_names:
            seen.setdefault(name, {"modality": None, "loaded": False})
        for name, modality in available_models():
            seen.setdefault(name, {"modality": modality, "loaded": False})
        return [{"id": name, **facts} for name, facts in seen.items()]

    # --- aigc ps --------------------------------------------------------------------------------------------

    def cluster(self) -> dict[str, Any]:
        """What /api/ps adds on a cluster (Ray Serve: `replicas`); nothing for one process."""
        return {}

    def loaded(self) -> list[dict[str, Any]]:
        """One row per loaded engine: model, modality, backend, device, dtype, memory (bytes), idle seconds,
        seconds until unloaded (None: never)."""
        rows = []
        for entry in self.pool.entries():
            key = entry.key
            engine = self.pool.peek(key)
            until = None
            if self.keep_alive is not None:
                until = 0.0 if entry.in_use else max(0.0, round(self.keep_alive - entry.idle_seconds, 1))
            rows.append(
                {
                    "model": self.labels.get(key, Path(key.folder).name),
                    "modality": key.modality,
                    "backend": key.backend,
                    "device": key.device,
                    "dtype": key.dtype,
                    "memory_bytes": engine_bytes(engine, key) if engine is not None else None,
                    "in_use": entry.in_use,
                    "idle_seconds": entry.idle_seconds,
                    "unloads_in": None if entry.in_use else until,
                    "folder": key.folder,
                }
            )
        return rows


class Run:
    """A prepared generation (ServerState.start): `job` is the core's Job; `events()` leases the engine
    (text: batched with others where the settings allow) and yields the core's events; closing it stops the
    generation at its next step."""

    def __init__(self, state: ServerState, modality: str, job: Any) -> None:
        self.state, self.modality, self.job = state, modality, job

    @contextmanager
    def events(self) -> Iterator[Iterator[Any]]:
        from ..core import MODALITIES

        job = self.job
        if self.modality == "text":
            engine_context = self.state.text_engine(job.key, job.request)
        else:
            engine_context = self.state.pool.lease(job.key)
        with engine_context as engine, closing(MODALITIES[self.modality].run(job, engine)) as events:
            yield events


def engine_bytes(engine: Any, key: EngineKey) -> int:
    """Bytes the engine's weights take: parameters and buffers of its torch modules (a diffusers pipeline's
    components too), plus the size of an export's weight files (ONNX exports, OpenVINO IR of an image
    pipeline), or of the model's files when it has no torch modules (Piper voices)."""
    seen: set[int] = set()
    total = 0

    def add_module(module: Any) -> None:
        nonlocal total
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()

    for value in vars(engine).values():
        if hasattr(value, "parameters") and hasattr(value, "buffers"):
            add_module(value)
        components = getattr(value, "components", None)
        if isinstance(components, dict):
            for part in components.values():
                if hasattr(part, "parameters") and hasattr(part, "buffers"):
                    add_module(part)
        inner = getattr(value, "model", None)  # a transformers pipeline
        if inner is not None and hasattr(inner, "parameters") and not isinstance(value, type):
            add_module(inner)
    export = key.option("export")
    if total and not (export and key.modality == "image"):
        return total
    # An export's weights live in its files (ONNX, OpenVINO IR), beside the torch parts of an image pipeline.
    folder = Path(export or key.folder)
    return total + sum(p.stat().st_size for p in folder.rglob("*") if p.suffix in {".onnx", ".data", ".bin"})


# --- the options of a serving process (aigc serve, aigc mcp) ----------------------------------------------

DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_keep_alive(value: str) -> float | None:
    """Seconds from `5m`, `30s`, `1h`, `250ms` or a number of seconds; 0 unloads after each request,
    any negative value (`-1`) never unloads (None). UsageError otherwise."""
    match = DURATION.match(value)
    if match is None:
        raise UsageError(f"--keep-alive takes a duration such as 5m, 30s, 1h, 0 or -1 (got {value!r})")
    seconds = float(match.group(1)) * UNITS[match.group(2)]
    return None if seconds < 0 else seconds


def check_settings() -> None:
    """Before a serving process answers anyone: the environment's and config.toml's settings of every
    modality are valid (UsageError, exit 2, naming the key otherwise), rather than every request failing."""
    from ..settings import SCHEMAS, resolve_settings

    for modality in SCHEMAS:
        resolve_settings(modality, {})


def check_preload(state: Any, names: list[str]) -> None:
    """Before the server listens: each name is a model aigc can run (exit 3 otherwise), and local folders
    among them become servable. Loading them is `preload`'s, while /health answers "loading"."""
    from pathlib import Path

    from ..catalog import modality_of
    from ..registry import resolve

    for name in names:
        resolve(name, modality_of(name))
        folder = Path(name).expanduser()
        if folder.is_dir():
            state.allow_folder(folder)


def preload(state: Any, names: list[str], console: Console) -> None:
    """Load each model now, through the path its first request takes. Raises what loading raises."""
    from ..catalog import modality_of
    from ..core import MODALITIES
    from ..settings import resolve_settings

    for name in names:
        modality = MODALITIES[modality_of(name)]
        resolved = resolve_settings(modality.name, {"model": name})
        job = modality.prepare(resolved, modality.sample_prompt, state.reporter(), state.pool)
        state.labels[job.key] = job.label
        console.info(f"aigc: loaded {job.label} ({modality.name}) on {job.key.device}")
