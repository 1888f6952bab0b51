"""`aigc image`: prompt -> ImageRequest -> stream_images -> files or stdout, each image with its record."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__
from ..console import Console, StepBar, terminal
from ..device import dtype_name, pick_device, pick_dtype
from ..errors import UsageError
from ..loading import locate
from ..registry import DEFAULT_MODELS, resolve
from ..streams import read_prompt
from ..writers import (
    auto_path,
    check_writable,
    image_format,
    numbered,
    write_atomic,
    write_binary,
    write_json_line,
    write_text,
)
from .common import pick_seed, setting


@dataclass(frozen=True)
class ImageOptions:
    prompt: str | None
    model: str | None
    negative: str | None
    steps: int | None
    guidance: float | None
    width: int | None
    height: int | None
    seed: int | None
    count: int
    scheduler: str | None
    init_image: str | None
    strength: float | None
    low_memory: bool
    out: str | None
    json: bool
    device: str
    dtype: str
    from_file: str | None


def _with_record(options: ImageOptions) -> tuple[ImageOptions, dict[str, Any]]:
    """--from FILE: the file's record fills every setting the command line leaves unset."""
    if options.from_file is None:
        return options, {}
    from ..metadata import read_metadata

    record = read_metadata(Path(options.from_file))
    pick = {
        "prompt": options.prompt if options.prompt is not None else record.get("prompt"),
        "model": options.model or record.get("model"),
        "negative": options.negative if options.negative is not None else record.get("negative"),
        "steps": options.steps or record.get("steps"),
        "guidance": options.guidance if options.guidance is not None else record.get("guidance"),
        "width": options.width or record.get("width"),
        "height": options.height or record.get("height"),
        "seed": options.seed if options.seed is not None else record.get("seed"),
        "scheduler": options.scheduler or record.get("scheduler"),
        "strength": options.strength if options.strength is not None else record.get("strength"),
    }
    if record.get("init_image") and options.init_image is None:
        raise UsageError(f"{options.from_file} was made from an init image: give it again with --init-image")
    return ImageOptions(**{**options.__dict__, **pick}), record


def _with_settings(options: ImageOptions) -> ImageOptions:
    """Unset flags from the environment or config.toml (registry and pipeline defaults come later)."""
    keys = ("negative", "steps", "guidance", "width", "height", "scheduler")
    values = {key: setting("image", key, getattr(options, key)) for key in keys}
    values["low_memory"] = options.low_memory or bool(setting("image", "low_memory", None, False))
    values["device"] = setting(
        "image", "device", None if options.device == "auto" else options.device, "auto"
    )
    values["dtype"] = setting("image", "dtype", None if options.dtype == "auto" else options.dtype, "auto")
    return replace(options, **values)


def _check(options: ImageOptions) -> None:
    from ..generators.image import SCHEDULERS

    for name in ("width", "height"):
        value = getattr(options, name)
        if value is not None and (value <= 0 or value % 8):
            raise UsageError(f"--{name} must be a positive multiple of 8 (got {value})")
    if options.scheduler is not None and options.scheduler not in SCHEDULERS:
        raise UsageError(f"Unknown scheduler '{options.scheduler}': use one of {', '.join(SCHEDULERS)}")
    if options.strength is not None and options.init_image is None:
        raise UsageError("--strength needs --init-image")
    if options.out == "-" and options.count > 1:
        raise UsageError("-o - writes one PNG to stdout: use -o NAME.png for several images (NAME-1.png...)")
    if options.out == "-" and options.json:
        raise UsageError("--json prints JSON on stdout: write the image to a file with -o")
    if options.out not in (None, "-"):
        image_format(Path(options.out))
        check_writable(Path(options.out))


