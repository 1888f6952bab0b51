"""The `aigc` command line: parse flags into a request, run a generator, write the payload.

This module imports nothing heavy: `aigc --help` must not import torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from typing import Annotated, Any, get_type_hints

import typer
from typer.core import TyperGroup

from . import __version__, completion
from .config import go_offline, settings
from .console import Console, error_line
from .errors import AigcError, ExitCode, Interrupted, PipeClosed, map_exception
from .ranges import ranged_option
from .settings import SCHEMAS, ImageSettings, Knob, SpeechSettings, TextSettings, knobs


def _light_conversion() -> None:
    """Typer (0.26+) converts every option's value, even one that was not given, through a pydantic
    TypeAdapter: importing pydantic and building the adapters is 0.1-0.3 s of every run, more than a Piper
    sentence takes. aigc's own options are str, int, float, bool or lists of str without Typer-side ranges
    (the settings resolver checks ranges, in the user's words, whatever the source): those are converted
    here as Click converted them, and everything else is left to Typer. Where Typer's internals differ
    (another version), nothing is changed."""
    try:
        from typer import _coercion, core
    except ImportError:  # pragma: no cover - another Typer layout: keep its own conversion
        return
    base = getattr(_coercion, "RuntimeParam", None)
    get = getattr(getattr(core, "_TyperParameter", None), "get_runtime_param", None)
    if base is None or get is None:  # pragma: no cover
        return
    from typing import get_args, get_origin

    names = {str: "a string", int: "an integer", float: "a number"}

    class Light(base):  # type: ignore[misc, valid-type]
        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            kind = self.annotation
            if get_origin(kind) is list:
                return [self._one(get_args(kind)[0], v, param, ctx) for v in value]
            return self._one(kind, value, param, ctx)

        @staticmethod
        def _one(kind: type, value: Any, param: Any, ctx: Any) -> Any:
            if kind is bool or isinstance(value, kind):
                return value
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise typer.BadParameter(f"{value!r} is not {names[kind]}", ctx=ctx, param=param) from None

    def simple(descriptor: Any) -> bool:
        info, kind = descriptor.parameter_info, descriptor.annotation
        if get_origin(kind) is list:
            kind = get_args(kind)[0] if len(get_args(kind)) == 1 else None
        plain = all(getattr(info, a, None) in (None, False) for a in ("min", "max", "parser", "clamp"))
        return kind in (str, int, float, bool) and plain and descriptor.file_annotation is None

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None and simple(self.type_descriptor):
            self._runtime_param = Light(self.type_descriptor.parameter_info, self.type_descriptor.annotation)
        return get(self)

    core._TyperParameter.get_runtime_param = get_runtime_param


_light_conversion()

HELP_COLUMN = 24
"""The widest flag column of --help (a longer flag and value go on a line of their own), so that help text
keeps 52 of a 80-column terminal's columns."""


def _sectioned_help() -> None:
    """--help in Click's plain layout (the app's rich_markup_mode=None: the same lines on a terminal and in
    a pipe, 78 columns at most), the options under headings (each one's rich_help_panel; "Options", last,
    for the rest), every value named as a person writes it: the option's metavar (N, MODEL, SECONDS), else
    its name (--query QUERY) where Typer would print <str> or <int>, and an argument by its name alone
    (PROMPT, not `prompt <str>`). Typer writes the Arguments and Options sections of every command and
    group in typer.core._typer_format_options; where another Typer version has none, its layout stays."""
    try:
        from typer import core
    except ImportError:  # pragma: no cover
        return
    if not callable(getattr(core, "_typer_format_options", None)):  # pragma: no cover
        return

    def format_options(self: Any, *, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            if param.param_type_name == "argument":
                name = (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")
                sections.setdefault("Arguments", []).append((name, param.help or ""))
                continue
            if param.metavar is None and not param.is_flag and not param.count:
                param.metavar = param.name.upper()
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        options = sections.pop("Options", None)
        for title, rows in [*sections.items(), *([("Options", options)] if options else [])]:
            with formatter.section(title):
                formatter.write_dl(rows, col_max=HELP_COLUMN)

    core._typer_format_options = format_options


_sectioned_help()

app = typer.Typer(
    name="aigc",
    help="Generate text, images and speech from pretrained Hugging Face models, in shell pipelines.",
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(
    help="List, pull, locate and remove models (the Hugging Face cache); set default models.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models", short_help="List, pull, locate, remove and set default models.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aigc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Generate text, images and speech from pretrained Hugging Face models, in shell pipelines."""


# One flag vocabulary across commands: the settings schema (settings.py) makes the generation flags; the
# output and console flags below are the command line's own.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON line per result on stdout.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Nothing on stderr but errors.")]
VerboseOpt = Annotated[
    bool, typer.Option("-v", "--verbose", help="Notes on stderr too: backend, model folder, the seed drawn.")
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Never touch the network (same as HF_HUB_OFFLINE=1).")
]
PromptArg = Annotated[
    str | None, typer.Argument(metavar="PROMPT", help="The prompt; '-' or a piped stdin is read first.")
]
NoStdinOpt = Annotated[
    bool,
    typer.Option(
        "--no-stdin", help="Leave stdin alone: the argument is the whole prompt (AIGC_NO_STDIN=1 too)."
    ),
]
NoLogOpt = Annotated[
    bool, typer.Option("--no-log", help="Leave this run out of the log (AIGC_HOME/logs.db).")
]
# aigc serve and aigc mcp: the options of a process that keeps models warm for its clients.
KeepAliveOpt = Annotated[
    str,
    typer.Option(
        "--keep-alive",
        metavar="DURATION",
        help="How long an idle model stays loaded: 5m, 30s, 1h; 0 unloads at once, -1 never.",
    ),
]
PreloadOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--preload",
        metavar="MODEL",
        help="Load this model at start (repeatable); the only local folders served.",
        autocompletion=completion.models(*SCHEMAS),
    ),
]
AllowPullOpt = Annotated[
    bool, typer.Option("--allow-pull", help="Let clients download models they name (off: offline).")
]
LocalOpt = Annotated[
    bool,
    typer.Option(
        "--local", help="Run in this process even when a server runs (AIGC_HOST, or `aigc serve` here)."
    ),
]


MODEL_PANEL = "Model and device"
MODEL_SETTINGS = ("model", "device", "dtype", "backend", "precision", "trust_remote_code", "low_memory")
"""Settings that choose what runs and where: listed apart from the settings of what is generated."""
SHARED_PANEL = "Every job"


def _option(
    name: str, knob: Knob, panel: str, complete: Callable[..., Any] | None = None
) -> inspect.Parameter:
    """A Typer option for one setting; its default is None (not given) so that the resolver can tell.
    Its help is the knob's and what happens by default; the range is the resolver's to check, in the
    user's words, whatever the source (a range worth knowing is said in the knob's help)."""
    kind = {list: list[str], bool: bool, int: int, float: float, str: str}[knob.kind]
    names = [f"{knob.flag}/--no-{knob.flag[2:]}" if knob.kind is bool else knob.flag]
    if knob.short:
        names.insert(0, knob.short)
    metavar = None if knob.kind is bool else knob.metavar or {int: "N", float: "X"}.get(knob.kind, "TEXT")
    help_text = knob.help + (f" Default: {knob.default_text}." if knob.default_text else "")
    option = typer.Option(
        *names,
        help=help_text,
        metavar=metavar,
        show_default=False,
        rich_help_panel=panel,
        autocompletion=complete,
    )
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def _completer(name: str, modalities: list[str], values: tuple[str, ...]) -> Callable[..., Any] | None:
    """How the shell completes a setting's value: model names of its modalities, the devices, a voice's
    speakers, or its choices (None: nothing to offer; the shell falls back to file names)."""
    if name == "model":
        return completion.models(*modalities)
    if name == "device":
        return completion.choices(completion.DEVICES)
    if name == "voice":
        return completion.speakers
    return completion.choices(values) if values else None


def with_settings(
    *schemas: type, leave_out: tuple[str, ...] = (), panels: tuple[str, ...] = ()
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the schemas' flags (after its first parameter, the prompt; a setting that several
    schemas have once, with the first one's help); the command receives them as `flags`, a dict of field
    name -> value or None. In --help, one schema's settings are listed under MODEL_PANEL (MODEL_SETTINGS)
    and "Generation"; with several schemas, each one's own under its title in `panels` and those they
    share under SHARED_PANEL."""
    modality_of = {cls: modality for modality, cls in SCHEMAS.items()}

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        hints = get_type_hints(command, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name], kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(command).parameters.values()
            if p.name != "flags"
        ]
        merged: dict[str, Knob] = {}
        holders: dict[str, list[type]] = {}
        for schema in schemas:
            for name, knob in knobs(schema).items():
                if name not in leave_out:
                    if merged.setdefault(name, knob).default_text != knob.default_text:
                        merged[name] = dataclasses.replace(merged[name], default_text="each task's own")
                    holders.setdefault(name, []).append(schema)

        def panel(name: str) -> str:
            if not panels:
                return MODEL_PANEL if name in MODEL_SETTINGS else "Generation"
            return SHARED_PANEL if len(holders[name]) > 1 else panels[schemas.index(holders[name][0])]

        def complete(name: str) -> Callable[..., Any] | None:
            values = [value for schema in holders[name] for value in knobs(schema)[name].choices]
            return _completer(name, [modality_of[s] for s in holders[name]], tuple(dict.fromkeys(values)))

        added = [_option(name, knob, panel(name), complete(name)) for name, knob in merged.items()]
        names = {p.name for p in added}

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            flags = {name: kwargs.pop(name) for name in names}
            command(flags=flags, **kwargs)

        parameters = [*own[:1], *added, *own[1:]]
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


@app.command(short_help="Generate text with a language model; tokens stream to stdout.")
@with_settings(TextSettings)
def text(
    prompt: PromptArg = None,
    flags: dict[str, Any] | None = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print tokens as they come.")] = True,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    offline: OfflineOpt = False,
    local: LocalOpt = False,
    no_log: NoLogOpt = False,
    continue_last: Annotated[
        bool,
        typer.Option("-c", "--continue", help="Continue the latest conversation (its history goes first)."),
    ] = False,
    cid: Annotated[
        str | None,
        typer.Option("--cid", metavar="ID", help="Continue this conversation (an id `aigc logs` shows)."),
    ] = None,
    no_stdin: NoStdinOpt = False,
) -> None:
    """Generate text with a causal language model; tokens stream to stdout."""
    from .commands.text import TextOptions, run_text

    if offline:
        go_offline()
    options = TextOptions(
        prompt, flags or {}, stream, json_out, local, no_log, cid, continue_last, use_stdin=not no_stdin
    )
    run_text(options, Console(quiet=quiet, verbose=verbose))


@app.command(short_help="Chat with a model on a terminal, or a turn per line of stdin.")
@with_settings(TextSettings, leave_out=("count", "raw"))
def chat(
    flags: dict[str, Any] | None = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    offline: OfflineOpt = False,
    local: LocalOpt = False,
    no_log: NoLogOpt = False,
    continue_last: Annotated[
        bool, typer.Option("-c", "--continue", help="Go on with the latest conversation.")
    ] = False,
    cid: Annotated[
        str | None,
        typer.Option("--cid", metavar="ID", help="Go on with this conversation (an id `aigc logs` shows)."),
    ] = None,
) -> None:
    """Chat with a model: replies stream as they come; /exit, /clear, /system TEXT, \"\"\" for several lines.
    Without a terminal, each line of stdin is a turn."""
    from .commands.chat import ChatOptions, run_chat

    if offline:
        go_offline()
    run_chat(
        ChatOptions(flags or {}, local, no_log, cid, continue_last), Console(quiet=quiet, verbose=verbose)
    )


@app.command(short_help="Generate images with Stable Diffusion, each recording how.")
@with_settings(ImageSettings)
def image(
    prompt: PromptArg = None,
    flags: dict[str, Any] | None = None,
    out: Annotated[
        str | None,
        typer.Option(
            "-o", "--out", metavar="FILE", help="PNG, JPEG or WebP by extension; '-' for PNG on stdout."
        ),
    ] = None,
    init_image: Annotated[
        str | None,
        typer.Option(
            "--init-image",
            metavar="FILE",
            help="Start from this image (a path, or '-' for stdin).",
            rich_help_panel="Generation",
        ),
    ] = None,
    mask: Annotated[
        str | None,
        typer.Option(
            "--mask",
            metavar="FILE",
            help="Inpaint --init-image: white repaints, black keeps; same size ('-': stdin).",
            rich_help_panel="Generation",
        ),
    ] = None,
    from_file: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="FILE",
            help="Make the image a file records again; flags override.",
            rich_help_panel="Generation",
        ),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    offline: OfflineOpt = False,
    local: LocalOpt = False,
    no_log: NoLogOpt = False,
    no_stdin: NoStdinOpt = False,
) -> None:
    """Generate images with a Stable Diffusion pipeline; every image records how it was made."""
    from .commands.image import ImageOptions, run_image

    if offline:
        go_offline()
    options = ImageOptions(
        prompt, flags or {}, out, init_image, mask, from_file, json_out, local, no_log, not no_stdin
    )
    run_image(options, Console(quiet=quiet, verbose=verbose))


@app.command(short_help="Speak text with a Piper voice or a transformers TTS model.")
@with_settings(SpeechSettings)
def speak(
    prompt: Annotated[
        str | None, typer.Argument(metavar="TEXT", help="The text; '-' or a piped stdin is read first.")
    ] = None,
    flags: dict[str, Any] | None = None,
    out: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--out",
            metavar="FILE",
            help="WAV, FLAC, OGG, MP3, OPUS or AAC by extension; '-' for stdout.",
        ),
    ] = None,
    audio_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="wav, flac, ogg, mp3, opus, aac, or raw (16-bit PCM streamed per sentence).",
            autocompletion=completion.audio_formats,
        ),
    ] = None,
    play: Annotated[
        bool, typer.Option("--play", help="Play it with ffplay, aplay, paplay or afplay.")
    ] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    offline: OfflineOpt = False,
    local: LocalOpt = False,
    no_log: NoLogOpt = False,
    no_stdin: NoStdinOpt = False,
) -> None:
    """Speak text with a Piper voice or a transformers TTS model; long text is read sentence by sentence."""
    from .commands.speak import SpeakOptions, run_speak

    if offline:
        go_offline()
    options = SpeakOptions(
        prompt, flags or {}, out, audio_format, play, json_out, local, no_log, not no_stdin
    )
    run_speak(options, Console(quiet=quiet, verbose=verbose))


@app.command(short_help="Run many jobs from a JSONL file, each model loaded once.")
@with_settings(
    TextSettings,
    ImageSettings,
    SpeechSettings,
    leave_out=("count",),
    panels=("Text jobs", "Image jobs", "Speech jobs"),
)
def batch(
    jobs: Annotated[
        str, typer.Argument(metavar="JOBS", help="The jobs: a JSONL file, one job per line; '-' for stdin.")
    ],
    flags: dict[str, Any] | None = None,
    out: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--out",
            metavar="RESULTS",
            help="A JSONL file, one result per job (resumable). Default: stdout.",
        ),
    ] = None,
    out_dir: Annotated[
        str | None,
        typer.Option("--out-dir", metavar="FOLDER", help="Where image and audio files go. Default: here."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            metavar="TASK",
            help="text, image or speech: for jobs that name no task.",
            autocompletion=completion.choices(("text", "image", "speech")),
        ),
    ] = None,
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors", help="Run again the jobs RESULTS says failed.")
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            metavar="ENGINE",
            help="local (this process) or ray (Ray Data; the ray extra).",
            autocompletion=completion.choices(("local", "ray")),
        ),
    ] = "local",
    workers: Annotated[
        int | None,
        ranged_option(
            "--workers", metavar="N", help="Ray workers, each holding the engine. Default: 2.", low=1
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            metavar="ADDRESS",
            help="A Ray cluster to join (default: RAY_ADDRESS, else a local Ray).",
        ),
    ] = None,
    max_line_bytes: Annotated[
        int,
        ranged_option(
            "--max-line-bytes",
            metavar="N",
            show_default=False,
            help="A job line's limit in bytes (a longer line fails). Default: 10 MB.",
            low=1,
        ),
    ] = 10_000_000,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    offline: OfflineOpt = False,
    no_log: NoLogOpt = False,
) -> None:
    """Run many jobs from a JSONL file, each model loaded once; RESULTS makes it resumable. The flags are
    defaults for every job whose task has that setting; a job's own value wins."""
    from .batch.local import BatchOptions, run_batch

    if offline:
        go_offline()
    if task is not None and task not in ("text", "image", "speech"):
        raise typer.BadParameter(f"'{task}': use text, image or speech", param_hint="--task")
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"'{engine}': use local or ray", param_hint="--engine")
    options = BatchOptions(
        jobs,
        out,
        out_dir,
        task,
        flags or {},
        retry_errors,
        engine,
        workers,
        ray_address,
        no_log,
        max_line_bytes=max_line_bytes,
    )
    code = run_batch(options, Console(quiet=quiet, verbose=verbose))
    raise typer.Exit(code)


@app.command(short_help="Serve models over an OpenAI-compatible HTTP API, kept warm.")
def serve(
    host: Annotated[
        str,
        typer.Option(
            "--host", metavar="ADDRESS", help="Address to listen on; other than loopback needs --api-key."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, ranged_option("--port", metavar="PORT", help="TCP port; 0 picks a free one.", low=0, high=65535)
    ] = 8765,
    keep_alive: KeepAliveOpt = "5m",
    preload: PreloadOpt = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", metavar="KEY", help="Require `Authorization: Bearer KEY` (default: AIGC_API_KEY)."
        ),
    ] = None,
    allow_pull: AllowPullOpt = False,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            metavar="ORIGIN",
            help="A web origin allowed to call the API from a browser (repeatable).",
        ),
    ] = None,
    out_dir: Annotated[
        str | None,
        typer.Option(
            "--out-dir",
            metavar="DIR",
            help="Where the MCP tools at /mcp save files. Default: AIGC_HOME/outputs.",
        ),
    ] = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Run on Ray Serve: a deployment per modality with replicas (a local Ray, or --ray-address).",
            rich_help_panel="Ray Serve",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            metavar="ADDRESS",
            help="A Ray cluster: HOST:PORT of `ray start --head`, or auto "
            "(default: RAY_ADDRESS, else a new local Ray).",
            rich_help_panel="Ray Serve",
        ),
    ] = None,
    replicas: Annotated[
        str | None,
        typer.Option(
            "--replicas",
            metavar="SPEC",
            help="Replicas per modality, N or LOW-HIGH to autoscale (0: to zero), e.g. text=2,image=0-1; "
            "others get 1.",
            rich_help_panel="Ray Serve",
        ),
    ] = None,
    replica_cpus: Annotated[
        float,
        typer.Option(
            "--replica-cpus", metavar="N", help="CPUs Ray reserves per replica.", rich_help_panel="Ray Serve"
        ),
    ] = 1.0,
    replica_gpus: Annotated[
        float | None,
        typer.Option(
            "--replica-gpus",
            metavar="N",
            help="GPUs per replica (default: 1 where the cluster has GPUs, else 0).",
            rich_help_panel="Ray Serve",
        ),
    ] = None,
    models_per_replica: Annotated[
        int,
        ranged_option(
            "--models-per-replica",
            metavar="N",
            help="Models a replica keeps loaded; the least recently used leaves first.",
            low=1,
            rich_help_panel="Ray Serve",
        ),
    ] = 3,
    verbose: VerboseOpt = False,
) -> None:
    """Serve text, images and speech over an OpenAI-compatible HTTP API, models kept warm (URL on stdout)."""
    ray_given = [
        name
        for name, given in (
            ("--ray-address", ray_address is not None),
            ("--replicas", replicas is not None),
            ("--replica-cpus", replica_cpus != 1.0),
            ("--replica-gpus", replica_gpus is not None),
            ("--models-per-replica", models_per_replica != 3),
        )
        if given
    ]
    if not ray and ray_given:
        from .errors import UsageError

        raise UsageError(f"{ray_given[0]} applies to aigc serve --ray: add --ray")
    for name, value in (("--replica-cpus", replica_cpus), ("--replica-gpus", replica_gpus)):
        if value is not None and value < 0:
            from .errors import UsageError

            raise UsageError(f"{name} must be at least 0 (got {value:g})")
    common = (host, port, keep_alive, preload or [], api_key, allow_pull, cors_origin or [], verbose, out_dir)
    if ray:
        from .server.ray_launch import run_ray_server

        run_ray_server(*common, ray_address, replicas, replica_cpus, replica_gpus, models_per_replica)
    else:
        from .server.serve import run_server

        run_server(*common)


