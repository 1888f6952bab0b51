"""`aigc image`: flags (and a --from record) -> settings -> core.image (here, or on a running server through
the client) -> the renderer -> files or stdout, each image with its record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..console import Console
from ..errors import UsageError
from ..interrupts import raising
from ..output import plan_output
from ..settings import resolve_settings
from ..streams import read_bytes, read_prompt


@dataclass(frozen=True)
class ImageOptions:
    """What `aigc image` was asked: the prompt argument, the settings flags, and the command's own options."""

    prompt: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    """Setting name -> value, None where the flag was not given (settings.resolve_settings)."""
    out: str | None = None
    init_image: str | None = None
    mask: str | None = None
    from_file: str | None = None
    """--from: a file whose record gives the settings (flags override)."""
    as_json: bool = False
    local: bool = False
    no_log: bool = False
    use_stdin: bool = True
    """False with --no-stdin: the argument alone is the prompt."""


def read_inputs(init_image: str | None, mask: str | None) -> Any:
    """The init image and mask files (or stdin for '-') as core.image.ImageInputs; UsageError naming the
    flag for a file that is missing or unreadable."""
    from ..core.image import ImageInputs

    def name(source: str | None) -> str | None:
        return Path(source).name if source not in (None, "-") else source

    def what(source: str | None) -> str:
        return "stdin" if source in (None, "-") else str(source)

    return ImageInputs(
        init=read_bytes(init_image, "--init-image") if init_image is not None else None,
        init_name=name(init_image),
        init_what=what(init_image),
        mask=read_bytes(mask, "--mask") if mask is not None else None,
        mask_name=name(mask),
        mask_what=what(mask),
    )


def run_image(options: ImageOptions, console: Console) -> None:
    """`aigc image`."""
    from .. import logs
    from ..core import image as core_image
    from ..core.seeds import check_seeds
    from ..pool import default_pool
    from ..server.discovery import find_server
    from .render import render_images

    record = None
    prompt_arg, init_image, mask = options.prompt, options.init_image, options.mask
    if options.from_file is not None:
        from ..metadata import read_image_record
        from ..records import localize

        record = read_image_record(Path(options.from_file))
        given = options.flags.get("model") is not None
        warn = lambda message, _code: console.warn(message)  # noqa: E731
        record = localize(record, options.from_file, warn, logs.used_paths, given)
        if prompt_arg is None:
            prompt_arg = record.get("prompt")
        if record.get("init_image") and init_image is None:
            raise UsageError(
                f"{options.from_file} was made from an init image: give it again with --init-image"
            )
        if record.get("mask") and mask is None:
            raise UsageError(f"{options.from_file} was inpainted with a mask: give it again with --mask")
    resolved = resolve_settings("image", options.flags, record, options.from_file or "")
    s = resolved.values
    check_seeds(resolved, "image")
    if s.strength is not None and init_image is None:
        raise UsageError("--strength needs --init-image")
    if mask is not None and init_image is None:
        raise UsageError("--mask needs --init-image: the image to repaint")
    if mask == "-" and init_image == "-":
        raise UsageError("--init-image and --mask cannot both read stdin: give one as a file")
    plan = plan_output("image", options.out, s.count or 1, options.as_json)
    stdin_image = "-" in (init_image, mask)
    if stdin_image and prompt_arg in (None, "-"):
        which = "--init-image" if init_image == "-" else "--mask"
        raise UsageError(f"With {which} -, stdin holds the image: give the prompt as an argument")
    prompt = prompt_arg if stdin_image else read_prompt(prompt_arg, options.use_stdin, console)
    if not prompt or not prompt.strip():
        raise UsageError("The prompt is empty: give it as an argument, or pipe it in on stdin")
    inputs = read_inputs(init_image, mask)
    folder: list[str] = []

    def log(result: Any, path: Path | None) -> None:
        logs.log_generation(
            "image",
            "image",
            result.record,
            resolved.values,
            path=path,
            seconds=result.timings.get("seconds"),
            folder=folder[0] if folder else None,
            no_log=options.no_log,
        )

    events, steps = None, (s.steps or 0) * (s.count or 1)
    server = None if options.local else find_server()
    if server is not None:
        from ..client import remote_image

        events = remote_image(server, resolved, prompt, inputs, console)
    if events is None:
        pool = default_pool()
        report = console.reporter()
        job = core_image.prepare(resolved, prompt, report, pool, inputs)
        core_image.check_replay(record, job, report)
        folder.append(job.key.folder)
        steps = job.request.steps * job.request.count
        events = core_image.run(job, pool.get(job.key))
    with raising():
        render_images(events, console, plan, options.as_json, steps, log, inputs.init)