def _load_init_image(source: str, width: int | None, height: int | None):
    import sys

    from PIL import Image, UnidentifiedImageError

    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        image = Image.open(io.BytesIO(data)).convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise UsageError(f"Cannot read the init image {source}: {exc.__class__.__name__}") from exc
    target = (width or image.width // 8 * 8, height or image.height // 8 * 8)
    return image if image.size == target else image.resize(target, Image.Resampling.LANCZOS)


def run_image(options: ImageOptions, console: Console) -> None:
    from ..generators.image import ImageRequest, pipeline_defaults, sampler_name, set_scheduler, stream_images

    options, _ = _with_record(options)
    options = _with_settings(options)
    _check(options)
    if options.init_image == "-" and options.prompt in (None, "-"):
        raise UsageError("With --init-image -, stdin holds the image: give the prompt as an argument")
    prompt = options.prompt if options.init_image == "-" else read_prompt(options.prompt)
    if not prompt or not prompt.strip():
        raise UsageError("The prompt is empty: give it as an argument, or pipe it in on stdin")
    if options.out == "-" and terminal.stdout():
        raise UsageError("Not writing PNG bytes to a terminal: pipe stdout somewhere, or use -o FILE")
    to_stdout = options.out == "-" or (options.out is None and not options.json and not terminal.stdout())
    if to_stdout and options.count > 1:
        raise UsageError(
            "Several images cannot go to one stream: use -o NAME.png (NAME-1.png, NAME-2.png...)"
        )
    ref = resolve(setting("image", "model", options.model, DEFAULT_MODELS["image"]), "image")
    folder = locate(ref, "image", console)
    device = pick_device(options.device)
    dtype, _ = pick_dtype(device.device, options.dtype)
    init = None
    if options.init_image is not None:
        init = _load_init_image(options.init_image, options.width, options.height)
    from ..loading import load_image_pipeline

    with console.status(f"Loading {ref.label} on {device.device} ({dtype_name(dtype)})"):
        pipe = load_image_pipeline(
            folder, device.device, dtype, console, init is not None, options.low_memory
        )
    if options.scheduler:
        set_scheduler(pipe, options.scheduler)
    console.note(f"{ref.label} on {device.device} ({dtype_name(dtype)}), from {folder}")
    # Unset settings: the alias's defaults, else the pipeline's own (as a raw call would use).
    own = pipeline_defaults(pipe)
    steps = options.steps or ref.default("steps") or own["steps"]
    strength = options.strength if options.strength is not None else 0.75
    if init is not None and int(steps * strength) < 1:
        raise UsageError(f"--steps {steps} with --strength {strength} leaves no denoising step: raise either")
    seed = pick_seed(options.seed, console)
    request = ImageRequest(
        prompt=prompt,
        seed=seed,
        steps=steps,
        guidance=next(
            g for g in (options.guidance, ref.default("guidance"), own["guidance"]) if g is not None
        ),
        width=init.width if init is not None else options.width or ref.default("width") or own["width"],
        height=init.height if init is not None else options.height or ref.default("height") or own["height"],
        negative=options.negative,
        count=options.count,
        init_image=init,
        strength=strength,
    )
    record_base = {
        "kind": "image",
        "prompt": request.prompt,
        "negative": request.negative,
        "model": ref.label,
        "source": ref.repo or str(folder),
        "steps": request.steps,
        "guidance": request.guidance,
        "width": request.width,
        "height": request.height,
        "scheduler": options.scheduler,
        "sampler": sampler_name(pipe),
        "strength": request.strength if init is not None else None,
        "init_image": Path(options.init_image).name
        if options.init_image not in (None, "-")
        else options.init_image,
        "low_memory": options.low_memory,
        "device": device.device,
        "dtype": dtype_name(dtype),
        "aigc_version": __version__,
    }
    with StepBar(console, request.steps * request.count, "denoising") as progress:
        for result in stream_images(pipe, request, progress.advance):
            if result.vae_retried:
                console.warn("the VAE gave NaNs (a black image); decoded again in float32")
            record = {**record_base, "seed": result.seed}
            path = _write(result, record, options, to_stdout)
            if options.json:
                timings = {"seconds": result.seconds, "step_seconds": result.step_seconds}
                write_json_line(
                    {"path": str(path), **record, **timings, "decode_seconds": result.decode_seconds}
                )
            elif path is not None and terminal.stdout():
                write_text(f"{path}\n")


def _write(result: Any, record: dict[str, Any], options: ImageOptions, to_stdout: bool) -> Path | None:
    from ..metadata import image_metadata

    if to_stdout:
        write_binary(_encode(result.image, "PNG", image_metadata("PNG", record)))
        return None
    if options.out is not None:
        path = numbered(Path(options.out), result.index, options.count)
    else:
        path = auto_path(record["prompt"], result.seed, ".png")
    fmt = image_format(path)
    write_atomic(path, _encode(result.image, fmt, image_metadata(fmt, record)))
    return path


def _encode(image: Any, fmt: str, metadata: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    extra = {"quality": 95} if fmt in {"JPEG", "WEBP"} else {}
    image.save(buffer, format=fmt, **metadata, **extra)
    return buffer.getvalue()
