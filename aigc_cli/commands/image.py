"""`aigc image`: flags (and a --from record) -> ImageSettings -> ImageRequest -> the diffusers engine from
the pool -> files or stdout, each image with its record."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..console import Console, StepBar
from ..engines import EngineKey
from ..errors import UsageError
from ..interrupts import raising
from ..loading import source_of
from ..output import OutputPlan, plan_output, write_atomic, write_binary, write_json_line
from ..pool import EnginePool, default_pool
from ..server.discovery import find_server
from ..settings import Resolved, resolve_settings
from ..streams import read_prompt
from .common import check_seeds, find_model, loading, model_errors, pick_seed

if TYPE_CHECKING:
    from ..engines.image import ImageRequest


def _read_record(from_file: str | None) -> dict[str, Any] | None:
    if from_file is None:
        return None
    from ..metadata import read_image_record

    return read_image_record(Path(from_file))


def read_init_image(source: str, width: int | None, height: int | None, what: str = "--init-image") -> Any:
    """The init image from a file (or stdin for '-'), decoded and sized (decode_init_image). `what` names
    where the path came from in the UsageError for a missing or unreadable file."""
    return decode_init_image(_read_file(source, what), "stdin" if source == "-" else source, width, height)


def _read_file(source: str, what: str) -> bytes:
    """The bytes of a file, or of stdin for '-'; UsageError naming `what` (the flag or field) otherwise."""
    import sys

    if source != "-" and not Path(source).is_file():
        raise UsageError(f"No such file: {source} ({what})")
    try:
        return sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"Cannot read {source} ({what}): {exc.strerror or exc}") from exc


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
    original = image.size
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS)
    image.info["aigc_size"] = original  # the size the user gave: a mask must have it
    return image


def read_mask(source: str, init: Any, what: str = "--mask") -> Any:
    """The inpainting mask from a file (or stdin for '-'), checked against the init image (decode_mask)."""
    return decode_mask(_read_file(source, what), "stdin" if source == "-" else source, init)


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
    record: dict[str, Any]
    """What each image records, but its seed (engines.image: image i uses request.seed + i)."""


def prepare_image(
    resolved: Resolved,
    prompt: str,
    load_init: Callable[[], Any] | None,
    init_name: str | None,
    console: Console,
    pool: EnginePool,
    load_mask: Callable[[Any], Any] | None = None,
    mask_name: str | None = None,
) -> ImageJob:
    """Find and load the model of `resolved` (settings from any source) and the LoRA adapters and VAE it
    names, pick the backend, check the request against the model (steps left by --strength, prompts the
    text encoder cuts), draw the seed, and build request and record. load_init() gives the init image
    (PIL, sized) once the model is found, or is None; load_mask(init) its inpainting mask (decode_mask),
    or is None; init_name and mask_name: what the record names them. The CLI, batch and the server come
    through here. Raises UsageError, ModelUnavailableError."""
    from ..adapters import find_lora, find_vae
    from ..engines.image import ImageRequest
    from ..loading import quiet_libraries

    s = resolved.values
    count = s.count or 1
    check_seeds(s.seed, count)
    if s.strength is not None and load_init is None:
        raise UsageError("--strength needs --init-image")
    if load_mask is not None and load_init is None:
        raise UsageError("--mask needs --init-image: the image to repaint")
    if load_init is not None and s.steps and s.strength is not None and int(s.steps * s.strength) < 1:
        raise UsageError(
            f"--steps {s.steps} with --strength {s.strength} leaves no denoising step: raise either"
        )
    target = find_model("image", s.model, s.device, s.dtype, console, source=resolved.sources["model"])
    label = target.ref.label
    loras = tuple(find_lora(spec, console, _named("lora", resolved)) for spec in s.lora or ())
    for i, lora in enumerate(loras):
        if any(other.sha256 == lora.sha256 for other in loras[:i]):
            raise UsageError(
                f"The LoRA file {lora.path} is given twice: give it once, with the weight you want"
            )
    vae, vae_source = (
        find_vae(s.vae, target.folder, console, _named("vae", resolved)) if s.vae else (None, None)
    )
    init = load_init() if load_init is not None else None
    mask = load_mask(init) if load_mask is not None else None
    quiet_libraries(console, diffusers=True)
    key = image_engine_key(resolved, target, bool(loras), console)
    text = f"Loading {label} on {key.device} ({key.dtype}, {key.backend})"
    with loading(console, pool, key, text), model_errors(label):
        key, engine = _load_image_engine(pool, key, target, console)
    console.note(
        f"{label} on {key.device} ({key.dtype}) with the {key.backend} backend, from {target.folder}"
    )
    own = engine.defaults()  # unset settings: the alias's defaults (resolved), else the pipeline's own
    steps = s.steps or own["steps"]
    strength = s.strength if s.strength is not None else 1.0 if mask is not None else 0.75
    if init is not None and int(steps * strength) < 1:
        raise UsageError(f"--steps {steps} with --strength {strength} leaves no denoising step: raise either")
    for what, text in (("prompt", prompt), ("negative prompt", s.negative)):
        if text and (cut := engine.truncation(text)) is not None:
            total, read, dropped = cut
            shown = dropped if len(dropped) <= 200 else dropped[:200].rsplit(" ", 1)[0] + " ..."
            console.warn(
                f"the {what} is {total} tokens and {label}'s text encoder reads {read}: "
                f'about this much is dropped: "{shown}"'
            )
    seed = pick_seed(s.seed, console, count)
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
        "source": source_of(target.ref, target.folder),
        "steps": request.steps,
        "guidance": request.guidance,
        "width": request.width,
        "height": request.height,
        "scheduler": s.scheduler,
        "sampler": engine.sampler_name(s.scheduler),
        "strength": request.strength if init is not None else None,
        "init_image": init_name,
        "mask": mask_name if mask is not None else None,
        "low_memory": bool(s.low_memory),
        "lora": [f"{_replayable(x)}:{x.weight:g}" for x in loras] or None,
        "loras": [{"name": _replayable(x), "weight": x.weight, "sha256": x.sha256} for x in loras] or None,
        "vae": s.vae,
        "vae_source": vae_source,
        "device": key.device,
        "dtype": key.dtype,
        "backend": key.backend,
        "aigc_version": __version__,
    }
    return ImageJob(key, label, request, record)


def _replayable(lora: Any) -> str:
    """How the record names a LoRA for `--from`: a local file by its absolute path, a Hub one as given."""
    return str(Path(lora.path).resolve()) if Path(lora.name).expanduser().exists() else lora.name


def _check_replay(record: dict[str, Any] | None, job: ImageJob, console: Console) -> None:
    """Warn when a LoRA `--from` replays is no longer the file the image was made with."""
    made = {x.get("name"): x.get("sha256") for x in (record or {}).get("loras") or [] if isinstance(x, dict)}
    for lora in job.record["loras"] or []:
        if made.get(lora["name"]) not in (None, lora["sha256"]):
            console.warn(
                f"the LoRA {lora['name']} has changed since the image was made: the image will differ"
            )


def _named(name: str, resolved: Resolved) -> str:
    """How an error names where a setting came from: its flag, the config.toml key, the record field..."""
    from ..settings import SCHEMAS, knobs, subject

    return subject(name, knobs(SCHEMAS["image"])[name], resolved.sources.get(name, "flag"), "image")


def image_engine_key(resolved: Resolved, target: Any, loras: bool, console: Console) -> EngineKey:
    """The engine to run: OpenVINO where the backend choice says so and its export works (made once, under
    AIGC_HOME), else diffusers on torch; the choice and why as a note, a fallback as one warning."""
    from ..engines.openvino_export import ExportFailed, choose_image_backend, exported

    s = resolved.values
    device = target.device.device
    offload = (("offload", True),) if s.low_memory and device.startswith("cuda") else ()
    requested = s.backend or "auto"
    backend, why = choose_image_backend(requested, device, s.dtype or "auto", target.folder, loras)
    console.note(f"backend: {backend} ({why})")
    if requested == "openvino" and backend == "torch":
        console.warn(f"the openvino backend cannot run this: {why}; using diffusers")
    if backend == "openvino":
        try:
            export = exported(target.folder, console)
        except ExportFailed as exc:
            console.warn(f"the OpenVINO export of {target.ref.label} failed ({exc}); using diffusers")
        else:
            dtype = "bfloat16" if s.dtype == "bfloat16" else "float32"
            return EngineKey(
                "image", str(target.folder), "cpu", dtype, "openvino", (("export", str(export)),)
            )
    return EngineKey("image", str(target.folder), device, target.dtype, "torch", offload)


def _load_image_engine(
    pool: EnginePool, key: EngineKey, target: Any, console: Console
) -> tuple[EngineKey, Any]:
    """(key, engine) from the pool. An OpenVINO export that does not load (damaged in a way its files' sizes
    do not show) is removed and made again once; if that fails too, diffusers runs, with a warning."""
    if key.backend != "openvino":
        return key, pool.get(key)
    import shutil

    from ..engines.openvino_export import ExportFailed, exported

    try:
        return key, pool.get(key)
    except (RuntimeError, ValueError, OSError):
        export = Path(str(key.option("export")))
        console.warn(f"the OpenVINO export in {export} is damaged (OpenVINO cannot load it): making it again")
        shutil.rmtree(export, ignore_errors=True)
    try:
        exported(target.folder, console)
        return key, pool.get(key)
    except (ExportFailed, RuntimeError, ValueError, OSError) as exc:
        console.warn(f"the OpenVINO export of {target.ref.label} failed again ({exc}); using diffusers")
    torch_key = EngineKey("image", key.folder, target.device.device, target.dtype, "torch")
    return torch_key, pool.get(torch_key)


def run_image(
    prompt_arg: str | None,
    flags: dict[str, Any],
    out: str | None,
    init_image: str | None,
    from_file: str | None,
    as_json: bool,
    console: Console,
    local: bool = False,
    no_log: bool = False,
    mask: str | None = None,
) -> None:
    record = _read_record(from_file)
    if record is not None:
        if prompt_arg is None:
            prompt_arg = record.get("prompt")
        if record.get("init_image") and init_image is None:
            raise UsageError(f"{from_file} was made from an init image: give it again with --init-image")
        if record.get("mask") and mask is None:
            raise UsageError(f"{from_file} was inpainted with a mask: give it again with --mask")
    resolved = resolve_settings("image", flags, record, from_file or "")
    s = resolved.values
    check_seeds(s.seed, s.count or 1)
    if s.strength is not None and init_image is None:
        raise UsageError("--strength needs --init-image")
    if mask is not None and init_image is None:
        raise UsageError("--mask needs --init-image: the image to repaint")
    if mask == "-" and init_image == "-":
        raise UsageError("--init-image and --mask cannot both read stdin: give one as a file")
    plan = plan_output("image", out, s.count or 1, as_json)
    stdin_image = "-" in (init_image, mask)
    if stdin_image and prompt_arg in (None, "-"):
        which = "--init-image" if init_image == "-" else "--mask"
        raise UsageError(f"With {which} -, stdin holds the image: give the prompt as an argument")
    prompt = prompt_arg if stdin_image else read_prompt(prompt_arg)
    if not prompt or not prompt.strip():
        raise UsageError("The prompt is empty: give it as an argument, or pipe it in on stdin")
    init_name = Path(init_image).name if init_image not in (None, "-") else init_image
    init: list[Any] = []  # read once (stdin cannot be read twice), whether the server takes it or not

    def load_init() -> Any:
        if not init:
            init.append(read_init_image(init_image, s.width, s.height))
        return init[0]

    masks: list[Any] = []
    mask_name = Path(mask).name if mask not in (None, "-") else mask

    def load_mask(init_: Any) -> Any:
        if not masks:
            masks.append(read_mask(mask, init_))
        return masks[0]

    loader = load_init if init_image is not None else None
    mask_loader = load_mask if mask is not None else None
    log = file_logger("image", resolved, no_log)
    server = None if local else find_server()
    if server is not None:
        from ..server.client import remote_image

        sent = (loader, init_name, mask_loader, mask_name)
        if remote_image(server, resolved, prompt, sent, plan, as_json, console, log):
            return
    pool = default_pool()
    job = prepare_image(resolved, prompt, loader, init_name, console, pool, mask_loader, mask_name)
    _check_replay(record, job, console)
    engine = pool.get(job.key)
    log = file_logger("image", resolved, no_log, job.key.folder)
    request = job.request
    with (
        StepBar(console, request.steps * request.count, "denoising") as progress,
        model_errors(job.label),
        raising(),
    ):
        for result in engine.generate(request, progress.advance):
            if result.vae_retried:
                console.warn("the VAE gave NaNs (a black image); decoded again in float32")
            record = {**job.record, "seed": result.seed}
            timings = {"seconds": result.seconds, "step_seconds": result.step_seconds}
            timings["decode_seconds"] = result.decode_seconds
            write_image(result.image, result.index, record, plan, as_json, timings, progress, log)


def file_logger(
    command: str, resolved: Resolved, no_log: bool, folder: str | None = None
) -> Callable[[dict[str, Any], Path | None, float | None], None]:
    """log(record, path, seconds) for each file a run writes: a log row whose settings `aigc logs rerun`
    passes again (those that ran, with the file's own seed)."""
    from dataclasses import asdict

    from .. import logs

    ran = {k: v for k, v in asdict(resolved.values).items() if v is not None and k != "count"}
    modality = "image" if command == "image" else "speech"

    def log(record: dict[str, Any], path: Path | None, seconds: float | None) -> None:
        flags = {**ran, "seed": record["seed"]}
        logs.record_file(command, modality, record, flags, path, seconds, no_log, folder)

    return log


def save_image(image: Any, index: int, record: dict[str, Any], plan: OutputPlan) -> Path | None:
    """Write one image (PIL) where the plan says, with its record: the path written, or None (stdout)."""
    from ..metadata import image_metadata

    if plan.to_stdout:
        write_binary(encode_image(image, "PNG", image_metadata("PNG", record)))
        return None
    path = plan.path(index, record["prompt"], record["seed"])
    assert path is not None
    write_atomic(path, encode_image(image, plan.format, image_metadata(plan.format, record)))
    return path


def write_image(
    image: Any,
    index: int,
    record: dict[str, Any],
    plan: OutputPlan,
    as_json: bool,
    timings: dict[str, Any],
    progress: StepBar,
    log: Callable[[dict[str, Any], Path | None, float | None], None] | None = None,
) -> None:
    """Write one image where the plan says, with its record; then its --json line or its path. log(record,
    path, seconds): its log row (logs.py)."""
    path = save_image(image, index, record, plan)
    if log is not None:
        log(record, path, timings.get("seconds"))
    if as_json:
        write_json_line({"path": str(path) if path else None, **record, **timings})
    elif path is not None and plan.print_paths:
        progress.print_line(str(path))


def encode_image(image: Any, fmt: str, metadata: dict[str, Any]) -> bytes:
    """The image file's bytes in `fmt` (PNG, JPEG, WEBP), with its record (metadata.image_metadata)."""
    buffer = io.BytesIO()
    extra = {"quality": 95} if fmt in {"JPEG", "WEBP"} else {}
    image.save(buffer, format=fmt, **metadata, **extra)
    return buffer.getvalue()
