"""Loaded engines, kept by EngineKey (modality, model folder, device, dtype, backend, load options).

The CLI asks the pool for one engine; the server and batch jobs ask it for many, and for one engine from many
threads: `get` loads a key once even when several threads ask together, and `lease` gives a thread the
engine alone for one generation (engines keep no per-call state, but a model runs one call at a time).
Engines idle longer than `keep_alive` seconds are unloaded by `unload_idle`.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .engines import EngineKey, load_engine


@dataclass
class _Entry:
    engine: Any = None
    loaded: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    busy: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    users: int = 0


@dataclass(frozen=True)
class PoolEntry:
    """What `EnginePool.entries` reports of one loaded engine (for `aigc ps`, later)."""

    key: EngineKey
    idle_seconds: float
    """Seconds since its last lease ended; 0 while in use."""
    in_use: bool


class EnginePool:
    """Engines by key, loaded on first use. keep_alive: seconds an idle engine stays (None: for ever)."""

    def __init__(
        self, keep_alive: float | None = None, loader: Callable[[EngineKey], Any] = load_engine
    ) -> None:
        self.keep_alive = keep_alive
        self.loader = loader
        self._entries: dict[EngineKey, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, key: EngineKey) -> Any:
        """The engine for `key`, loaded now if it is not yet (once, however many threads ask)."""
        with self._lock:
            entry = self._entries.get(key)
            owner = entry is None
            if owner:
                entry = self._entries[key] = _Entry()
        assert entry is not None
        if owner:
            try:
                entry.engine = self.loader(key)
            except BaseException as exc:
                entry.error = exc
                with self._lock:
                    self._entries.pop(key, None)
                raise
            finally:
                entry.loaded.set()
        entry.loaded.wait()
        if entry.error is not None:
            raise entry.error
        entry.last_used = time.monotonic()
        return entry.engine

    @contextmanager
    def lease(self, key: EngineKey) -> Iterator[Any]:
        """The engine for `key`, held by this thread alone until the block ends."""
        engine = self.get(key)
        with self._lock:
            entry = self._entries[key]
            entry.users += 1
        try:
            with entry.busy:
                yield engine
        finally:
            with self._lock:
                entry.users -= 1
                entry.last_used = time.monotonic()

    def peek(self, key: EngineKey) -> Any:
        """The engine for `key` if it is loaded, else None (loads nothing, changes no idle time)."""
        with self._lock:
            entry = self._entries.get(key)
        return entry.engine if entry is not None and entry.loaded.is_set() else None

    def entries(self) -> list[PoolEntry]:
        now = time.monotonic()
        with self._lock:
            return [
                PoolEntry(key, 0.0 if e.users else round(now - e.last_used, 3), e.users > 0)
                for key, e in self._entries.items()
                if e.loaded.is_set()
            ]

    def unload(self, key: EngineKey) -> bool:
        """Drop an engine that is not in use; True when it was dropped."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.users or not entry.loaded.is_set():
                return False
            del self._entries[key]
        entry.engine = None
        _free_memory()
        return True

    def unload_idle(self) -> list[EngineKey]:
        """Unload every engine idle longer than keep_alive; the keys unloaded."""
        if self.keep_alive is None:
            return []
        now = time.monotonic()
        with self._lock:
            idle = [
                k for k, e in self._entries.items() if not e.users and now - e.last_used >= self.keep_alive
            ]
        return [key for key in idle if self.unload(key)]


def _free_memory() -> None:
    gc.collect()
    import sys

    torch = sys.modules.get("torch")  # only when an engine imported it
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


_DEFAULT: EnginePool | None = None


def default_pool() -> EnginePool:
    """The process's pool (the CLI's one-shot runs use it too)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = EnginePool()
    return _DEFAULT