@app.command(short_help="Serve text, images and speech as MCP tools for agents, on stdio.")
def mcp(
    out_dir: Annotated[
        str | None,
        typer.Option(
            "--out-dir",
            metavar="DIR",
            help="Where the tools save files, the only folder they read. Default: AIGC_HOME/outputs.",
        ),
    ] = None,
    keep_alive: KeepAliveOpt = "5m",
    preload: PreloadOpt = None,
    allow_pull: AllowPullOpt = False,
    no_log: NoLogOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Serve generate_text, generate_image, speak, list_models and describe_file as Model Context
    Protocol tools on stdin/stdout, models kept warm; an agent (Claude, VS Code, Cursor) starts it."""
    from pathlib import Path

    from .mcp.server import run_stdio

    folder = Path(out_dir) if out_dir else None
    run_stdio(folder, keep_alive, preload or [], allow_pull, no_log, verbose)


@app.command(short_help="List the models a running `aigc serve` holds.")
def ps(json_out: JsonOpt = False) -> None:
    """List the models a running `aigc serve` holds: modality, device, memory, idle time."""
    from .commands.ps import run_ps

    run_ps(json_out)


@app.command(short_help="Read back what a generated file records: prompt, model, seed.")
def info(
    file: Annotated[str, typer.Argument(metavar="FILE", help="An image or audio file aigc made.")],
    json_out: JsonOpt = False,
) -> None:
    """Print what a generated file records: prompt, model, seed, settings."""
    from .commands.info import run_info

    run_info(file, json_out)


@app.command(short_help="Check a file's AI mark and C2PA content credentials.")
def verify(
    files: Annotated[list[str], typer.Argument(metavar="FILE", help="Images or audio files to check.")],
    trust: Annotated[
        str | None,
        typer.Option("--trust", metavar="PEM", help="CA certificates to trust. Default: AIGC_TRUST_ANCHORS."),
    ] = None,
    replay: Annotated[
        bool, typer.Option("--replay", help="Make the image again from its record and compare.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Is the file marked as AI-made; is its C2PA manifest signed, intact, trusted; who signed it; what it
    records. Exit 0 when every file verifies, 1 when one is unsigned, tampered, invalid or replays
    differently."""
    from .commands.verify import run_verify
    from .console import Console

    run_verify(files, trust, replay, json_out, Console())


@app.command(short_help="Show devices, versions, caches, offline state, embedded models.")
def doctor(
    json_out: JsonOpt = False,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            metavar="DEVICE",
            help="auto, cpu, cuda, cuda:N, mps or xpu. Default: auto.",
            autocompletion=completion.choices(completion.DEVICES),
        ),
    ] = None,
    offline: OfflineOpt = False,
) -> None:
    """Show devices and the choice `auto` makes, versions, cache folders, offline state, embedded models."""
    from .commands.doctor import run_doctor

    if offline:
        go_offline()
    run_doctor(device, json_out)


