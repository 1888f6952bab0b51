"""Batching of text requests that arrive together for one engine (the server's; the CLI runs one request).

A request that may be batched (greedy, no repetition penalty, an engine with `tokens_batch`: the torch
reference, onnxruntime-genai) runs `stream_text` on a `BatchedView` of the engine: its `tokens()` hands the
prompt to the engine's `TextBatcher`, whose thread takes every such request waiting (up to `max_batch`),
leases the engine and runs them as one batch (rows the engine's `batch_fits` refuses: one by one); each
request reads its own row; a request alone runs as the engine's solo run. Everything else of
`stream_text` (the chat template, stop strings, incremental decoding, the Completion) is the same code as a
solo run, and each row's tokens equal its solo run's (tests/test_server.py checks 8 concurrent clients
against solo; tests/test_prompt_cache.py the onnx engine's batches).
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from ..engines import EngineKey
from ..pool import EnginePool

MAX_BATCH = 8
"""Most rows in one batch."""
GATHER_SECONDS = 0.01
"""How long the batcher waits after the first request for others arriving with it."""
GATHER_BUSY_SECONDS = 0.04
"""The same, after a batch of several rows: their clients come back with their next requests a few tens of
milliseconds apart (HTTP, the chat template), and at 0.01 s the first of them ran alone while the others
waited for it (batches of 1, 3, 1, 3 with 4 clients; 1.47x the tokens/s of one client where 4, 4, 4 gave
2x). A lone client (the last batch had one row) waits only GATHER_SECONDS."""


def batchable(engine: Any, settings: Any) -> bool:
    """Whether a request with these Sampling settings may share a batch on this engine."""
    return (
        hasattr(engine, "tokens_batch")
        and not settings.do_sample
        and settings.repetition_penalty in (None, 1.0)
    )


_END = object()
_STOP: Any = object()
_RUNNING: weakref.WeakSet[TextBatcher] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for batcher in list(_RUNNING):
        batcher.stop()


@dataclass(eq=False)
class _Row:
    prompt_ids: list[int]
    settings: Any
    out: queue.Queue = field(default_factory=queue.Queue)
    count: int = 0
    done: bool = False
    """The row ended (its end-of-sequence token, its max_new_tokens) or its reader went away."""

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.out.put(_END)


class TextBatcher:
    """One thread per engine key that runs waiting batchable requests together."""

    def __init__(self, pool: EnginePool, key: EngineKey, max_batch: int = MAX_BATCH) -> None:
        self.pool = pool
        self.key = key
        self.max_batch = max_batch
        self.waiting: queue.Queue[_Row] = queue.Queue()
        self.batches: list[int] = []
        """The size of each batch run (for tests and the log)."""
        self.thread = threading.Thread(target=self._run, name="aigc-batcher", daemon=True)
        self.thread.start()
        _RUNNING.add(self)

    def stop(self) -> None:
        """End the thread once the batch it runs is done (at exit: no thread of ours is left in a library's
        native code while the interpreter shuts down, which can abort the process)."""
        self.waiting.put(_STOP)  # type: ignore[arg-type]
        self.thread.join(timeout=30)

    def submit(self, prompt_ids: list[int], settings: Any) -> Iterator[list[int]]:
        """The row's new token ids (one per step), as the engine's `tokens` gives a solo run's. Closing the
        iterator takes the row out of its batch."""
        row = _Row(prompt_ids, settings)
        self.waiting.put(row)
        try:
            while (item := row.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield [item]
        finally:
            row.done = True

    def _take(self, first: _Row) -> list[_Row]:
        """The first row and the compatible rows waiting now (others go back in line)."""
        time.sleep(GATHER_BUSY_SECONDS if self.batches and self.batches[-1] > 1 else GATHER_SECONDS)
        rows, others = [first], []
        common = replace(first.settings, max_new_tokens=0)
        while len(rows) < self.max_batch:
            try:
                row = self.waiting.get_nowait()
            except queue.Empty:
                break
            if row is _STOP:
                others.append(row)
                break
            same = replace(row.settings, max_new_tokens=0) == common
            (rows if same else others).append(row)
        for row in others:
            self.waiting.put(row)
        return [row for row in rows if not row.done]

    def _run(self) -> None:
        while True:
            first = self.waiting.get()
            if first is _STOP:
                return
            rows = self._take(first)
            if not rows:
                continue
            try:
                self._batch(rows)
            except BaseException as exc:  # every reader of the batch raises it
                for row in rows:
                    if not row.done:
                        row.out.put(exc)
                        row.finish()
            finally:
                for row in rows:
                    row.finish()

    def _batch(self, rows: list[_Row]) -> None:
        self.batches.append(len(rows))
        settings = replace(rows[0].settings, max_new_tokens=max(r.settings.max_new_tokens for r in rows))
        with self.pool.lease(self.key) as engine:
            fits = getattr(engine, "batch_fits", None)
            if len(rows) > 1 and (fits is None or fits([r.prompt_ids for r in rows], settings)):
                self._steps(rows, settings, engine)
            else:  # rows the engine cannot batch as solo runs run one by one
                for row in rows:
                    self._steps([row], row.settings, engine)

    def _steps(self, rows: list[_Row], settings: Any, engine: Any) -> None:
        """Run `rows` as one batch and hand each row its tokens; a row alone is the engine's solo run (which
        reuses a kept prefix: a conversation's turns)."""
        eos = set(settings.eos_token_ids)
        if len(rows) == 1:
            steps = engine.tokens(rows[0].prompt_ids, settings, 0)
        else:
            steps = engine.tokens_batch(
                [r.prompt_ids for r in rows], settings, lambda: [not r.done for r in rows]
            )
        try:
            for step in steps:
                for row, token in zip(rows, step, strict=True):
                    if row.done:
                        continue
                    row.count += 1
                    row.out.put(token)
                    if token in eos or row.count >= row.settings.max_new_tokens:
                        row.finish()
                if all(row.done for row in rows):
                    break
        finally:
            steps.close()


class BatchedView:
    """An engine whose `tokens()` goes through the batcher; every other attribute is the engine's."""

    def __init__(self, engine: Any, batcher: TextBatcher) -> None:
        self._engine = engine
        self._batcher = batcher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def tokens(self, prompt_ids: list[int], settings: Any, seed: int) -> Iterator[list[int]]:
        return self._batcher.submit(prompt_ids, settings)


class Batchers:
    """A TextBatcher per engine key, made on first use; `engine()` picks the batcher or a plain lease."""

    def __init__(self, pool: EnginePool) -> None:
        self.pool = pool
        self._batchers: dict[EngineKey, TextBatcher] = {}
        self._lock = threading.Lock()

    @contextmanager
    def engine(self, key: EngineKey, request: Any) -> Iterator[Any]:
        """The engine to run the TextRequest `request` on: a view that batches it with others arriving
        together when its settings allow, else the engine itself, leased for this request alone."""
        from ..engines.text import sampling

        engine = self.pool.get(key)
        if batchable(engine, sampling(engine.generation_defaults, request)):
            with self._lock:
                batcher = self._batchers.get(key)
                if batcher is None:
                    batcher = self._batchers[key] = TextBatcher(self.pool, key)
            yield BatchedView(engine, batcher)
            return
        with self.pool.lease(key) as leased:
            yield leased

    def sizes(self) -> dict[EngineKey, list[int]]:
        """The size of every batch run so far, by engine key."""
        with self._lock:
            return {key: list(b.batches) for key, b in self._batchers.items()}
