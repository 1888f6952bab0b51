"""The MCP tools: what each takes (argument schemas derived from the settings schema, so that a tool's
`max_tokens` is the flag `--max-tokens`, the config key and the API field, checked by the same rules) and
how it runs: settings resolved as a server request's are (`aigc serve`'s model rules: aliases, cached Hub
repos, folders named with --preload; nothing downloaded unless --allow-pull), then `core.prepare` and
`core.run` on the server's pool, the output saved in the one output folder with the record a CLI file
carries, and logged. Nothing here imports the `mcp` SDK: server.py turns an `Outcome` into MCP content.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..errors import UsageError, failure_of
from ..settings import SCHEMAS, knobs

SPEECH_FORMATS = ("wav", "flac", "ogg", "mp3")
"""Audio formats a tool returns: those with a media type MCP clients play (WAV by default)."""
MAX_IMAGES = 8
"""Images per generate_image call: each comes back in the result as base64 PNG."""
MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
}
"""The files the output folder serves as resources, by extension."""

Progress = Callable[[float, float | None, str | None], None]
"""progress(done, total, message): how far a call is (image steps, sentences, tokens)."""


class Cancelled(Exception):
    """The client cancelled the call: the generation stopped at its next step; nothing was saved."""


@dataclass(frozen=True)
class Arg:
    """One argument of a tool."""

    name: str
    schema: dict[str, Any]
    setting: str | None = None
    """The settings field it sets (settings.py); None for the tool's own (prompt, text, format, path)."""


@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    description: str
    args: tuple[Arg, ...]
    required: tuple[str, ...]
    output: dict[str, Any]
    """The JSON Schema of the result's structuredContent."""
    modality: str | None = None

    def input_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {arg.name: arg.schema for arg in self.args},
            "required": list(self.required),
            "additionalProperties": False,
        }


def _setting(modality: str, name: str, arg: str | None = None, help: str | None = None) -> Arg:
    """An argument that sets settings field `name`, its schema the API's (server/openapi.py) less null: an
    agent leaves an argument out rather than sending null."""
    from ..server.openapi import knob_schema

    schema = knob_schema(name, knobs(SCHEMAS[modality])[name])
    kind = schema.get("type")
    if isinstance(kind, list):
        schema["type"] = next(t for t in kind if t != "null")
    if "enum" in schema:
        schema["enum"] = [v for v in schema["enum"] if v is not None]
    if "oneOf" in schema:  # a list setting (stop): one string or several
        schema = {"type": "array", "items": {"type": "string"}, "description": schema["description"]}
    if help is not None:
        schema["description"] = help
    return Arg(arg or name, schema, name)


def _own(name: str, description: str, **schema: Any) -> Arg:
    return Arg(name, {"type": "string", "description": description, **schema})


_NOTICES = {
    "type": "array",
    "description": "What ran otherwise than asked (a prompt cut to the context, tokens capped), and notes.",
    "items": {
        "type": "object",
        "properties": {
            "level": {"type": "string"},
            "code": {"type": "string"},
            "message": {"type": "string"},
        },
    },
}
_FILE = {
    "path": {"type": "string", "description": "The saved file, in the output folder."},
    "uri": {"type": "string", "description": "The saved file as a file:// URI (an MCP resource)."},
}
_RECORD = {
    "model": {"type": "string"},
    "seed": {"type": ["integer", "null"]},
    "revision": {"type": ["string", "null"]},
}