class _LogsGroup(TyperGroup):
    """`aigc logs`, whose unknown command names the search flag: llm's `logs -q WORDS` searches, and here
    -q is --quiet, so `aigc logs -q fox` meets 'fox' as a command."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as exc:
            from difflib import get_close_matches

            # a word that is no command's misspelling (Typer suggests those): a search, as llm's -q was
            if args and hasattr(exc, "message") and not get_close_matches(args[0], list(self.commands)):
                import shlex

                search = f"aigc logs -s {shlex.quote(args[0])}"
                exc.message = f"{exc.message.rstrip('.')}: to search the log, {search}"
            raise


logs_app = typer.Typer(
    help="The log of every generation (AIGC_HOME/logs.db): list, search, show, run again; on or off.",
    invoke_without_command=True,
    cls=_LogsGroup,
)
app.add_typer(logs_app, name="logs", short_help="The log of every generation: list, search, show, rerun.")


@logs_app.callback()
def logs_list(
    ctx: typer.Context,
    count: Annotated[
        int, ranged_option("-n", "--count", metavar="N", help="How many, newest first.", low=1)
    ] = 20,
    modality: Annotated[str | None, typer.Option("--modality", help="text, image or speech.")] = None,
    query: Annotated[
        str | None,
        typer.Option(
            "-s",
            "--search",
            "--query",  # llm's name for it (llm's -q; -q is --quiet here, as everywhere in aigc)
            metavar="WORDS",
            help="Only generations whose prompt or output has these words (full-text search).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the newest generations (or those -s finds); see the subcommands to show or rerun one. On a
    terminal the table fits its width; in a pipe every value is whole."""
    if ctx.invoked_subcommand is not None:
        return
    from .commands.logs import run_list

    run_list(count, modality, query, json_out, Console(quiet=quiet))


