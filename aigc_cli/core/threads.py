"""Events from work that reports through callbacks (a diffusers pipeline's step callback): the work runs in a
worker thread and its events come out of an iterator, in order, as they happen."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Cancelled(Exception):
    """Raised inside the work at its next event once the iterator was closed (the consumer went away)."""


_END = object()


def events_of(work: Callable[[Callable[[Any], None]], None], name: str = "aigc-work") -> Iterator[Any]:
    """Run `work(emit)` in a thread and yield what it emits; its exception is raised here. Closing the
    iterator early makes the next emit raise Cancelled in the work, and waits for the work to end (so that
    an engine is never used by two runs at once); Ctrl-C (KeyboardInterrupt here) does not wait."""
    items: queue.Queue[Any] = queue.Queue()
    cancelled = threading.Event()
    failure: list[BaseException] = []

    def emit(item: Any) -> None:
        if cancelled.is_set():
            raise Cancelled()
        items.put(item)

    def target() -> None:
        try:
            work(emit)
        except Cancelled:
            pass
        except BaseException as exc:
            failure.append(exc)
        finally:
            items.put(_END)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    interrupted = False
    try:
        while True:
            try:
                item = items.get(timeout=0.2)  # a timeout, so that Ctrl-C reaches the main thread
            except queue.Empty:
                continue
            if item is _END:
                break
            yield item
    except KeyboardInterrupt:
        interrupted = True  # the process is ending (exit 130): do not wait for the step to finish
        raise
    finally:
        cancelled.set()
        if not interrupted:
            thread.join()
    if failure:
        raise failure[0]