def _result(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": {**properties, "notices": _NOTICES}, "required": required}


def _tools() -> dict[str, Tool]:
    text_settings = ("system", "model", "max_tokens", "temperature", "top_k", "top_p", "repetition_penalty")
    text = Tool(
        "generate_text",
        "Generate text",
        "Write text with a local language model (a chat model answers `prompt` as the user's message). "
        "Returns the text, and in structuredContent the record: model and revision, seed, settings, tokens.",
        (
            _own("prompt", "The user's message (or, for a base model, the text to continue).", minLength=1),
            *(_setting("text", name) for name in text_settings),
            _setting("text", "stop"),
            _setting("text", "seed"),
        ),
        ("prompt",),
        _result(
            {"text": {"type": "string"}, **_RECORD, "finish_reason": {"type": "string"}}, ["text", "model"]
        ),
        "text",
    )
    image_settings = ("model", "width", "height", "steps", "guidance", "scheduler", "seed")
    image = Tool(
        "generate_image",
        "Generate images",
        "Make images with a local Stable Diffusion model. Each image is saved (PNG, with its record) in the "
        "output folder and returned as image content and a resource link; structuredContent holds each "
        "image's record (prompt, model and revision, seed, steps, guidance, size). Image i of a call uses "
        "seed + i. init_image (and mask, white where to repaint) name PNG/JPEG/WebP files in the output "
        "folder, for image-to-image and inpainting.",
        (
            _own("prompt", "What the image shows.", minLength=1),
            _setting("image", "negative", "negative_prompt"),
            *(_setting("image", name) for name in image_settings),
            Arg(
                "count",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_IMAGES,
                    "description": f"How many images (1 to {MAX_IMAGES}).",
                },
                "count",
            ),
            _own("init_image", "A file in the output folder to start from (image-to-image)."),
            _own("mask", "With init_image: a file in the output folder, white where to repaint."),
            _setting("image", "strength"),
        ),
        ("prompt",),
        _result(
            {"images": {"type": "array", "items": {"type": "object", "properties": {**_FILE, **_RECORD}}}},
            ["images"],
        ),
        "image",
    )
    speech = Tool(
        "speak",
        "Speak text",
        "Read text aloud with a local voice (Piper, or a transformers TTS model). The audio is saved in "
        "the output folder and returned as audio content and a resource link; structuredContent holds the "
        "record (model, voice, speed, sample rate, duration).",
        (
            _own("text", "The text to speak.", minLength=1),
            _setting("speech", "model"),
            _setting("speech", "voice"),
            _setting("speech", "speed"),
            _setting("speech", "seed"),
            _own("format", "The audio file's format (wav by default).", enum=list(SPEECH_FORMATS)),
        ),
        ("text",),
        _result(
            {**_FILE, **_RECORD, "sample_rate": {"type": "integer"}, "duration": {"type": "number"}},
            ["path", "model"],
        ),
        "speech",
    )
    models = Tool(
        "list_models",
        "List models",
        "The models this server can run without downloading anything: loaded ones, --preload folders, and "
        "every alias whose files are here (embedded or in the Hugging Face cache), with their modality.",
        (_own("modality", "Only models of this kind.", enum=list(SCHEMAS)),),
        (),
        {
            "type": "object",
            "properties": {"models": {"type": "array", "items": {"type": "object"}}},
            "required": ["models"],
        },
    )
    describe = Tool(
        "describe_file",
        "Describe a file",
        "What an image or audio file in the output folder records of how it was made: prompt, model, "
        "seed, settings (the record `aigc info` shows).",
        (_own("path", "A file in the output folder: its name, a path inside the folder, or a file:// URI."),),
        ("path",),
        {
            "type": "object",
            "properties": {"path": {"type": "string"}, "record": {"type": "object"}},
            "required": ["path", "record"],
        },
    )
    return {tool.name: tool for tool in (text, image, speech, models, describe)}


TOOLS = _tools()


def parse_arguments(tool: Tool, arguments: Any) -> dict[str, Any]:
    """The call's arguments, checked: unknown, missing, wrong type or out of range is a UsageError naming
    the argument and what it takes (the settings' rules: settings.check_value)."""
    from ..settings import check_value
    from ..streams import lone_surrogate, surrogate_problem

    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise UsageError(f"{tool.name} takes an object of arguments (got {type(arguments).__name__})")
    found = lone_surrogate(arguments)
    if found is not None:
        raise UsageError(surrogate_problem(*found))
    by_name = {arg.name: arg for arg in tool.args}
    unknown = [name for name in arguments if name not in by_name]
    if unknown:
        raise UsageError(
            f"Unknown argument '{unknown[0]}' for {tool.name}: it takes {', '.join(by_name)}",
            param=unknown[0],
        )
    values: dict[str, Any] = {}
    for name in tool.required:
        if arguments.get(name) is None:
            raise UsageError(
                f"argument '{name}' is required: {by_name[name].schema['description']}", param=name
            )
    for name, value in arguments.items():
        if value is None:
            continue
        arg = by_name[name]
        subject = f"argument '{name}'"
        if arg.setting is not None and tool.modality is not None:
            knob = knobs(SCHEMAS[tool.modality])[arg.setting]
            value = check_value(arg.setting, knob, value, subject)
            if name == "count" and value > MAX_IMAGES:
                raise UsageError(f"{subject} must be at most {MAX_IMAGES} (got {value})", param=name)
        else:
            if not isinstance(value, str):
                raise UsageError(f"{subject} must be a string (got {value!r})", param=name)
            if not value.strip() and "minLength" in arg.schema:
                raise UsageError(f"{subject} is empty: {arg.schema['description']}", param=name)
            choices = arg.schema.get("enum")
            if choices and value not in choices:
                raise UsageError(f"{subject} must be one of {', '.join(choices)} (got {value!r})", param=name)
        values[name] = value
    voice = values.get("voice")
    if voice is not None and ("/" in voice or "\\" in voice or voice.endswith(".npy")):
        raise UsageError(
            f"argument 'voice' ({voice}) names a file: tools read no files but the output folder's; give a "
            "speaker name or number",
            param="voice",
        )
    return values


