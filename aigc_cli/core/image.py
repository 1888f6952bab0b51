"""Images: `prepare` (model, LoRA adapters, VAE, backend, init image and mask, the checks the model allows,
the seed, the record) -> ImageJob, and `run` (ImageStep events per denoising step, a Result per image)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..engines import EngineKey
from ..errors import UsageError
from ..loading import revision_of
from ..marking import COMPOSITE, MADE
from ..settings import Resolved, named
from .events import Event, ImageStep, Reporter, Result, SeedChosen
from .models import find_model, load, model_errors
from .seeds import check_seeds, draw_seed

if TYPE_CHECKING:
    from ..engines.image import ImageRequest
    from ..pool import EnginePool


@dataclass(frozen=True)
class ImageInputs:
    """The images a request starts from, as file bytes (decoded in prepare, once the model is found)."""

    init: bytes | None = None
    """The init image's file (PNG, JPEG, WebP...), for image-to-image; None for text-to-image."""
    init_name: str | None = None
    """How the record names the init image (a file name, '-' for stdin, 'request body')."""
    init_what: str = "stdin"
    """How an error about its content names it (a path, stdin, field 'init_image')."""
    mask: bytes | None = None
    """The inpainting mask's file, with `init`: white repaints, black keeps."""
    mask_name: str | None = None
    mask_what: str = "stdin"
    fields: tuple[str, str] = ("--init-image", "--mask")
    """How a rule between the two and the settings names them: flags, API fields or job fields."""
    params: tuple[str | None, str | None] = (None, None)
    """The API fields they came in (a request's): the `param` of an error about either."""