@logs_app.command("show")
def logs_show(
    entry: Annotated[str, typer.Argument(help="A log id (`aigc logs` lists them).")],
    json_out: JsonOpt = False,
) -> None:
    """Everything the log holds of one generation."""
    from .commands.logs import run_show

    run_show(entry, json_out)


@logs_app.command("rerun")
def logs_rerun(
    entry: Annotated[str, typer.Argument(help="A log id (`aigc logs` lists them).")],
    out: Annotated[str | None, typer.Option("-o", "--out", help="Where an image or audio goes.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run a generation again: same model, settings and seed, so the same text, pixels or samples."""
    from .commands.logs import run_rerun

    run_rerun(entry, out, Console(quiet=quiet))


@logs_app.command("on")
def logs_on() -> None:
    """Log every generation again."""
    from .commands.logs import run_switch

    run_switch("on")


@logs_app.command("off")
def logs_off() -> None:
    """Stop logging (what is logged stays)."""
    from .commands.logs import run_switch

    run_switch("off")


@logs_app.command("status")
def logs_status() -> None:
    """Whether logging is on, where the log is, how many generations it holds."""
    from .commands.logs import run_switch

    run_switch("status")


@models_app.command("list")
def models_list(
    json_out: JsonOpt = False,
    modality: Annotated[str | None, typer.Option("--modality", help="text, image or speech.")] = None,
) -> None:
    """Every alias (source, license, offline or not, size), then the other models in the HF cache."""
    from .commands.models import run_list

    run_list(modality, json_out)


@models_app.command("pull")
def models_pull(
    names: Annotated[list[str], typer.Argument(help="Aliases or Hub repo ids.")],
    quiet: QuietOpt = False,
    offline: OfflineOpt = False,
) -> None:
    """Download models into the Hugging Face cache (only the files the pipeline needs)."""
    from .commands.models import run_pull

    if offline:
        go_offline()

    run_pull(names, Console(quiet=quiet))


@models_app.command("rm")
def models_rm(
    name: Annotated[str, typer.Argument(help="Alias or Hub repo id.")],
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Do not ask (needed without a terminal).")] = False,
) -> None:
    """Remove a model from the Hugging Face cache (the embedded model: its conversion and exports)."""
    from .commands.models import run_rm

    run_rm(name, yes)


@models_app.command("default")
def models_default(
    modality: Annotated[str | None, typer.Argument(help="text, image or speech.")] = None,
    name: Annotated[
        str | None, typer.Argument(help="The model to make the default (in config.toml).")
    ] = None,
) -> None:
    """Show the default model per modality and where it is set, or set one in AIGC_HOME/config.toml."""
    from .commands.models import run_default

    run_default(modality, name)


@models_app.command("path")
def models_path(
    name: Annotated[str, typer.Argument(help="Alias, Hub repo id or folder.")],
) -> None:
    """Print the local folder that holds a model (exit 3 when it is not available offline)."""
    from .commands.models import run_path

    run_path(name)


def _usage_line(exc: typer.TyperException) -> str:
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"{exc.format_message()}{hint}"


def _flush_stdout(code: Any) -> Any:
    """Flush what stdout still holds now, so that a failure is one line and the exit code (4), not
    Python's "Exception ignored" at shutdown; a stdout that failed once is pointed at /dev/null."""
    from .streams import silence_stdout

    if sys.stdout is None:
        return code
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
    except (OSError, ValueError) as exc:
        silence_stdout()
        if code in (None, ExitCode.OK):
            error_line(f"Cannot write to stdout: {getattr(exc, 'strerror', None) or exc}")
            return ExitCode.OUTPUT
    return code


def _command_for(args: list[str]) -> Any:
    """The Click command for these arguments. Typer builds every command's options when it builds the
    group (a third of `aigc speak`'s start-up beyond Piper's own); a run of one generating command needs
    only that one, so the group is built with that command alone. Anything else (help, completion, the
    other commands, an unknown name) gets the whole group, so that its listing and errors are Typer's."""
    from typer.main import get_command

    name = args[0] if args else None
    if name in ("text", "image", "speak") and not {"-h", "--help"} & set(args):
        one = typer.Typer(name=app.info.name, pretty_exceptions_enable=False, add_completion=False)
        one.registered_callback = app.registered_callback
        one.registered_commands = [c for c in app.registered_commands if c.callback.__name__ == name]
        one.info = app.info
        return get_command(one)
    return get_command(app)


def main() -> None:
    """Entry point: known failures become one stderr line and an exit code; AIGC_DEBUG=1 shows tracebacks."""
    debug = settings().debug
    interrupted = "interrupted"
    try:
        code = _command_for(sys.argv[1:]).main(args=sys.argv[1:], prog_name="aigc", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors from the parser (bad flag, bad value)
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message(), err=True)
        else:
            error_line(_usage_line(exc))
        code = getattr(exc, "exit_code", ExitCode.USAGE)
    except Interrupted as exc:  # Ctrl-C where the command said what got done
        code, interrupted = ExitCode.INTERRUPTED, exc.message
    except AigcError as exc:
        if debug:
            traceback.print_exc()
        error_line(exc.message)
        code = exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        code = ExitCode.INTERRUPTED
    except (PipeClosed, BrokenPipeError):
        # The reader closed the pipe (`aigc text ... | head`): that is its choice, not a failure.
        from .streams import silence_stdout

        silence_stdout()
        code = ExitCode.OK
    except Exception as exc:
        if debug:
            traceback.print_exc()
        mapped = map_exception(exc)
        if mapped is not None:
            error_line(mapped.message)
            code = mapped.exit_code
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            error_line(f"{type(exc).__name__}: {first} (AIGC_DEBUG=1 shows the traceback)")
            code = ExitCode.FAILURE
    code = _flush_stdout(code)
    if code == ExitCode.INTERRUPTED:  # Ctrl-C, caught here or turned into Exit(130) by Typer
        error_line(interrupted)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()
        os._exit(int(code))  # a generation thread may still be running: do not wait for it
    sys.exit(int(code) if isinstance(code, int) else 0)
