"""`aigc serve --ray`: check the options as `aigc serve` does, join (or start) a Ray cluster, deploy the app
on Ray Serve (server/ray_serve.py), record the server in AIGC_HOME, and wait for Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from ..console import LogConsole
from ..errors import AigcError, UsageError

FORWARDED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "AIGC_SERVER_NO_PULL")
"""Environment a replica on another node must share with this one: offline mode, and no downloads
without --allow-pull (the AIGC_* settings travel resolved, in each request)."""


def run_ray_server(
    host: str,
    port: int,
    keep_alive: str,
    preload_names: list[str],
    api_key: str | None,
    allow_pull: bool,
    cors_origins: list[str],
    verbose: bool,
    out_dir: str | None,
    ray_address: str | None,
    replicas: str | None,
    replica_cpus: float,
    replica_gpus: float | None,
    models_per_replica: int,
) -> None:
    """Serve on Ray Serve until Ctrl-C or SIGTERM; the URL on stdout once every deployment is ready
    (--preload models loaded on their replicas). ray_address: a running cluster (`ray start --head`;
    RAY_ADDRESS too); None starts a local Ray in this process. replica_gpus: None gives each text and image
    replica a GPU where the cluster has any. UsageError (exit 2) for options that cannot work."""
    from .discovery import connect_host, remove_record, write_record
    from .ray_serve import APP_NAME, ReplicaOptions, build_deployments, make_board, parse_replicas
    from .serve import LOOPBACK_NAMES, check_options, is_loopback, listen
    from .state import check_preload

    scales = parse_replicas(replicas)
    if models_per_replica < 1:
        raise UsageError(f"--models-per-replica must be at least 1 (got {models_per_replica})")
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise AigcError(
            f"aigc serve --ray needs Ray Serve ({exc.name} is missing): pip install 'aigc[ray]'"
        ) from None
    api_key, seconds = check_options(host, api_key, keep_alive, out_dir, allow_pull)
    check_preload(_Folders(), preload_names)  # a name aigc cannot run: exit 3 before Ray starts
    sock = listen(host, port)  # the port is free (port 0: pick one); Ray Serve's proxy takes it over
    bound = sock.getsockname()[1]
    sock.close()
    console = LogConsole(verbose=verbose)
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    env = {name: os.environ[name] for name in FORWARDED if name in os.environ}
    if address is None:  # a local Ray: its workers are this machine's, with this environment
        env.update({k: v for k, v in os.environ.items() if k.startswith(("AIGC_", "HF_"))})
    try:
        ray.init(
            address=address,
            namespace="serve",
            runtime_env={"env_vars": env},
            include_dashboard=False,
            log_to_driver=verbose,
            logging_level="INFO" if verbose else "ERROR",
            configure_logging=True,
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        remedy = "start one with `ray start --head`, or leave out --ray-address"
        if address and "RAY_AUTH_MODE" not in os.environ:  # Ray's clusters ask for a token by default
            remedy += "; a cluster with token authentication needs RAY_AUTH_MODE=token (and its token)"
        raise AigcError(f"Cannot start or join {where} ({first}): {remedy}") from None
    if replica_gpus is None:
        replica_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    resources = {"num_cpus": replica_cpus, "num_gpus": replica_gpus}
    _check_room(ray.cluster_resources(), scales, resources, replicas, local=address is None, console=console)
    hosts = LOOPBACK_NAMES if is_loopback(host) else None
    ingress_args = {
        "verbose": verbose,
        "keep_alive": seconds,
        "preload": list(preload_names),
        "api_key": api_key,
        "hosts": hosts,
        "cors_origins": cors_origins,
        "out_dir": out_dir,
    }
    options = ReplicaOptions(seconds, tuple(preload_names), verbose, models_per_replica)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    board = None
    recorded = False
    code = 0
    try:
        board = make_board()
        serve.start(http_options={"host": host, "port": bound}, proxy_location="HeadOnly")
        app = build_deployments(scales, options, ingress_args, resources)
        console.info(
            "aigc: deploying on Ray Serve ("
            + ", ".join(f"{m} {s}" for m, s in scales.items())
            + f" replicas; {replica_cpus:g} CPU and {replica_gpus:g} GPU each)"
        )
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        shown = connect_host(host)
        url = f"http://[{shown}]:{bound}" if ":" in shown else f"http://{shown}:{bound}"
        write_record(host, bound, api_key is not None)
        recorded = True
        print(url, flush=True)
        kept = "for ever" if seconds is None else f"{seconds:g} s"
        console.info(f"aigc: serving on {url} with Ray Serve (idle models stay loaded {kept}; Ctrl-C stops)")
        while not stop.wait(0.5):
            pass
    except AigcError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        console.info(f"aigc: error: Ray Serve could not deploy the app ({first})")
        code = 1
    finally:
        if recorded:
            remove_record()
        _teardown(serve, ray, board, local=address is None)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.info("aigc: server stopped")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _check_room(
    cluster: dict[str, float],
    scales: dict[str, Any],
    resources: dict[str, float],
    spec: str | None,
    local: bool,
    console: Any,
) -> None:
    """The replicas that start at once must fit the cluster's CPUs and GPUs, or Ray Serve waits for them for
    ever: a UsageError (exit 2) on a local Ray, whose size is known; a warning on a cluster, which may grow
    (an autoscaler adds nodes)."""
    starting = sum(scale.low for scale in scales.values())
    for unit, option, name in (("CPU", "--replica-cpus", "num_cpus"), ("GPU", "--replica-gpus", "num_gpus")):
        need, have = starting * resources[name], cluster.get(unit, 0.0)
        if need <= have + 1e-9:
            continue
        asked = f"--replicas {spec}" if spec else "one replica per modality (the default --replicas)"
        message = (
            f"{asked} with {option} {resources[name]:g} needs {need:g} {unit}s at start, and "
            f"{'this local Ray' if local else 'the cluster'} has {have:g}: lower {option} (e.g. "
            f"{have / max(starting, 1):.2g}) or start fewer replicas (LOW-HIGH, e.g. image=0-1)"
        )
        if local:
            raise UsageError(message)
        console.warn(f"{message}; Ray Serve waits until the cluster has room")


def _teardown(serve: Any, ray: Any, board: Any, local: bool) -> None:
    """Take the app down (the whole local Ray; on a shared cluster only this app and the board)."""
    import contextlib

    from .ray_serve import APP_NAME

    with contextlib.suppress(Exception):
        if local:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
    if board is not None:
        with contextlib.suppress(Exception):
            ray.kill(board)
    with contextlib.suppress(Exception):
        ray.shutdown()


class _Folders:
    """check_preload's target on the driver: it only checks names here (the ingress allows the folders)."""

    def allow_folder(self, folder: Any) -> None:
        pass