def decode_init_image(data: bytes, what: str, width: int | None, height: int | None) -> Any:
    """An init image from a file's bytes, as a PIL RGB image: upright as a viewer shows it (a phone
    photo's EXIF orientation, as diffusers' load_image does), resized (Lanczos) to width x height, else to
    its size rounded down to multiples of 8. `what` names the source in the UsageError for non-images."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise UsageError(
            f"The init image ({what}) is not an image Pillow can read: give a PNG, JPEG or WebP"
        ) from exc
    target = (width or image.width // 8 * 8, height or image.height // 8 * 8)
    if 0 in target:  # smaller than 8 pixels on a side, and no size given to resize it to
        raise UsageError(
            f"The init image ({what}) is {image.width}x{image.height} pixels: give one at least 8 pixels on "
            "each side, or the size to make (--width/--height; size)",
            param=None,
        )
    original = image.size
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS)
    image.info["aigc_size"] = original  # the size the user gave: a mask must have it
    return image


def decode_mask(data: bytes, what: str, init: Any) -> Any:
    """An inpainting mask from a file's bytes, as a PIL mode-L image of the init image's size: white
    repaints, black keeps. It must be a single-channel (1-bit, grayscale, or indexed without transparency)
    or RGB image of the size the init image had before any resize (it is resized with it); UsageError
    (exit 2) otherwise."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        mask = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    except (OSError, UnidentifiedImageError) as exc:
        raise UsageError(f"The mask ({what}) is not an image Pillow can read: give a PNG") from exc
    if mask.mode == "P" and "transparency" not in mask.info:  # a grayscale mask a PNG optimizer indexed
        mask = mask.convert("RGB")
    if mask.mode not in ("1", "L", "RGB"):
        raise UsageError(
            f"The mask ({what}) has mode {mask.mode}: give a grayscale or RGB image, white where to repaint"
        )
    size = init.info.get("aigc_size", init.size)
    if mask.size != size:
        raise UsageError(
            f"The mask ({what}) is {mask.width}x{mask.height} but the init image is {size[0]}x{size[1]}: "
            "give a mask of the image's size"
        )
    mask = mask.convert("L")
    return mask if mask.size == init.size else mask.resize(init.size, Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class ImageJob:
    """An image request ready to run on its engine (loaded, in the pool), and what its files record."""

    key: EngineKey
    label: str
    request: ImageRequest
    """Image i of the job uses request.seed + i."""
    record: dict[str, Any]
    """What each image records, but its seed."""
    seed_drawn: bool = False


def check_inputs(resolved: Resolved, inputs: ImageInputs) -> None:
    """The rules between settings and input images that need no model: UsageError (exit 2) naming the
    flags or fields as the user gave them."""
    s = resolved.values
    init, mask = inputs.fields
    if s.strength is not None and inputs.init is None:
        raise UsageError(f"{named(resolved, 'strength', 'image')} needs {init}")
    if inputs.mask is not None and inputs.init is None:
        raise UsageError(f"{mask} needs {init}: the image to repaint")
    if inputs.init is not None and s.steps and s.strength is not None and int(s.steps * s.strength) < 1:
        _no_step(resolved, s.steps, s.strength)


def _no_step(resolved: Resolved, steps: int, strength: float) -> None:
    raise UsageError(
        f"{named(resolved, 'steps', 'image')} {steps} with {named(resolved, 'strength', 'image')} "
        f"{strength:g} leaves no denoising step: raise either"
    )


def prepare(
    resolved: Resolved,
    prompt: str,
    reporter: Reporter,
    pool: EnginePool,
    inputs: ImageInputs = ImageInputs(),
) -> ImageJob:
    """Find and load the model of `resolved` (settings from any source) and the LoRA adapters and VAE it
    names, pick the backend, decode the input images, check the request against the model (steps left by
    strength, prompts the text encoder cuts: a warning), draw the seed, and build request and record.
    Raises UsageError (exit 2), ModelUnavailableError (exit 3)."""
    from ..adapters import find_lora, find_vae
    from ..engines.image import ImageRequest
    from ..loading import quiet_libraries, source_of

    s = resolved.values
    count = s.count or 1
    check_seeds(resolved, "image")
    check_inputs(resolved, inputs)
    target = find_model("image", s.model, s.device, s.dtype, reporter, source=resolved.sources["model"])
    label = target.ref.label
    loras = tuple(find_lora(spec, reporter, named(resolved, "lora", "image")) for spec in s.lora or ())  # type: ignore[arg-type]
    for i, lora in enumerate(loras):
        if any(other.sha256 == lora.sha256 for other in loras[:i]):
            raise UsageError(
                f"The LoRA file {lora.path} is given twice: give it once, with the weight you want"
            )
    vae, vae_source = (
        find_vae(s.vae, target.folder, reporter, named(resolved, "vae", "image"))  # type: ignore[arg-type]
        if s.vae
        else (None, None)
    )
    try:
        init = decode_init_image(inputs.init, inputs.init_what, s.width, s.height) if inputs.init else None
    except UsageError as exc:
        exc.param = exc.param or inputs.params[0]
        raise
    try:
        mask = decode_mask(inputs.mask, inputs.mask_what, init) if inputs.mask is not None else None
    except UsageError as exc:
        exc.param = exc.param or inputs.params[1]
        raise
    quiet_libraries(reporter, diffusers=True)  # type: ignore[arg-type]
    key = engine_key(resolved, target, bool(loras), reporter)
    text = f"Loading {label} on {key.device} ({key.dtype}, {key.backend})"
    with model_errors(label):
        key, engine = _load_engine(pool, key, target, reporter, text)
    reporter.note(
        f"{label} on {key.device} ({key.dtype}) with the {key.backend} backend, from {target.folder}",
        "model_loaded",
    )
    own = engine.defaults()  # unset settings: the alias's defaults (resolved), else the pipeline's own
    steps = s.steps or own["steps"]
    strength = s.strength if s.strength is not None else 1.0 if mask is not None else 0.75
    if init is not None and int(steps * strength) < 1:
        _no_step(resolved, steps, strength)
    for what, name, text in (("prompt", "prompt", prompt), ("negative prompt", "negative", s.negative)):
        if text and (cut := engine.truncation(text)) is not None:
            total, read, dropped = cut
            shown = dropped if len(dropped) <= 200 else dropped[:200].rsplit(" ", 1)[0] + " ..."
            reporter.warn(
                f"the {what} is {total} tokens and {label}'s text encoder reads {read}: "
                f'about this much is dropped: "{shown}"',
                f"{name}_truncated",
            )
    seed, drawn = draw_seed(s.seed, count)
    reporter.emit(SeedChosen(seed, drawn))
    request = ImageRequest(
        prompt=prompt,
        seed=seed,
        steps=steps,
        guidance=s.guidance if s.guidance is not None else own["guidance"],
        width=init.width if init is not None else s.width or own["width"],
        height=init.height if init is not None else s.height or own["height"],
        negative=s.negative,
        count=count,
        init_image=init,
        strength=strength,
        scheduler=s.scheduler,
        low_memory=bool(s.low_memory),
        mask_image=mask,
        loras=loras,
        vae=str(vae) if vae is not None else None,
    )
    record = {
        "kind": "image",
        "prompt": request.prompt,
        "negative": request.negative,
        "model": label,
        "revision": revision_of(target.folder),
        "source": source_of(target.ref, target.folder),
        "steps": request.steps,
        "guidance": request.guidance,
        "width": request.width,
        "height": request.height,
        "scheduler": s.scheduler,
        "sampler": engine.sampler_name(s.scheduler),
        "strength": request.strength if init is not None else None,
        "init_image": inputs.init_name if init is not None else None,
        "mask": inputs.mask_name if mask is not None else None,
        "low_memory": bool(s.low_memory),
        "lora": [f"{_replayable(x)}:{x.weight:g}" for x in loras] or None,
        "loras": [{"name": _replayable(x), "weight": x.weight, "sha256": x.sha256} for x in loras] or None,
        "vae": s.vae,
        "vae_source": vae_source,
        "device": key.device,
        "dtype": key.dtype,
        "backend": key.backend,
        "aigc_version": __version__,
        "digital_source_type": None if s.mark is False else COMPOSITE if init is not None else MADE,
    }
    return ImageJob(key, label, request, record, drawn)


def _replayable(lora: Any) -> str:
    """How the record names a LoRA for `--from`: a local file by its absolute path, a Hub one as given."""
    return str(Path(lora.path).resolve()) if Path(lora.name).expanduser().exists() else lora.name


def check_replay(made: dict[str, Any] | None, job: ImageJob, reporter: Reporter) -> None:
    """Warn when a LoRA that a replayed record names is no longer the file the image was made with."""
    made_loras = (made or {}).get("loras") or []
    hashes = {Path(str(x.get("name"))).name: x.get("sha256") for x in made_loras if isinstance(x, dict)}
    for lora in job.record["loras"] or []:  # a file's record names a local LoRA by its file name
        if hashes.get(Path(lora["name"]).name) not in (None, lora["sha256"]):
            reporter.warn(
                f"the LoRA {lora['name']} has changed since the image was made: the image will differ",
                "lora_changed",
            )


def run(job: ImageJob, engine: Any) -> Iterator[Event]:
    """The job's images one by one: an ImageStep per denoising step (from a worker thread that runs the
    pipeline), then a Result (record with its seed, payload: a PIL image, timings) per image. Closing the
    iterator stops the pipeline at its next step."""
    from .threads import events_of

    request = job.request

    def work(emit: Any) -> None:
        with model_errors(job.label):
            steps = lambda step, total, preview=None: emit(("step", step, total, preview))  # noqa: E731
            for result in engine.generate(request, steps):
                emit(("result", result))

    index = 0
    for item in events_of(work, "aigc-image"):
        if item[0] == "step":
            yield ImageStep(index, item[1], item[2], item[3])
            continue
        result = item[1]
        index = result.index + 1
        if result.vae_retried:
            yield _vae_retried()
        timings = {
            "seconds": result.seconds,
            "step_seconds": result.step_seconds,
            "decode_seconds": result.decode_seconds,
        }
        yield Result(result.index, {**job.record, "seed": result.seed}, result.image, timings)


def _vae_retried() -> Any:
    from .events import Notice

    return Notice("warning", "vae_retried", "the VAE gave NaNs (a black image); decoded again in float32")


def engine_key(resolved: Resolved, target: Any, loras: bool, reporter: Reporter) -> EngineKey:
    """The engine to run: OpenVINO where the backend choice says so and its export works (made once, under
    AIGC_HOME), else diffusers on torch; the choice and why as a note, a fallback as one warning. An export
    that failed before for these weights and libraries is not tried again (--backend openvino falls back
    rather than failing, so this holds for it too): the warning says so and names the file to delete."""
    from ..engines.openvino_export import ExportFailed, choose_image_backend, exported
    from ..made_once import FailedBefore

    s = resolved.values
    device = target.device.device
    offload = (("offload", True),) if s.low_memory and device.startswith("cuda") else ()
    requested = s.backend or "auto"
    backend, why = choose_image_backend(requested, device, s.dtype or "auto", target.folder, loras)
    reporter.note(f"backend: {backend} ({why})", "backend_chosen")
    if requested == "openvino" and backend == "torch":
        reporter.warn(f"the openvino backend cannot run this: {why}; using diffusers", "backend_fallback")
    if backend == "openvino":
        try:
            export = exported(target.folder, reporter)  # type: ignore[arg-type]
        except FailedBefore as exc:
            reporter.warn(
                f"the OpenVINO export of {target.ref.label} failed before ({exc}); using diffusers "
                f"(delete {exc.marker} to try the export again)",
                "backend_fallback",
            )
        except ExportFailed as exc:
            reporter.warn(
                f"the OpenVINO export of {target.ref.label} failed ({exc}); using diffusers",
                "backend_fallback",
            )
        else:
            dtype = "bfloat16" if s.dtype == "bfloat16" else "float32"
            return EngineKey(
                "image", str(target.folder), "cpu", dtype, "openvino", (("export", str(export)),)
            )
    return EngineKey("image", str(target.folder), device, target.dtype, "torch", offload)


def _load_engine(
    pool: EnginePool, key: EngineKey, target: Any, reporter: Reporter, text: str
) -> tuple[EngineKey, Any]:
    """(key, engine) from the pool. An OpenVINO export that does not load (damaged in a way its files' sizes
    do not show) is removed and made again once; if that fails too, diffusers runs, with a warning."""
    label = target.ref.label
    if key.backend != "openvino":
        return key, load(pool, key, reporter, text, label)
    import shutil

    from ..engines.openvino_export import ExportFailed, exported
    from ..made_once import FailedBefore

    try:
        return key, load(pool, key, reporter, text, label)
    except (RuntimeError, ValueError, OSError):
        export = Path(str(key.option("export")))
        reporter.warn(
            f"the OpenVINO export in {export} is damaged (OpenVINO cannot load it): making it again",
            "export_damaged",
        )
        shutil.rmtree(export, ignore_errors=True)
    try:
        exported(target.folder, reporter)  # type: ignore[arg-type]
        return key, load(pool, key, reporter, text, label)
    except (ExportFailed, FailedBefore, RuntimeError, ValueError, OSError) as exc:
        reporter.warn(
            f"the OpenVINO export of {label} failed again ({exc}); using diffusers", "backend_fallback"
        )
    torch_key = EngineKey("image", key.folder, target.device.device, target.dtype, "torch")
    return torch_key, load(pool, torch_key, reporter, text, label)
