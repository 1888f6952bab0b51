"""The KV states of recent sequences, kept so that a prompt which starts as an earlier one did (the next turn
of a conversation) runs only its new tokens.

An entry is a backend's state (a transformers cache, an onnxruntime-genai generator) and the token ids it
holds. `find(ids)` gives the entry sharing the longest prefix with `ids`: the transformers engine copies that
prefix (its cache tensors are never written in place), the onnxruntime-genai engine `claim`s the generator
(out of the store: no two requests ever run on one); each request puts its own state back when it ends.
Entries are bounded by bytes (AIGC_TEXT_CACHE_MB, least recently used out first). Nothing here imports torch.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

ENV = "AIGC_TEXT_CACHE_MB"
DEFAULT_MB = 512


def budget_bytes() -> int:
    """The bytes the KV states of recent conversations may take, per text engine: AIGC_TEXT_CACHE_MB
    (default 512; 0 turns the reuse off)."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return DEFAULT_MB * 2**20
    try:
        megabytes = float(value)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0 or megabytes == float("inf"):
        raise UsageError(
            f"{ENV} must be a number of megabytes, 0 or more (got {value!r}): set it so, or unset it"
        )
    return int(megabytes * 2**20)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    size = min(len(a), len(b))
    for index in range(size):
        if a[index] != b[index]:
            return index
    return size


@dataclass
class Entry:
    ids: list[int]
    """The tokens the state holds, in order."""
    state: Any
    nbytes: int
    kind: Any = None
    """What else must match for the state to be reused (onnxruntime-genai: the search options)."""


class PrefixCache:
    """Recent KV states by their token ids, within a byte budget, safe to use from several threads."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget_bytes() if budget is None else budget
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._next = 0
        self.hits = 0
        """Requests that reused a state (for tests and benchmarks)."""

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def find(self, ids: list[int], kind: Any = None) -> tuple[Entry, int] | None:
        """The entry (of this kind) sharing the longest prefix with `ids`, left in the store, and how many
        of its tokens to keep: at most len(ids) - 1, since the model must run at least one token to give the
        next one. None when no entry shares a token. A backend whose states can be shared (transformers:
        new tensors on every step) copies the prefix; one whose state runs on (a generator) `claim`s it."""
        if self.budget <= 0:
            return None
        with self._lock:
            best, best_len = None, 0
            for key, entry in self._entries.items():
                if entry.kind != kind:
                    continue
                shared = min(common_prefix(entry.ids, ids), len(ids) - 1)
                if shared > best_len:
                    best, best_len = key, shared
            if best is None:
                return None
            self._entries.move_to_end(best)
            self.hits += 1
            return self._entries[best], best_len

    def claim(self, entry: Entry) -> bool:
        """Take `entry` out of the store for one request; False when another request took it first."""
        with self._lock:
            for key, held in self._entries.items():
                if held is entry:
                    del self._entries[key]
                    return True
            return False

    def put(self, ids: list[int], state: Any, nbytes: int, kind: Any = None) -> None:
        """Keep `state` (holding `ids`) as the most recent entry, in place of the entries it extends; the
        least recent ones go while the store is over budget. A state larger than the budget is not kept."""
        if self.budget <= 0 or nbytes > self.budget or not ids:
            return
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.kind == kind and e.ids == ids[: len(e.ids)]]:
                del self._entries[key]
            self._next += 1
            self._entries[self._next] = Entry(list(ids), state, nbytes, kind)
            total = sum(e.nbytes for e in self._entries.values())
            while total > self.budget:
                _, oldest = self._entries.popitem(last=False)
                total -= oldest.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
