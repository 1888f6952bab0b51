"""AUTOMATIC1111's web API (`/sdapi/v1/*`) over the image core, so that clients that speak it (A1111
scripts, SillyTavern, bots) work unchanged.

txt2img and img2img read A1111's body into aigc's image settings (a field left out takes the model's default,
as `aigc image` does, not A1111's 512x512/50 steps/Euler), run the same prepare/run path as
/v1/images/generations and answer in A1111's shape: base64 PNGs (the bytes `aigc image` writes, with their
`parameters` chunk), the request as `parameters`, and `info`, a JSON string. A1111 fields that would change
the picture in a way aigc cannot (hires fix, face restoration, tiling, styles, scripts, variation seeds) are
refused with a 400 naming the field; fields that only tune A1111's own inpainting or saving are accepted and
named in a notice. Errors are aigc's (OpenAI's error JSON, 400 for bad input) with A1111's `detail` added.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..errors import AigcError, UsageError
from .protocol import MAX_N, error_body, field_named, notices_json

if TYPE_CHECKING:
    from .state import ServerState

PREVIEWS = 3
"""Previews the engine makes of each image of an /sdapi job (evenly spaced; a linear map of the latents, no
VAE pass), for /sdapi/v1/progress's current_image as A1111's live previews."""

SCHEDULER_TYPES = {"Karras": " Karras"}
"""A1111's `scheduler` (1.9 on) by the suffix its older sampler names carry; Automatic: the sampler's own."""

REFUSED = {
    "enable_hr": False,
    "restore_faces": False,
    "tiling": False,
    "subseed_strength": 0,
    "styles": [],
    "script_name": None,
    "script_args": [],
    "alwayson_scripts": {},
    "refiner_checkpoint": None,
    "firstpass_image": None,
    "resize_mode": 0,
}
"""A1111 fields that change the picture in a way aigc cannot: taken at these values (clients send them),
a 400 naming the field otherwise."""

IGNORED = {
    "subseed",
    "seed_resize_from_h",
    "seed_resize_from_w",
    "do_not_save_samples",
    "do_not_save_grid",
    "save_images",
    "eta",
    "s_min_uncond",
    "s_churn",
    "s_tmax",
    "s_tmin",
    "s_noise",
    "override_settings_restore_afterwards",
    "disable_extra_networks",
    "comments",
    "force_task_id",
    "infotext",
    "refiner_switch_at",
    "firstphase_width",
    "firstphase_height",
    "hr_scale",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "hr_checkpoint_name",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
    "hr_additional_modules",
    "clip_skip",
    "image_cfg_scale",
    "include_init_images",
    "initial_noise_multiplier",
    "latent_mask",
    "mask_round",
    "user",
}
"""A1111 fields that tune its own saving, its hires pass (off here) or its samplers' extra knobs, or that
clients send at A1111's defaults: accepted and ignored (the server's log names them with -v)."""

INPAINT_TUNING = ("mask_blur", "mask_blur_x", "mask_blur_y", "inpainting_fill", "inpaint_full_res")
INPAINT_TUNING_ALSO = ("inpaint_full_res_padding",)
"""img2img's inpainting knobs of A1111's own: aigc inpaints as diffusers does (the init image noised under
the mask, no blur, no crop); accepted, and a notice says they were not applied."""


def a1111_samplers() -> dict[str, str]:
    """A1111 sampler name -> aigc scheduler, from the schedulers aigc names (engines.image.SCHEDULERS)."""
    from ..engines.image import SCHEDULERS

    return {sampler: name for name, (_, _, sampler) in SCHEDULERS.items()}


def _sampler(sampler: str | None, scheduler: str | None, param: str) -> str | None:
    """aigc's scheduler for A1111's sampler_name (or aigc's own name) and scheduler type; None: the model's
    own. UsageError naming the field and what is supported otherwise."""
    table = a1111_samplers()
    if scheduler not in (None, "", "Automatic", "automatic") and scheduler not in SCHEDULER_TYPES:
        raise UsageError(
            f"field 'scheduler' {json.dumps(scheduler)} is not supported: Automatic, "
            f"{', '.join(SCHEDULER_TYPES)}",
            param="scheduler",
            code="unsupported_value",
        )
    if not sampler:
        if scheduler in SCHEDULER_TYPES:
            raise UsageError(
                f"field 'scheduler' {scheduler} needs a sampler_name: one of {', '.join(table)}",
                param="scheduler",
                code="unsupported_value",
            )
        return None
    named = sampler + SCHEDULER_TYPES.get(scheduler or "", "")
    by_lower = {name.lower(): aigc for name, aigc in table.items()}
    by_lower.update({aigc: aigc for aigc in table.values()})
    found = by_lower.get(named.lower())
    if found is None:
        with_type = f" with scheduler {scheduler}" if scheduler in SCHEDULER_TYPES else ""
        raise UsageError(
            f"field '{param}' {json.dumps(sampler)}{with_type} is not a sampler aigc runs: "
            f"{', '.join(table)} (GET /sdapi/v1/samplers)",
            param=param,
            code="unsupported_value",
        )
    return found


@dataclass(frozen=True)
class A1111Call:
    """An A1111 txt2img/img2img body read into aigc's settings."""

    call: Any
    """The protocol.ImageCall to run."""
    count: int
    batch_size: int
    send_images: bool
    ignored: tuple[str, ...]
    notices: tuple[str, ...] = ()
    """What was accepted and not applied, said as a warning in the response's info and the server's log."""


def _image_bytes(value: Any, name: str) -> bytes:
    """An image file's bytes from base64 (a `data:image/...;base64,` prefix, as A1111 takes, allowed)."""
    if not isinstance(value, str):
        raise UsageError(
            f"field '{name}' must be a base64 string (an image file)", param=name, code="invalid_type"
        )
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(
            f"field '{name}' must be base64 (an image file's bytes)", param=name, code="invalid_value"
        ) from None


def _invert(mask: bytes) -> bytes:
    """The mask with black and white swapped (inpainting_mask_invert 1: black repaints)."""
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(mask)) as opened:
            inverted = ImageOps.invert(opened.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UsageError(f"field 'mask' is not an image file ({exc})", param="mask") from None
    out = io.BytesIO()
    inverted.save(out, format="PNG")
    return out.getvalue()


def parse_a1111(data: dict[str, Any], img2img: bool, checkpoint: str | None = None) -> A1111Call:
    """POST /sdapi/v1/txt2img or img2img: A1111's fields checked as aigc's settings are (UsageError naming
    the field, HTTP 400), seed -1 drawn at random, batch_size * n_iter results (at most MAX_N). checkpoint:
    the model POST /sdapi/v1/options set, for a request whose override_settings names none."""
    from ..settings import SCHEMAS, check_value, knobs, resolve_settings
    from .protocol import ImageCall, _Body, _json

    body = _Body(data)
    schema = knobs(SCHEMAS["image"])
    route = "/sdapi/v1/img2img" if img2img else "/sdapi/v1/txt2img"
    for name, default in REFUSED.items():
        value = body.take(name)
        if value is not None and value != default and not (default == [] and value == {}):
            raise UsageError(
                f"field '{name}' is not supported (only {_json(default)}; got {_json(value)}): aigc makes "
                "the picture without it",
                param=name,
                code="unsupported_value",
            )
    ignored = tuple(sorted(n for n in IGNORED if n in data))
    body.taken.update(ignored)
    prompt = body.take("prompt", str, "a string")
    if prompt is None or not prompt.strip():
        raise UsageError(
            "field 'prompt' is empty: say what the image should show",
            param="prompt",
            code="missing_required_parameter" if prompt is None else "invalid_value",
        )
    flags: dict[str, Any] = {}
    fields = {
        "negative_prompt": "negative",
        "steps": "steps",
        "cfg_scale": "guidance",
        "width": "width",
        "height": "height",
    }
    if img2img:
        fields["denoising_strength"] = "strength"
    else:
        body.take("denoising_strength")  # the hires pass's (off here): A1111 ignores it too
    seed = body.take("seed")
    if seed != -1 and seed is not None:
        fields["seed"] = "seed"
    for api, name in fields.items():
        value = body.take(api)
        if value is None or (api == "negative_prompt" and value == ""):
            continue
        with field_named(api):
            flags[name] = check_value(name, schema[name], value, f"field '{api}'")
    counts = {}
    for name in ("batch_size", "n_iter"):
        value = body.take(name, int, "an integer")
        if value is not None and value < 1:
            raise UsageError(f"field '{name}' must be at least 1 (got {value})", param=name)
        counts[name] = value or 1
    count = counts["batch_size"] * counts["n_iter"]
    if count > MAX_N:
        raise UsageError(
            f"fields 'batch_size' x 'n_iter' must be at most {MAX_N} images (got {count}): send several "
            "requests",
            param="batch_size",
        )
    flags["count"] = count
    sampler_name = body.take("sampler_name", str, "a string")
    sampler_index = body.take("sampler_index", str, "a string")
    scheduler = body.take("scheduler", str, "a string")
    param = "sampler_name" if sampler_name else "sampler_index"
    flags["scheduler"] = _sampler(sampler_name or sampler_index, scheduler, param)
    notices = []
    overrides = body.take("override_settings", dict, "an object")
    for key, value in (overrides or {}).items():
        where = f"override_settings.{key}"
        if key == "sd_model_checkpoint":
            if not isinstance(value, str) or not value.strip():
                raise UsageError(
                    f"field '{where}' must be a model's title (GET /sdapi/v1/sd-models)", param=where
                )
            flags["model"] = value.split(" [", 1)[0] if value.endswith("]") else value
        elif key == "CLIP_stop_at_last_layers":
            if value not in (1, None):
                raise UsageError(
                    f"field '{where}' is not supported (only 1; got {_json(value)})",
                    param=where,
                    code="unsupported_value",
                )
        elif key == "sd_vae":
            if value not in (None, "", "Automatic", "None"):
                raise UsageError(
                    f"field '{where}' is not supported (only Automatic; got {_json(value)}): aigc's VAE is "
                    "the model's own, or the `vae` setting of its config",
                    param=where,
                    code="unsupported_value",
                )
        else:
            notices.append(f"override_settings.{key} is not a setting aigc has: ignored")
    if checkpoint and "model" not in flags:
        flags["model"] = checkpoint
    send_images = body.take("send_images", bool, "a boolean")
    init = mask = None
    if img2img:
        images = body.take("init_images", list, "a list of base64 strings (image files)")
        if not images:
            raise UsageError(
                "field 'init_images' is required: a list with the image to start from (base64)",
                param="init_images",
                code="missing_required_parameter",
            )
        init = _image_bytes(images[0], "init_images")
        if len(images) > 1:
            notices.append(f"init_images holds {len(images)} images: the first was used")
        raw_mask = body.take("mask")
        mask = _image_bytes(raw_mask, "mask") if raw_mask is not None else None
        invert = body.take("inpainting_mask_invert")
        if invert not in (None, 0, 1) or isinstance(invert, bool):
            raise UsageError(
                f"field 'inpainting_mask_invert' must be 0 or 1 (got {_json(invert)})",
                param="inpainting_mask_invert",
            )
        if mask is not None and invert == 1:
            mask = _invert(mask)
        tuned = [n for n in INPAINT_TUNING if body.take(n) not in (None, 0, False)]
        body.taken.update(INPAINT_TUNING_ALSO)
        if tuned and mask is not None:
            notices.append(
                f"{', '.join(tuned)}: A1111's own inpainting knobs, not applied: aigc inpaints as diffusers "
                "does (the init image noised under the mask, no blur, the whole image)"
            )
    unknown = body.unknown()
    if unknown:
        names = ", ".join(f"'{n}'" for n in unknown)
        raise UsageError(
            f"Unknown field{'s' if len(unknown) > 1 else ''} {names} for {route} (the README's A1111 section "
            "lists the fields aigc takes)",
            param=unknown[0],
            code="unknown_parameter",
        )
    resolved = resolve_settings("image", flags, given_in="request")
    from ..core.seeds import check_seeds

    with field_named("seed"):
        check_seeds(resolved, "image")
    call = ImageCall(resolved, prompt, init, mask, fields=("init_images", "mask"))
    return A1111Call(call, count, counts["batch_size"], send_images is not False, ignored, tuple(notices))


@dataclass
class ImageJobRun:
    """One image job while it runs on its engine, as GET /sdapi/v1/progress reports it."""

    kind: str
    """What started it: txt2img, img2img, generations, edits."""
    label: str
    count: int
    steps: int
    started: float = field(default_factory=time.monotonic)
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    index: int = 0
    step: int = 0
    total: int = 0
    first: tuple[float, int] | None = None
    """When the first step was seen, and how many steps of the job were done then (for the ETA)."""
    last: float = 0.0
    preview: Any = None
    png: bytes | None = None
    """The preview as PNG, made on the first progress call that asks for it."""
    interrupted: threading.Event = field(default_factory=threading.Event)

    def done(self) -> int:
        return self.index * self.total + self.step


class ImageJobs:
    """The image jobs running now, whatever route started them (the OpenAI routes and /sdapi): their step,
    their latest preview, and POST /sdapi/v1/interrupt. The generation threads write, routes read: one
    lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: list[ImageJobRun] = []

    @contextmanager
    def track(self, kind: str, job: Any, reporter: Any, console: Any) -> Iterator[Tracked]:
        run = ImageJobRun(kind, job.label, job.request.count, job.request.steps)
        with self.lock:
            self.running.append(run)
        try:
            yield Tracked(self, run, reporter, console)
        finally:
            with self.lock:
                self.running.remove(run)

    def current(self) -> ImageJobRun | None:
        """The oldest job running (jobs on one engine run one at a time; later ones wait for it)."""
        return self.running[0] if self.running else None

    def interrupt(self) -> bool:
        """Stop the current job at its next step; False when none runs."""
        with self.lock:
            run = self.current()
            if run is not None:
                run.interrupted.set()
            return run is not None

    def report(self, with_image: bool) -> dict[str, Any]:
        """A1111's /sdapi/v1/progress answer (0 and an empty state when no job runs)."""
        with self.lock:
            run = self.current()
            if run is None:
                return {
                    "progress": 0.0,
                    "eta_relative": 0.0,
                    "state": _state(None),
                    "current_image": None,
                    "textinfo": None,
                }
            total = run.total or run.steps
            all_steps = max(run.count * total, 1)
            progress = min(run.done() / all_steps, 1.0)
            eta = 0.0
            if run.first is not None and run.done() > run.first[1]:
                per_step = (run.last - run.first[0]) / (run.done() - run.first[1])
                eta = per_step * (all_steps - run.done())
            preview = run.preview if with_image and run.png is None else None
            png = run.png
        if preview is not None:  # encoded outside the lock; a race makes it twice, the same bytes
            from ..output import encode_image

            png = run.png = encode_image(preview, "PNG", {})
        text = f"{run.label}: image {run.index + 1}/{run.count}, step {run.step}/{total}"
        if run.interrupted.is_set():
            text += " (interrupted)"
        return {
            "progress": round(progress, 4),
            "eta_relative": round(eta, 3),
            "state": _state(run),
            "current_image": base64.b64encode(png).decode("ascii") if with_image and png else None,
            "textinfo": text,
        }


def _state(run: ImageJobRun | None) -> dict[str, Any]:
    return {
        "skipped": False,
        "interrupted": run.interrupted.is_set() if run else False,
        "stopping_generation": False,
        "job": run.kind if run else "",
        "job_count": run.count if run else 0,
        "job_timestamp": run.stamp if run else "0",
        "job_no": run.index if run else 0,
        "sampling_step": run.step if run else 0,
        "sampling_steps": (run.total or run.steps) if run else 0,
    }


@dataclass
class Tracked:
    """What a generation thread tells its ImageJobs of one job."""

    jobs: ImageJobs
    run: ImageJobRun
    reporter: Any
    console: Any

    def stops(self, event: Any) -> bool:
        """Record an ImageStep; True when the job was interrupted (POST /sdapi/v1/interrupt): the caller
        stops there, at a step, as when its client goes away. The images already made are answered."""
        from ..core.events import ImageStep

        if not isinstance(event, ImageStep):
            return False
        run = self.run
        if run.interrupted.is_set():
            made = event.index
            self.console.info(f"aigc: interrupted: stopped {run.label} at image {made + 1} step {event.step}")
            self.reporter.warn(
                f"interrupted (POST /sdapi/v1/interrupt) at image {made + 1} of {run.count}, step "
                f"{event.step} of {event.total}: {made} image{'s' if made != 1 else ''} made",
                "interrupted",
            )
            return True
        now = time.monotonic()
        with self.jobs.lock:
            run.index, run.step, run.total, run.last = event.index, event.step, event.total, now
            if run.first is None:
                run.first = (now, run.done())
            if event.preview is not None:
                run.preview, run.png = event.preview, None
        return False


def image_jobs(state: ServerState) -> ImageJobs:
    """The server's ImageJobs (made on first use, kept on the state)."""
    return state.__dict__.setdefault("image_jobs", ImageJobs())


def _info(job: Any, records: list[dict[str, Any]], parsed: A1111Call, notices: list[Any]) -> dict[str, Any]:
    """A1111's `info` object (sent as a JSON string) for the images made, with aigc's records and notices."""
    from .. import __version__
    from ..metadata import a1111_parameters

    first = records[0] if records else {**job.record, "seed": job.request.seed}
    seeds = [r["seed"] for r in records] or [job.request.seed + i for i in range(parsed.count)]
    prompts = [first["prompt"]] * len(seeds)
    negative = first.get("negative") or ""
    return {
        "prompt": first["prompt"],
        "all_prompts": prompts,
        "negative_prompt": negative,
        "all_negative_prompts": [negative] * len(seeds),
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * len(seeds),
        "subseed_strength": 0,
        "width": first["width"],
        "height": first["height"],
        "sampler_name": first["sampler"],
        "cfg_scale": first["guidance"],
        "steps": first["steps"],
        "batch_size": parsed.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": first["model"],
        "sd_model_hash": None,
        "sd_vae_name": first.get("vae"),
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": first.get("strength"),
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": [a1111_parameters(r) for r in records],
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": f"aigc {__version__}",
        "aigc": {"records": records, "notices": notices_json(notices)},
    }


async def _generate(state: ServerState, request: Request, parsed: A1111Call) -> dict[str, Any]:
    """Run the call as app._images does (same prepare, lease and run), with previews for
    /sdapi/v1/progress's current_image; A1111's answer. An interrupted job answers the images made."""
    from functools import partial

    from starlette.concurrency import run_in_threadpool

    from ..core import image as core_image
    from ..core.events import Notice, Result
    from ..output import image_file
    from .app import _collect, _log_ignored, request_reporter
    from .history import log_served

    call = parsed.call
    _log_ignored(state, request.url.path, parsed.ignored)
    state.check_model(call.resolved)
    inputs = core_image.ImageInputs(
        init=call.init_png,
        init_name="request body" if call.init_png is not None else None,
        init_what="field 'init_images'",
        mask=call.mask_png,
        mask_name="request body" if call.mask_png is not None else None,
        mask_what="field 'mask'",
        fields=("'init_images'", "field 'mask'"),
        params=("init_images", "mask"),
    )
    reporter = request_reporter(state)
    for text in parsed.notices:
        reporter.warn(text, "a1111_ignored")
    run = await run_in_threadpool(
        partial(state.start, "image", call.resolved, call.prompt, reporter, PREVIEWS, inputs=inputs)
    )
    job = run.job
    kind = request.url.path.rsplit("/", 1)[-1]

    def produce(emit: Callable[[Any], None], cancelled: threading.Event) -> None:
        try:
            with (
                run.events() as events,
                image_jobs(state).track(kind, job, reporter, state.console) as tracked,
            ):
                for event in events:
                    if cancelled.is_set():
                        state.console.info(f"aigc: the client went away: stopped {job.label}")
                        return
                    if tracked.stops(event):
                        return
                    if isinstance(event, Notice):
                        reporter.emit(event)
                    elif isinstance(event, Result):
                        png = image_file(event.payload, "PNG", event.record, call.init_png)  # signed last
                        log_served(request, "image", call, event, png)
                        emit((png, event.record))
        finally:
            state.after_request()

    made = await _collect(request, produce)
    info = _info(job, [record for _, record in made], parsed, reporter.events)
    images = [base64.b64encode(png).decode("ascii") for png, _ in made] if parsed.send_images else []
    return {"images": images, "info": json.dumps(info, ensure_ascii=False)}


def png_info(data: dict[str, Any]) -> dict[str, Any]:
    """POST /sdapi/v1/png-info: {"image": base64} -> the `parameters` text, the image's other text chunks
    (`items`), and the parameters read into fields (`parameters`), as A1111 answers."""
    import io

    from PIL import Image, UnidentifiedImageError

    from .protocol import _Body

    body = _Body(data)
    raw = body.take("image")
    if raw is None:
        raise UsageError(
            "field 'image' is required (base64)", param="image", code="missing_required_parameter"
        )
    unknown = body.unknown()
    if unknown:
        raise UsageError(
            f"Unknown field '{unknown[0]}' for /sdapi/v1/png-info: send image",
            param=unknown[0],
            code="unknown_parameter",
        )
    if isinstance(raw, str) and not raw.strip():  # as A1111 answers an empty image: nothing recorded
        return {"info": "", "items": {}, "parameters": {}}
    png = _image_bytes(raw, "image")
    try:
        with Image.open(io.BytesIO(png)) as image:
            items = {k: v for k, v in image.info.items() if isinstance(v, str)}
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UsageError(f"field 'image' is not an image file ({exc})", param="image") from None
    text = items.pop("parameters", "")
    return {"info": text, "items": items, "parameters": parse_parameters(text)}


def parse_parameters(text: str) -> dict[str, Any]:
    """A1111's `parameters` text read back into fields: Prompt, Negative prompt, then `Key: value` pairs
    (a quoted value as JSON), numbers as numbers, Size as Size-1 and Size-2."""
    import re

    if not text:
        return {}
    lines = text.strip().split("\n")
    last = lines[-1] if len(lines) > 1 or re.search(r"\bSteps: ", lines[-1]) else ""
    head = lines[:-1] if last else lines
    prompt, negative, into_negative = [], [], False
    for line in head:
        if line.startswith("Negative prompt:"):
            into_negative = True
            line = line.removeprefix("Negative prompt:").strip()
        (negative if into_negative else prompt).append(line)
    found: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in re.findall(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', last):
        if value.startswith('"'):
            with suppress(ValueError):
                value = json.loads(value)
        size = re.fullmatch(r"(\d+)x(\d+)", value)
        if size:
            found[f"{key}-1"], found[f"{key}-2"] = size.groups()
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except (TypeError, ValueError):
                continue
        found[key] = value
    return found


def image_models(state: ServerState) -> list[dict[str, Any]]:
    """GET /sdapi/v1/sd-models: the image models here (loaded, what --preload named, aliases embedded or
    cached) in A1111's shape; `title` is what override_settings.sd_model_checkpoint takes back."""
    from pathlib import Path

    from ..catalog import available_models, modality_of

    names: dict[str, None] = {}
    for row in state.loaded():
        if row["modality"] == "image":
            names.setdefault(row["folder"] if row["folder"] in state.preload_names else row["model"])
    for name in state.preload_names:
        try:
            if modality_of(name) == "image":
                names.setdefault(name)
        except AigcError:
            continue
    for name, modality in available_models():
        if modality == "image":
            names.setdefault(name)
    return [
        {"title": name, "model_name": Path(name).name or name, "hash": None, "sha256": None, "filename": name}
        for name in names
    ]


def samplers() -> list[dict[str, Any]]:
    """GET /sdapi/v1/samplers: aigc's schedulers in A1111's shape (the aigc name is an alias)."""
    from ..engines.image import SCHEDULERS

    return [
        {"name": sampler, "aliases": [name], "options": {"scheduler": cls, **kw}}
        for name, (cls, kw, sampler) in SCHEDULERS.items()
    ]


def _a1111_errors(route: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """aigc's error JSON (status by error_body) with A1111's `detail` (the message) added."""
    import functools

    @functools.wraps(route)
    async def wrapped(request: Request) -> Any:
        try:
            return await route(request)
        except AigcError as exc:
            status, body = error_body(exc, request.url.path)
            return JSONResponse({**body, "detail": body["error"]["message"]}, status_code=status)

    return wrapped


OPTIONS = {
    "sd_vae": ("Automatic", "None", ""),
    "CLIP_stop_at_last_layers": (1,),
    "samples_format": ("png",),
    "live_previews_enable": (True, False),
    "show_progress_every_n_steps": None,
    "samples_save": (True, False),
    "grid_save": (True, False),
}
"""POST /sdapi/v1/options keys other than sd_model_checkpoint that aigc takes: at these values (None: any),
as they change no picture; other values and other keys are a 400 naming them."""


class Options:
    """A1111's settings as /sdapi/v1/options reads and writes them: only the checkpoint changes, and only in
    this server's memory (not config.toml): the image model of later /sdapi requests that name none."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.checkpoint: str | None = None

    def default_model(self) -> str:
        from ..settings import resolve_settings

        if self.checkpoint:
            return self.checkpoint
        return str(resolve_settings("image", {}).values.model)

    def read(self) -> dict[str, Any]:
        return {
            "sd_model_checkpoint": self.default_model(),
            "sd_vae": "Automatic",
            "CLIP_stop_at_last_layers": 1,
            "samples_format": "png",
            "live_previews_enable": True,
            "show_progress_every_n_steps": -1,
            "samples_save": False,
            "grid_save": False,
        }

    def write(self, data: dict[str, Any]) -> None:
        """Take the checkpoint (a title of sd-models); UsageError naming every key aigc cannot take."""
        bad = [
            key
            for key, value in data.items()
            if key != "sd_model_checkpoint"
            and (key not in OPTIONS or (OPTIONS[key] is not None and value not in OPTIONS[key]))
        ]
        if bad:
            names = ", ".join(f"'{k}'" for k in bad)
            raise UsageError(
                f"option{'s' if len(bad) > 1 else ''} {names} not supported: aigc takes sd_model_checkpoint "
                f"(a title of GET /sdapi/v1/sd-models) and {', '.join(OPTIONS)} at the values GET "
                "/sdapi/v1/options shows",
                param=bad[0],
                code="unsupported_value",
            )
        title = data.get("sd_model_checkpoint")
        if title is None:
            return
        titles = [m["title"] for m in image_models(self.state)]
        if not isinstance(title, str) or title not in titles:
            raise UsageError(
                f"option 'sd_model_checkpoint' {json.dumps(title)} is not an image model here: "
                f"{', '.join(titles) or 'none'} (GET /sdapi/v1/sd-models)",
                param="sd_model_checkpoint",
                code="unsupported_value",
            )
        self.checkpoint = title


def schedulers() -> list[dict[str, Any]]:
    """GET /sdapi/v1/schedulers: the scheduler types aigc maps (SCHEDULER_TYPES), in A1111's shape."""
    rows = [{"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1.0,
             "need_inner_model": False}]  # fmt: skip
    for label in SCHEDULER_TYPES:
        rows.append({"name": label.lower(), "label": label, "aliases": None, "default_rho": 7.0,
                     "need_inner_model": False})  # fmt: skip
    return rows


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Register the /sdapi/v1 routes on `app` (create_app calls it; the Guard covers them as every route)."""
    from starlette.concurrency import run_in_threadpool

    from .app import read_body

    options = Options(state)
    jobs = image_jobs(state)

    async def txt2img(request: Request) -> JSONResponse:
        data = await read_body(request)
        parsed = parse_a1111(data, img2img=False, checkpoint=options.checkpoint)
        answer = await _generate(state, request, parsed)
        return JSONResponse({"images": answer["images"], "parameters": data, "info": answer["info"]})

    async def img2img(request: Request) -> JSONResponse:
        data = await read_body(request)
        parsed = parse_a1111(data, img2img=True, checkpoint=options.checkpoint)
        answer = await _generate(state, request, parsed)
        shown = {k: v for k, v in data.items() if k not in ("init_images", "mask")}
        shown.update(init_images=None, mask=None)  # as A1111 answers: the images are not sent back
        return JSONResponse({"images": answer["images"], "parameters": shown, "info": answer["info"]})

    async def pnginfo(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(png_info, await read_body(request)))

    async def sd_models(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(image_models, state))

    async def sampler_list(request: Request) -> JSONResponse:
        return JSONResponse(samplers())

    async def progress_now(request: Request) -> JSONResponse:
        skip = request.query_params.get("skip_current_image", "false").lower() in ("true", "1")
        return JSONResponse(await run_in_threadpool(jobs.report, not skip))

    async def interrupt(request: Request) -> JSONResponse:
        jobs.interrupt()
        return JSONResponse({})

    async def options_read(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(options.read))

    async def options_write(request: Request) -> JSONResponse:
        await run_in_threadpool(options.write, await read_body(request))
        return JSONResponse(None)

    async def empty(request: Request) -> JSONResponse:
        return JSONResponse([])

    async def scheduler_list(request: Request) -> JSONResponse:
        return JSONResponse(schedulers())

    for path, method, route, name in (
        ("/sdapi/v1/txt2img", "POST", txt2img, "txt2img"),
        ("/sdapi/v1/img2img", "POST", img2img, "img2img"),
        ("/sdapi/v1/png-info", "POST", pnginfo, "png-info"),
        ("/sdapi/v1/sd-models", "GET", sd_models, "sd-models"),
        ("/sdapi/v1/samplers", "GET", sampler_list, "samplers"),
        ("/sdapi/v1/progress", "GET", progress_now, "progress"),
        ("/sdapi/v1/interrupt", "POST", interrupt, "interrupt"),
        ("/sdapi/v1/skip", "POST", interrupt, "skip"),
        ("/sdapi/v1/options", "GET", options_read, "options"),
        ("/sdapi/v1/options", "POST", options_write, "set-options"),
        ("/sdapi/v1/sd-vae", "GET", empty, "sd-vae"),
        ("/sdapi/v1/upscalers", "GET", empty, "upscalers"),
        ("/sdapi/v1/schedulers", "GET", scheduler_list, "schedulers"),
    ):
        app.add_api_route(path, _a1111_errors(route), methods=[method], **describe(name))


# --- /openapi.json ------------------------------------------------------------------------------------------

_SUMMARIES = {
    "txt2img": "AUTOMATIC1111's txt2img: base64 PNGs (with their parameters chunk) and info",
    "img2img": "AUTOMATIC1111's img2img: init_images, mask (white repaints), denoising_strength",
    "png-info": "AUTOMATIC1111's png-info: the parameters text a PNG records",
    "sd-models": "AUTOMATIC1111's model list: the image models this server can run",
    "samplers": "AUTOMATIC1111's sampler list: aigc's schedulers",
    "progress": "AUTOMATIC1111's progress of the image job running now, whatever route started it (0 when "
    "idle); current_image: its latest preview (PNG, base64) unless skip_current_image=true",
    "interrupt": "AUTOMATIC1111's interrupt: the running image job stops at its next step and answers the "
    "images it made",
    "skip": "AUTOMATIC1111's skip: as interrupt here (the whole job stops, not only the current image)",
    "options": "AUTOMATIC1111's settings: the default image model (sd_model_checkpoint) and fixed values",
    "set-options": "Set sd_model_checkpoint (a title of sd-models) for later /sdapi requests, in this "
    "server's memory only; other settings that would change a picture are refused",
    "sd-vae": "AUTOMATIC1111's VAE list: empty (Automatic: the model's own VAE)",
    "upscalers": "AUTOMATIC1111's upscaler list: empty (aigc has none)",
    "schedulers": "AUTOMATIC1111's scheduler types: Automatic, Karras",
}


def _body_schema(img2img: bool) -> dict[str, Any]:
    from ..settings import SCHEMAS, knobs
    from .openapi import _knob

    schema = knobs(SCHEMAS["image"])
    sampler_names = list(a1111_samplers())
    properties: dict[str, Any] = {
        "prompt": {"type": "string", "minLength": 1, "pattern": r"\S"},
        "negative_prompt": {"type": ["string", "null"]},
        "seed": {
            "type": ["integer", "null"],
            "minimum": -1,
            "maximum": 2**32 - 1,
            "description": "-1: random",
        },
        "steps": _knob("steps", schema["steps"]),
        "cfg_scale": _knob("guidance", schema["guidance"]),
        "width": _knob("width", schema["width"]),
        "height": _knob("height", schema["height"]),
        "batch_size": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_N},
        "n_iter": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_N},
        "sampler_name": {"enum": [*sampler_names, None], "description": "GET /sdapi/v1/samplers"},
        "sampler_index": {"enum": [*sampler_names, None]},
        "scheduler": {"enum": ["Automatic", *SCHEDULER_TYPES, None]},
        "override_settings": {
            "type": ["object", "null"],
            "properties": {"sd_model_checkpoint": {"type": "string", "description": "A title of sd-models"}},
        },
        "send_images": {"type": ["boolean", "null"]},
        **{
            name: {"enum": [default, None] if default is not None else [None]}
            for name, default in REFUSED.items()
            if default not in ([], {})
        },
        **{name: {"description": "Accepted and ignored (A1111's)"} for name in sorted(IGNORED)},
    }
    if img2img:
        properties["denoising_strength"] = _knob("strength", schema["strength"])
        properties["init_images"] = {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "contentEncoding": "base64"},
            "description": "Image files (base64); the first is used",
        }
        properties["mask"] = {"type": ["string", "null"], "description": "White repaints (base64 image)"}
        properties["inpainting_mask_invert"] = {"enum": [0, 1, None]}
        for name in (*INPAINT_TUNING, *INPAINT_TUNING_ALSO):
            properties[name] = {"description": "Accepted; not applied (aigc inpaints as diffusers does)"}
    else:
        properties["denoising_strength"] = {"description": "The hires pass's: ignored (no hires pass)"}
    required = ["prompt", "init_images"] if img2img else ["prompt"]
    body = {"type": "object", "required": required, "properties": properties, "additionalProperties": False}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


def _ok(name: str) -> dict[str, Any]:
    from .openapi import _json

    if name in ("txt2img", "img2img"):
        made = {
            "type": "object",
            "required": ["images", "parameters", "info"],
            "properties": {
                "images": {"type": "array", "items": {"type": "string"}},
                "parameters": {"type": "object"},
                "info": {"type": "string", "description": "A JSON object, as A1111's"},
            },
        }
        return {"200": _json(made)}
    if name == "png-info":
        info = {"type": "object", "required": ["info", "items"], "properties": {"info": {"type": "string"}}}
        return {"200": _json(info)}
    if name == "sd-models":
        row = {"type": "object", "required": ["title", "model_name", "hash", "filename"]}
        return {"200": _json({"type": "array", "items": row})}
    if name == "samplers":
        row = {"type": "object", "required": ["name", "aliases", "options"]}
        return {"200": _json({"type": "array", "items": row})}
    if name in ("interrupt", "skip"):
        return {"200": _json({"type": "object", "maxProperties": 0})}
    if name == "options":
        keys = ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers", "samples_format"]
        return {"200": _json({"type": "object", "required": keys})}
    if name == "set-options":
        return {"200": _json({"type": "null"})}
    if name in ("sd-vae", "upscalers"):
        return {"200": _json({"type": "array", "maxItems": 0})}
    if name == "schedulers":
        row = {"type": "object", "required": ["name", "label", "aliases", "default_rho", "need_inner_model"]}
        return {"200": _json({"type": "array", "items": row})}
    report = {
        "type": "object",
        "required": ["progress", "eta_relative", "state", "current_image", "textinfo"],
        "properties": {
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "eta_relative": {"type": "number", "minimum": 0},
            "state": {"type": "object"},
            "current_image": {"type": ["string", "null"], "description": "The latest preview, PNG (base64)"},
            "textinfo": {"type": ["string", "null"]},
        },
    }
    return {"200": _json(report)}


EXAMPLE_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAAZmlUWHRwYXJhbWV0ZXJzAAAAAABhIHJlZCBmb3gKU3RlcHM6IDEsIFNhbXBs"
    "ZXI6IEV1bGVyLCBDRkcgc2NhbGU6IDEuMCwgU2VlZDogNywgU2l6ZTogMXgxLCBNb2RlbDogc2QtdHVyYm/XaFIcAAAACklEQVR4nGNgAAAA"
    "AgABSK+kcQAAAABJRU5ErkJggg=="
)
"""A 1x1 PNG with a `parameters` chunk: the example /openapi.json gives for png-info."""


def describe(name: str) -> dict[str, Any]:
    """The keyword arguments of A1111 route `name`'s registration: summary, body, answers (as
    openapi.describe gives the OpenAI routes'); errors in aigc's error JSON, with A1111's `detail`."""
    from .openapi import _ERRORS, ERROR, _json

    error = {**ERROR, "properties": {**ERROR["properties"], "detail": {"type": "string"}}}
    responses: dict[str | int, Any] = {**_ok(name)}
    bodies = {"txt2img": False, "img2img": True}
    errors: tuple[str, ...] = ("401", "403")
    if name in bodies or name in ("png-info", "set-options"):
        errors = tuple(_ERRORS)
    for status in errors:
        responses[status] = _json(error, _ERRORS[status])
    extra = _body_schema(bodies[name]) if name in bodies else None
    if name == "png-info":
        body = {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {
                    "type": "string",
                    "description": "A PNG file (base64, or a data: URL); empty: info is empty, as A1111's",
                    "examples": [EXAMPLE_PNG],
                }
            },
            "additionalProperties": False,
        }
        example = {"schema": body, "example": {"image": EXAMPLE_PNG}}
        extra = {"requestBody": {"required": True, "content": {"application/json": example}}}
    if name == "set-options":
        values = {
            key: {"enum": list(allowed)} if allowed is not None else {"type": "integer"}
            for key, allowed in OPTIONS.items()
        }
        values["sd_model_checkpoint"] = {
            "type": "string",
            "description": "A title of GET /sdapi/v1/sd-models",
        }
        body = {"type": "object", "properties": values, "additionalProperties": False}
        extra = {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}
    if name == "progress":
        query = {
            "name": "skip_current_image",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean"},
        }
        extra = {"parameters": [query]}
    return {
        "summary": _SUMMARIES[name],
        "responses": responses,
        "openapi_extra": extra,
        "response_model": None,
    }
