"""`aigc serve --ray`: check the options as `aigc serve` does, join (or start) a Ray cluster, deploy the app
on Ray Serve (server/ray_serve.py), record the server in AIGC_HOME, and wait for Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
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
    local = address in (None, "local")  # "local": a new Ray here, never a cluster another process started
    if not local:
        _check_reachable(address)
    env = {name: os.environ[name] for name in FORWARDED if name in os.environ}
    if local:  # a local Ray: its workers are this machine's, with this environment
        env.update({k: v for k, v in os.environ.items() if k.startswith(("AIGC_", "HF_"))})
        # Serve's proxy gets 5 s to say it is ready, else it is killed: too short on a machine busy loading
        # models on every core. The controller started here reads these from this environment.
        for name in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S"):
            os.environ.setdefault(name, "60")
    deployed = threading.Event()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if not deployed.is_set():
            raise _Stopped()  # out of ray.init or Ray Serve's wait for the app, at once
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    board = None
    recorded = False
    code = 0
    try:
        _join(ray, "local" if local else address, env, verbose)
        if replica_gpus is None:
            replica_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        resources = {"num_cpus": replica_cpus, "num_gpus": replica_gpus}
        _check_room(ray.cluster_resources(), scales, resources, replicas, local, console)
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
        board = make_board()
        serve.start(http_options={"host": host, "port": bound}, proxy_location="HeadOnly")
        if not verbose:  # Ray Serve's own INFO lines (deploying, replicas added) are for -v
            logging.getLogger("ray.serve").setLevel(logging.WARNING)
        app = build_deployments(scales, options, ingress_args, resources)
        console.info(
            "aigc: deploying on Ray Serve ("
            + ", ".join(f"{m} {s}" for m, s in scales.items())
            + f" replicas; {replica_cpus:g} CPU and {replica_gpus:g} GPU each)"
        )
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        deployed.set()
        shown = connect_host(host)
        url = f"http://[{shown}]:{bound}" if ":" in shown else f"http://{shown}:{bound}"
        write_record(host, bound, api_key is not None)
        recorded = True
        print(url, flush=True)
        _say_preloads(preload_names, scales, console)
        kept = "for ever" if seconds is None else f"{seconds:g} s"
        console.info(f"aigc: serving on {url} with Ray Serve (idle models stay loaded {kept}; Ctrl-C stops)")
        while not stop.wait(0.5):
            pass
    except _Stopped:
        console.info("aigc: error: interrupted")
        code = 130
    except AigcError as exc:
        console.info(f"aigc: error: {exc.message}")
        code = int(exc.exit_code)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        console.info(f"aigc: error: Ray Serve could not deploy the app ({first})")
        code = 1
    finally:
        deployed.set()  # a second Ctrl-C while tearing down is not an exception in the middle of it
        if recorded:
            remove_record()
        _teardown(serve, ray, board, local=local)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.info("aigc: server stopped")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens at a HOST:PORT address
    (`auto` and `ray://` addresses are Ray's to resolve)."""
    import socket

    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise AigcError(
            f"No Ray cluster answers at {address} ({exc.strerror or exc}): start one there with "
            "`ray start --head`, or leave out --ray-address for a local Ray"
        ) from None


def _join(ray: Any, address: str, env: dict[str, str], verbose: bool) -> None:
    """ray.init on `address` ("local": a new Ray in this process); AigcError naming the remedy."""
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
        where = "a local Ray" if address == "local" else f"the Ray cluster at {address}"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        remedy = "start one with `ray start --head`, or leave out --ray-address"
        if address != "local" and "RAY_AUTH_MODE" not in os.environ:  # clusters ask for a token by default
            remedy += "; a cluster with token authentication needs RAY_AUTH_MODE=token (and its token)"
        raise AigcError(f"Cannot start or join {where} ({first}): {remedy}") from None


def _say_preloads(names: list[str], scales: dict[str, Any], console: Any) -> None:
    """A --preload model of a modality that starts at zero replicas loads when its first replica starts."""
    from ..catalog import modality_of

    for name in names:
        modality = modality_of(name)
        if scales[modality].low == 0:
            console.info(
                f"aigc: {name} ({modality}) loads when the first {modality} replica starts "
                f"(--replicas {modality}={scales[modality]})"
            )


def _check_room(
    cluster: dict[str, float],
    scales: dict[str, Any],
    resources: dict[str, float],
    spec: str | None,
    local: bool,
    console: Any,
) -> None:
    """The replicas must fit the cluster's CPUs and GPUs, or Ray Serve waits for room for ever (at start: the
    server never comes up; at their most: a request for a modality that cannot start a replica waits). On a
    local Ray, whose size is known, a UsageError (exit 2) naming what to lower; on a cluster, which may grow
    (an autoscaler adds nodes), a warning."""
    starting = sum(scale.low for scale in scales.values())
    most = sum(scale.high for scale in scales.values())
    asked = f"--replicas {spec}" if spec else "one replica per modality (the default --replicas)"
    for unit, option, name in (("CPU", "--replica-cpus", "num_cpus"), ("GPU", "--replica-gpus", "num_gpus")):
        each, have = resources[name], cluster.get(unit, 0.0)
        count, when = (starting, "at start") if starting * each > have + 1e-9 else (most, "at their most")
        if count * each <= have + 1e-9:
            continue
        message = (
            f"{asked} with {option} {each:g} needs {count * each:g} {unit}s {when}, and "
            f"{'this local Ray' if local else 'the cluster'} has {have:g}: lower {option} (e.g. "
            f"{int(have / count * 100) / 100:g}) or the replicas"
        )
        if local:
            raise UsageError(message)
        console.warn(f"{message}; Ray Serve waits until the cluster has room")


def _teardown(serve: Any, ray: Any, board: Any, local: bool) -> None:
    """Take the app down (the whole local Ray; on a shared cluster only this app and the board). Nothing of
    Serve's is called before this process has joined a Ray: Serve would join the one another process runs."""
    import contextlib

    from .ray_serve import APP_NAME

    if ray.is_initialized():
        with contextlib.suppress(Exception):
            if local:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        if board is not None:
            with contextlib.suppress(Exception):
                ray.kill(board)
    with contextlib.suppress(Exception):
        ray.shutdown()  # a local Ray interrupted while starting too


class _Stopped(Exception):
    """Ctrl-C or SIGTERM before the app was deployed."""


class _Folders:
    """check_preload's target on the driver: it only checks names here (the ingress allows the folders)."""

    def allow_folder(self, folder: Any) -> None:
        pass
