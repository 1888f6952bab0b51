"""The ingress side of `aigc serve --ray`: a ServerState whose generations are prepared and run on the
replicas of a modality's Ray Serve deployment (server/ray_serve.py), reached through deployment handles.

The routes are the same code as a single `aigc serve`: they call `state.start(...)` and read `run.job` and
`run.events()`; here the replica prepares (model, backend, checks, seed) and streams back, in order, what its
Reporter heard, the Job, then the core's events. A replica that dies before the generation started is asked
again (the request goes to another replica, or waits for the replacement); one that dies mid-generation is
a 503 with Retry-After (ReplicaLostError).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..console import Console
from ..errors import AigcError
from ..settings import Resolved
from .protocol import UnavailableError
from .state import ServerState

BOARD = "aigc-board"
"""The name of the Ray actor where each replica says what it holds (ps), in Ray Serve's namespace."""
NAMESPACE = "serve"
STALE_SECONDS = 10.0
"""A replica not heard of for this long is gone (killed, or scaled down): ps leaves it out."""


class ReplicaLostError(UnavailableError):
    """The replica running a request died (its node went away, it ran out of memory): HTTP 503 with
    Retry-After; the next request goes to a replacement."""


class RayState(ServerState):
    """The ingress replica's state: no engines of its own; handles to the text, image and speech
    deployments; `loaded()` and `replicas()` from what the replicas report to the board actor."""

    def __init__(
        self, handles: dict[str, Any], keep_alive: float | None, preload: list[str], console: Console
    ) -> None:
        super().__init__(keep_alive, preload, console)
        self.handles = handles

    def start(
        self, modality: str, resolved: Resolved, prompt: str, reporter: Any, previews: int = 0, **extra: Any
    ) -> RemoteRun:
        """Prepare on a replica of `modality` that holds the model (Ray Serve's model multiplexing routes by
        the model's name) and wait for its Job; raises what prepare raises there."""
        handle = self.handles[modality].options(stream=True, multiplexed_model_id=str(resolved.values.model))
        return RemoteRun(handle, (modality, resolved, prompt, previews, extra), reporter)

    def after_request(self) -> None:
        """Replicas unload their own idle engines."""

    def start_reaper(self) -> None:
        """Replicas run their own keep-alive."""

    def board(self) -> list[dict[str, Any]]:
        """What each live replica last said: {"deployment", "replica", "node", "pid", "served", "active",
        "models": [ServerState.loaded() rows], "batches", "seen" (seconds ago)}."""
        import ray

        try:
            board = ray.get_actor(BOARD, namespace=NAMESPACE)
            rows = ray.get(board.rows.remote(), timeout=10)
        except (ValueError, ray.exceptions.RayError):  # not made yet, or gone: no replica has reported
            return []
        now = time.time()
        return [
            {**row, "seen": round(now - row["updated"], 1)}
            for row in sorted(rows, key=lambda r: (r["deployment"], r["replica"]))
            if now - row["updated"] < STALE_SECONDS
        ]

    def replicas(self) -> list[dict[str, Any]]:
        """One row per live replica: deployment, replica id, node, pid, requests served, running now."""
        keys = ("deployment", "replica", "node", "pid", "served", "active", "seen")
        return [{k: row[k] for k in keys} for row in self.board()]

    def loaded(self) -> list[dict[str, Any]]:
        """ServerState.loaded()'s rows of every replica, each with the replica and node that hold it."""
        return [
            {**model, "replica": row["replica"], "node": row["node"]}
            for row in self.board()
            for model in row["models"]
        ]

    def batch_sizes(self) -> dict[str, list[int]]:
        sizes: dict[str, list[int]] = {}
        for row in self.board():
            for model, each in row.get("batches", {}).items():
                sizes.setdefault(model, []).extend(each)
        return sizes

    def cluster(self) -> dict[str, Any]:
        return {"replicas": self.replicas()}


def _lost(exc: BaseException) -> bool:
    """Whether `exc` says the replica (its actor, its node) is gone, rather than a failure of the request."""
    import ray

    return isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError))


class RemoteRun:
    """A generation prepared on a replica: `job` once prepare has run there; `events()` the core's events
    as the replica yields them. The replica's notices and status lines reach `reporter` as they happen."""

    ATTEMPTS = 3
    """Tries before the Job: a replica lost before the generation started costs nothing to ask again."""

    def __init__(self, handle: Any, call: tuple[Any, ...], reporter: Any) -> None:
        for attempt in range(self.ATTEMPTS):
            self._stream = handle.generate.remote(*call)
            try:
                self.job = self._prepared(reporter)
                return
            except BaseException as exc:
                if not _lost(exc):
                    raise
                if attempt == self.ATTEMPTS - 1:
                    raise ReplicaLostError(
                        f"The {call[0]} replica was lost {self.ATTEMPTS} times before it began: try again "
                        "in a moment (the cluster starts replacements)"
                    ) from None
                time.sleep(0.5)

    def _prepared(self, reporter: Any) -> Any:
        for kind, value in self._stream:
            if kind == "job":
                return value
            if kind == "error":
                raise value
            if kind == "status":
                with reporter.status(value):
                    pass
            else:
                reporter.emit(value)
        raise ReplicaLostError("The replica ended the request before it began: try again")

    @contextmanager
    def events(self) -> Iterator[Iterator[Any]]:
        def items() -> Iterator[Any]:
            try:
                for kind, value in self._stream:
                    if kind == "error":
                        raise value
                    yield value
            except AigcError:
                raise
            except BaseException as exc:
                if _lost(exc):
                    raise ReplicaLostError(
                        f"The replica running {self.job.label} was lost mid-generation: send the request "
                        "again (a replacement is starting)",
                        self.job.label,
                    ) from None
                raise

        try:
            yield items()
        finally:
            self._stream.cancel()
