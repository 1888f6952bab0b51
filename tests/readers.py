"""Concurrent readers of one batching engine, for the tests that check each row equals its solo run."""

from __future__ import annotations

import threading
from typing import Any


def read_together(view: Any, requests: list[Any], leaver: int) -> dict[int, str]:
    """Each request's text, all started at once on `view` (a BatchedView); request `leaver` is read for one
    chunk only and then closed, a reader that goes away (the others must not be disturbed)."""
    from aigc_cli.engines.text import generate_text, stream_text

    results: dict[int, str] = {}
    gate = threading.Barrier(len(requests) + 1)

    def run(index: int) -> None:
        gate.wait()
        if index == leaver:
            chunks = stream_text(view, requests[index])
            results[index] = next(chunks).text
            chunks.close()
            return
        results[index] = generate_text(view, requests[index]).text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    gate.wait()
    for thread in threads:
        thread.join(timeout=120)
    return results