@dataclass
class Outcome:
    """What a tool call gives: text, files (each returned as content and linked), structuredContent and
    the notices, or the one line that says why it failed."""

    text: str | None = None
    files: list[tuple[Path, str]] = field(default_factory=list)
    """(path, media type) of each saved file, in order."""
    structured: dict[str, Any] = field(default_factory=dict)
    notices: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def default_out_dir() -> Path:
    """Where tools save their files unless told: AIGC_HOME/outputs."""
    from ..config import settings

    return settings().home / "outputs"


class Toolbox:
    """Runs tool calls on a ServerState (its pool, keep-alive and model rules), saving in `out_dir`.

    Safe from several threads at once: engines are leased from the pool one generation at a time, as the
    HTTP routes lease them."""

    def __init__(self, state: Any, out_dir: Path, no_log: bool = False) -> None:
        self.state = state
        self.out_dir = out_dir
        self.no_log = no_log

    def call(self, name: str, arguments: Any, progress: Progress, cancelled: threading.Event) -> Outcome:
        """Run tool `name`. A bad argument, a model that is not here or a failed generation is an Outcome
        with `error` (the one line a CLI run prints); Cancelled once `cancelled` is set."""
        tool = TOOLS.get(name)
        if tool is None:
            return Outcome(error=f"No tool '{name}': this server has {', '.join(TOOLS)}")
        model = None
        try:
            values = parse_arguments(tool, arguments)
            model = values.get("model")
            run = getattr(self, f"_{name}")
            return run(values, progress, cancelled)
        except Cancelled:
            raise
        except Exception as exc:
            error = failure_of(exc, model)
            self.state.console.info(f"aigc: {name}: error: {error.message}")
            return Outcome(error=error.message)
        finally:
            self.state.after_request()

    # --- the tools --------------------------------------------------------------------------------------

    def _resolve(self, tool: Tool, values: dict[str, Any]) -> Any:
        from ..settings import resolve_settings

        flags = {arg.setting: values[arg.name] for arg in tool.args if arg.setting and arg.name in values}
        resolved = resolve_settings(tool.modality, flags, given_in="request")
        self.state.check_model(resolved)
        return resolved

    def _generate_text(
        self, values: dict[str, Any], progress: Progress, cancelled: threading.Event
    ) -> Outcome:
        from ..core.events import Result, TextDelta

        resolved = self._resolve(TOOLS["generate_text"], values)
        reporter = self.state.reporter(also=lambda text: progress(0, None, text))
        run = self.state.start("text", resolved, values["prompt"], reporter)
        job = run.job
        limit = job.request.max_tokens
        results: list[Any] = []
        told = [0.0]

        def on(event: Any) -> None:
            if isinstance(event, TextDelta) and time.monotonic() - told[0] > 0.25:
                told[0] = time.monotonic()
                progress(event.tokens, limit, f"{event.tokens} tokens")
            elif isinstance(event, Result):
                results.append(event)

        with run.events() as events:
            _drain(events, cancelled, reporter, on)
        (result,) = results
        self._log("text", result.record, resolved, prompt=values["prompt"], folder=job.key.folder)
        notices = _notices(reporter.events)
        return Outcome(
            text=result.payload.text, structured={**result.record, "notices": notices}, notices=notices
        )

    def _generate_image(
        self, values: dict[str, Any], progress: Progress, cancelled: threading.Event
    ) -> Outcome:
        from ..core import image as core_image
        from ..core.events import ImageStep, Result
        from ..output import plan_file, save_image

        resolved = self._resolve(TOOLS["generate_image"], values)
        init, mask = (self._inside(values[n], n) if n in values else None for n in ("init_image", "mask"))
        inputs = core_image.ImageInputs(
            init=_read(init, "init_image") if init else None,
            init_name=init.name if init else None,
            init_what=f"argument 'init_image' ({init.name})" if init else "argument 'init_image'",
            mask=_read(mask, "mask") if mask else None,
            mask_name=mask.name if mask else None,
            mask_what=f"argument 'mask' ({mask.name})" if mask else "argument 'mask'",
            fields=("argument 'init_image'", "argument 'mask'"),
        )
        plan = plan_file("image", None, self._folder())
        reporter = self.state.reporter(also=lambda text: progress(0, None, text))
        prompt = values["prompt"]
        run = self.state.start("image", resolved, prompt, reporter, inputs=inputs)
        job = run.job
        count = resolved.values.count or 1
        saved: list[tuple[Path, dict[str, Any]]] = []

        def on(event: Any) -> None:
            if isinstance(event, ImageStep):
                done = event.index * event.total + event.step
                where = f"image {event.index + 1} of {count}, " if count > 1 else ""
                progress(done, count * event.total, f"{where}step {event.step} of {event.total}")
            elif isinstance(event, Result):  # saved as it is made: a cancel later keeps the images done
                path = save_image(event.payload, event.index, event.record, plan, inputs.init)
                assert path is not None
                saved.append((path, event.record))
                seconds = event.timings.get("seconds")
                self._log("image", event.record, resolved, path=path, folder=job.key.folder, seconds=seconds)

        with run.events() as events:
            _drain(events, cancelled, reporter, on)
        notices = _notices(reporter.events)
        images = [{"path": str(p), "uri": p.as_uri(), **record} for p, record in saved]
        files = [(p, "image/png") for p, _ in saved]
        return Outcome(files=files, structured={"images": images, "notices": notices}, notices=notices)

    def _speak(self, values: dict[str, Any], progress: Progress, cancelled: threading.Event) -> Outcome:
        from ..core.events import AudioChunk, Result
        from ..engines.speech import split_sentences
        from ..output import audio_json, encode_audio, plan_file, write_atomic

        resolved = self._resolve(TOOLS["speak"], values)
        fmt = values.get("format", "wav")
        plan = replace(plan_file("audio", None, self._folder()), format=fmt)
        reporter = self.state.reporter(also=lambda text: progress(0, None, text))
        text = values["text"]
        run = self.state.start("speech", resolved, text, reporter)
        job = run.job
        total = len(split_sentences(text)) or None
        results: list[Any] = []
        spoken = [0]

        def on(event: Any) -> None:
            if isinstance(event, AudioChunk):
                spoken[0] += 1
                progress(spoken[0], total, f"sentence {spoken[0]}" + (f" of {total}" if total else ""))
            elif isinstance(event, Result):
                results.append(event)

        with run.events() as events:
            _drain(events, cancelled, reporter, on)
        (result,) = results
        path = plan.path(0, text, job.request.seed)
        assert path is not None
        write_atomic(path, encode_audio(result.payload, result.record["sample_rate"], fmt, result.record))
        record = audio_json(result.record, path, fmt, result.timings["duration"], result.timings["compute"])
        self._log(
            "speech",
            result.record,
            resolved,
            path=path,
            folder=job.key.folder,
            seconds=result.timings.get("compute"),
        )
        notices = _notices(reporter.events)
        structured = {**record, "uri": path.as_uri(), "notices": notices}
        return Outcome(files=[(path, MEDIA_TYPES[f".{fmt}"])], structured=structured, notices=notices)

    def _list_models(self, values: dict[str, Any], progress: Progress, cancelled: threading.Event) -> Outcome:
        wanted = values.get("modality")
        rows = [
            {"id": row["id"], "modality": row["modality"], "loaded": row["loaded"]}
            for row in self.state.models()
            if wanted is None or row["modality"] in (wanted, None)
        ]
        lines = [
            f"{r['id']} ({r['modality'] or 'a --preload model'}{', loaded' if r['loaded'] else ''})"
            for r in rows
        ]
        return Outcome(text="\n".join(lines) or "No models here", structured={"models": rows})

    def _describe_file(
        self, values: dict[str, Any], progress: Progress, cancelled: threading.Event
    ) -> Outcome:
        import json

        from ..metadata import read_metadata

        path = self._inside(values["path"], "path")
        record = read_metadata(path)
        return Outcome(
            text=json.dumps(record, ensure_ascii=False, indent=1, default=str),
            structured={"path": str(path), "record": record},
        )

    # --- the output folder ------------------------------------------------------------------------------

    def _folder(self) -> Path:
        return make_folder(self.out_dir)

    def _inside(self, name: str, argument: str) -> Path:
        """The file `name` names in the output folder (a name, a path inside it, or a file:// URI);
        UsageError for a path that leads outside it (symbolic links followed) or a file that is not there."""
        if name.startswith("file:"):
            name = unquote(urlparse(name).path)
        if not name.strip() or "\x00" in name:
            what = "is empty" if not name.strip() else "holds a NUL character"
            raise UsageError(
                f"argument '{argument}' {what}: name a file in the output folder", param=argument
            )
        folder = self.out_dir.resolve()
        path = (folder / name).resolve()
        if not path.is_relative_to(folder):
            raise UsageError(
                f"argument '{argument}' ({name}) is outside the output folder {folder}: tools read and "
                "write only there; name a file in it",
                param=argument,
            )
        if not path.is_file():
            raise UsageError(
                f"argument '{argument}': no file {name} in the output folder {folder} (the resources list "
                "names the files there)",
                param=argument,
            )
        return path

    def files(self, limit: int = 500) -> list[tuple[Path, str]]:
        """The images and audio in the output folder (newest first, at most `limit`), with media types."""
        if not self.out_dir.is_dir():
            return []
        folder = self.out_dir.resolve()
        found = [
            p
            for p in self.out_dir.iterdir()
            if p.suffix.lower() in MEDIA_TYPES and p.is_file() and p.resolve().is_relative_to(folder)
        ]
        found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return [(p, MEDIA_TYPES[p.suffix.lower()]) for p in found[:limit]]

    def resource(self, uri: str) -> tuple[bytes, str]:
        """A file of the output folder by its file:// URI: (bytes, media type); UsageError otherwise."""
        path = self._inside(uri, "uri")
        media = MEDIA_TYPES.get(path.suffix.lower())
        if media is None:
            raise UsageError(
                f"{path.name} is not an image or audio file the output folder serves", param="uri"
            )
        return path.read_bytes(), media

    def _log(self, modality: str, record: dict[str, Any], resolved: Any, **kwargs: Any) -> None:
        from .. import logs

        if modality == "text":
            kwargs["system"] = resolved.values.system
        logs.log_generation("mcp", modality, record, resolved.values, no_log=self.no_log, **kwargs)


def make_folder(folder: Path) -> Path:
    """The output folder, made if need be; OutputError (exit 4) naming it when it cannot be."""
    from ..errors import OutputError

    if folder.exists() and not folder.is_dir():
        raise OutputError(f"The output folder {folder} is a file: give --out-dir a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot make the output folder {folder}: {exc.strerror or exc}") from exc
    return folder


def _drain(events: Any, cancelled: threading.Event, reporter: Any, on: Callable[[Any], None]) -> None:
    """Run a job's events: Cancelled at the first one after `cancelled` is set (closing the events then
    stops the generation at its next step, token or sentence); notices go to `reporter`, the rest to
    `on`."""
    from ..core.events import Notice

    for event in events:
        if cancelled.is_set():
            raise Cancelled()
        if isinstance(event, Notice):
            reporter.emit(event)
        else:
            on(event)


def _read(path: Path, argument: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"argument '{argument}': cannot read {path.name}: {exc.strerror or exc}") from exc


def _notices(events: list[Any]) -> list[dict[str, Any]]:
    from ..core.events import Notice

    return [
        {"level": e.level, "code": e.code, "message": e.message}
        for e in events
        if isinstance(e, Notice) and e.level != "note"
    ]
