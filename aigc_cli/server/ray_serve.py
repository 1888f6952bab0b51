"""`aigc serve --ray`: the same FastAPI app, routes, guard, protocol and records on Ray Serve.

One ingress deployment runs the app (`serve.ingress`, the app built on the replica); its ServerState
(ray_state.RayState) sends each generation to the deployment of its modality (`aigc-text`, `aigc-image`,
`aigc-speech`) through a deployment handle, with the model's name as Ray Serve's multiplexed model id, so a
request goes to a replica that holds its model (least recently used models leave a replica past
--models-per-replica). A modality replica is a single `aigc serve`'s engine side: its own pool, keep-alive
and text batching, running `ServerState.start(...)` and streaming back what the core reports.

Replicas never write files: outputs go back to the client (MCP tools at /mcp save on the ingress's node).
Models come from each node's Hugging Face cache (or the embedded packages installed there).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .ray_state import BOARD, NAMESPACE

APP_NAME = "aigc"
MODALITIES = ("text", "image", "speech")
HEARTBEAT_SECONDS = 2.0
"""How often a replica tells the board what it holds (and after each request)."""


@dataclass(frozen=True)
class Scale:
    """Replicas of one modality's deployment: a fixed number (low == high) or an autoscaling range; a low of
    0 scales to zero once idle past the keep-alive, and a request that comes then waits for a replica."""

    low: int
    high: int

    def options(self, keep_alive: float | None) -> dict[str, Any]:
        """Ray Serve deployment options: num_replicas, or an autoscaling_config (one request in flight per
        replica as the target; scaling down after the keep-alive, 10 minutes when it is `never`)."""
        if self.low == self.high:
            return {"num_replicas": self.low}
        idle = 600.0 if keep_alive is None else max(1.0, keep_alive)
        return {
            "autoscaling_config": {
                "min_replicas": self.low,
                "max_replicas": self.high,
                "initial_replicas": self.low,
                "target_ongoing_requests": 1,
                "upscale_delay_s": 0.0,
                "downscale_delay_s": idle,
                "downscale_to_zero_delay_s": idle,
                "look_back_period_s": min(30.0, idle),
                "metrics_interval_s": min(10.0, max(0.5, idle / 4)),
            }
        }

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


DEFAULT_SCALE = {"text": Scale(1, 1), "image": Scale(1, 1), "speech": Scale(1, 1)}


def parse_replicas(spec: str | None) -> dict[str, Scale]:
    """`text=2,image=1,speech=0-2` -> a Scale per modality (unnamed ones: 1 replica). N is that many
    replicas; LOW-HIGH an autoscaling range. UsageError (exit 2) naming the part that is wrong."""
    scales = dict(DEFAULT_SCALE)
    if spec is None:
        return scales
    named: set[str] = set()
    for part in spec.split(","):
        if not part.strip():
            raise UsageError(
                f"--replicas {spec!r} has an empty part: give MODALITY=N or MODALITY=LOW-HIGH, "
                "comma-separated, e.g. text=2,image=0-1"
            )
        name, sep, value = (p.strip() for p in part.partition("="))
        if not sep or name not in MODALITIES:
            raise UsageError(
                f"--replicas {spec}: '{part.strip()}' is not MODALITY=N or MODALITY=LOW-HIGH "
                f"(modalities: {', '.join(MODALITIES)}), e.g. text=2,image=0-1"
            )
        low, dash, high = value.partition("-")
        if not (low.strip().isdigit() and (not dash or high.strip().isdigit())):
            raise UsageError(
                f"--replicas {spec}: {name}={value} is not a number of replicas or a range such as 0-2"
            )
        scale = Scale(int(low), int(high) if dash else int(low))
        if scale.high == 0:
            raise UsageError(
                f"--replicas {spec}: {name}={value} gives {name} no replica: give at least 1, or 0-N to "
                "scale to zero when idle"
            )
        if scale.high < scale.low:
            raise UsageError(
                f"--replicas {spec}: {name}={value} is a range from high to low: write {high}-{low}"
            )
        if name in named:
            raise UsageError(f"--replicas {spec}: {name} is named twice: give each modality once")
        named.add(name)
        scales[name] = scale
    return scales


# --- the deployments ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaOptions:
    """What every modality replica is started with (pickled into the deployment)."""

    keep_alive: float | None
    preload: tuple[str, ...]
    verbose: bool
    models_per_replica: int


def _board() -> Any:
    """The board actor (made by the driver): where replicas say what they hold."""
    import ray

    return ray.get_actor(BOARD, namespace=NAMESPACE)


def make_board() -> Any:
    """The board actor, made once per cluster (detached: it outlives a driver that loses its connection;
    `aigc serve --ray` kills it when it stops)."""
    import ray

    @ray.remote(num_cpus=0)
    class Board:
        def __init__(self) -> None:
            self._rows: dict[str, dict[str, Any]] = {}

        def put(self, row: dict[str, Any]) -> None:
            self._rows[row["replica"]] = row

        def drop(self, replica: str) -> None:
            self._rows.pop(replica, None)

        def rows(self) -> list[dict[str, Any]]:
            return list(self._rows.values())

    return Board.options(name=BOARD, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote()


def build_deployments(
    scales: dict[str, Scale],
    options: ReplicaOptions,
    ingress_args: dict[str, Any],
    replica_resources: dict[str, float],
) -> Any:
    """The bound application: the ingress, bound to one deployment per modality. replica_resources:
    `ray_actor_options` of each modality replica (num_cpus, num_gpus)."""
    from ray import serve

    class ModalityReplica:
        """One modality's engines on one replica: a ServerState of its own (pool, keep-alive, batching)."""

        async def __init__(self, modality: str, opts: ReplicaOptions) -> None:
            from ..console import LogConsole
            from .state import ServerState, check_preload, preload

            self.modality = modality
            self.console = LogConsole(verbose=opts.verbose)
            self.state = ServerState(opts.keep_alive, list(opts.preload), self.console)
            check_preload(self.state, list(opts.preload))
            self.keys: dict[str, set[Any]] = {}
            """The engines loaded for each multiplexed model id (unloaded when Ray Serve evicts it)."""
            self.served = 0
            self.active = 0
            self.counting = threading.Lock()
            context = serve.get_replica_context()
            self.replica = context.replica_id.unique_id
            import os

            import ray

            self.node = ray.util.get_node_ip_address()
            self.pid = os.getpid()
            from ..catalog import modality_of

            mine = [name for name in opts.preload if modality_of(name) == modality]
            for name in mine:  # every replica holds them: the router spreads their requests over all
                before = set(self.state.labels)
                await asyncio.to_thread(preload, self.state, [name], self.console)
                self.keys[name] = set(self.state.labels) - before
                await self.hold(name)
            self.state.start_reaper()
            self._stop = threading.Event()
            threading.Thread(target=self._heartbeat, name="aigc-board", daemon=True).start()

        async def hold(self, model_id: str) -> Any:
            """Ray Serve's model multiplexing: the model is loaded by prepare (the pool); this remembers it,
            and its __del__ unloads it when it is the least recently used past the limit."""
            return _Held(self, model_id)

        async def generate(self, modality: str, resolved: Any, prompt: str, previews: int, extra: dict):
            """("event", Notice|SeedChosen), ("status", text) while prepare runs, ("job", Job), then
            ("event", core event) for the run; ("error", AigcError) ends it on a failure."""
            model_id = serve.get_multiplexed_model_id()
            if model_id:
                await self.hold(model_id)
            loop = asyncio.get_running_loop()
            items: asyncio.Queue[Any] = asyncio.Queue()
            stop = threading.Event()
            end = object()

            def put(item: Any) -> None:
                if stop.is_set():
                    raise _Stopped()
                loop.call_soon_threadsafe(items.put_nowait, item)

            def work() -> None:
                from contextlib import contextmanager

                from ..core.events import Reporter
                from ..errors import failure_of

                @contextmanager
                def status(text: str) -> Any:
                    put(("status", text))
                    yield

                label = None
                with self.counting:
                    self.active += 1
                try:
                    reporter = Reporter(lambda event: put(("event", event)), status)
                    run = self.state.start(modality, resolved, prompt, reporter, previews, **extra)
                    label = run.job.label
                    self.keys.setdefault(model_id, set()).add(run.job.key)
                    put(("job", run.job))
                    with run.events() as events:
                        for event in events:
                            put(("event", event))
                except _Stopped:
                    pass
                except Exception as exc:
                    if not stop.is_set():
                        put(("error", failure_of(exc, label)))
                finally:
                    with self.counting:
                        self.active -= 1
                        self.served += 1
                    self.state.after_request()
                    self.report()
                    loop.call_soon_threadsafe(items.put_nowait, end)

            threading.Thread(target=work, name="aigc-generation", daemon=True).start()
            try:
                while (item := await items.get()) is not end:
                    yield item
            finally:
                stop.set()

        def report(self) -> None:
            """Tell the board what this replica holds now."""
            with contextlib.suppress(Exception):  # the board is gone (the server is stopping)
                _board().put.remote(
                    {
                        "deployment": f"aigc-{self.modality}",
                        "replica": self.replica,
                        "node": self.node,
                        "pid": self.pid,
                        "served": self.served,
                        "active": self.active,
                        "models": self.state.loaded(),
                        "batches": self.state.batch_sizes(),
                        "updated": time.time(),
                    }
                )

        def _heartbeat(self) -> None:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                self.report()

        def __del__(self) -> None:
            self._stop.set()
            with contextlib.suppress(Exception):
                _board().drop.remote(self.replica)

    # Made here: the limit is the server's option, not a constant of the class.
    ModalityReplica.hold = serve.multiplexed(max_num_models_per_replica=options.models_per_replica)(
        ModalityReplica.hold
    )

    class Ingress:
        """The app, built on the ingress replica: the routes of `aigc serve` over a RayState."""

        def __init__(self, handles: dict[str, Any], args: dict[str, Any]) -> None:
            self.handles = handles
            self.args = args

        def __serve_build_asgi_app__(self) -> Any:
            from ..console import LogConsole
            from .app import create_app
            from .ray_state import RayState
            from .state import check_preload

            a = self.args
            console = LogConsole(verbose=a["verbose"])
            state = RayState(self.handles, a["keep_alive"], list(a["preload"]), console)
            check_preload(state, list(a["preload"]))
            return create_app(
                state,
                api_key=a["api_key"],
                hosts=a["hosts"],
                cors_origins=a["cors_origins"],
                mcp_out_dir=a["out_dir"],
            )

    ingress = serve.deployment(
        serve.ingress()(Ingress),
        name="aigc-ingress",
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1000,
    )
    handles = {}
    for modality in MODALITIES:
        # text batches (up to 8 a replica, then the next replica); an image or a voice runs one at a time
        ongoing = 8 if modality == "text" else 2
        deployment = serve.deployment(
            ModalityReplica,
            name=f"aigc-{modality}",
            ray_actor_options=dict(replica_resources),
            max_ongoing_requests=ongoing,
            graceful_shutdown_timeout_s=5,
            **scales[modality].options(options.keep_alive),
        )
        handles[modality] = deployment.bind(modality, options)
    return ingress.bind(handles, ingress_args)


class _Stopped(Exception):
    """The ingress cancelled the request: the work stops at its next event."""


class _Held:
    """A model a replica holds for Ray Serve's multiplexing; unloaded from the pool when evicted."""

    def __init__(self, replica: Any, model_id: str) -> None:
        self.replica, self.model_id = replica, model_id

    def __del__(self) -> None:
        for key in self.replica.keys.pop(self.model_id, set()):
            self.replica.state.pool.unload(key)
