"""Images with a diffusers pipeline: `generate` yields one image at a time, each from its own CPU generator
seeded with seed + i, so that image i equals a single raw diffusers call with
`generator=torch.Generator("cpu").manual_seed(seed + i)` and the same settings.

The loaded pipeline is never changed by a call: another scheduler, another VAE, image-to-image and
inpainting run on a pipeline made with `from_pipe` (the same components, no copy); LoRA adapters, attention
slicing and VAE tiling are undone after the call, and a float32 VAE retry puts the VAE back in its dtype.
Loaded adapters and VAEs are kept for the next call that names them (disabled in between).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .base import EngineKey
from .image import (
    SAMPLER_BY_CLASS,
    SCHEDULERS,
    ImageRequest,
    ImageResult,
    Lora,
    latent_preview,
    preview_steps,
)


class DiffusersEngine:
    backend = "torch"

    def __init__(self, pipe: Any, device: str, dtype: str) -> None:
        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self._made: dict[str, Any] = {}  # "img2img" / "inpaint": pipelines sharing the loaded components
        self._vaes: dict[str, Any] = {}  # folder -> a loaded VAE
        self._adapters: set[str] = set()  # adapter names loaded into the pipeline
        self._previewers: dict[str, Any] = {}  # pipeline class -> a cached tiny autoencoder, or None

    @classmethod
    def load(cls, key: EngineKey) -> DiffusersEngine:
        """key.options: offload (model CPU offload on a CUDA device, for --low-memory)."""
        from ..device import torch_dtype
        from ..loading import load_image_pipeline

        pipe = load_image_pipeline(
            Path(key.folder), key.device, torch_dtype(key.dtype), bool(key.option("offload"))
        )
        return cls(pipe, key.device, key.dtype)

    def defaults(self) -> dict[str, Any]:
        import inspect

        parameters = inspect.signature(self.pipe.__call__).parameters
        size = getattr(self.pipe, "default_sample_size", None) or self.pipe.unet.config.sample_size
        pixels = size * getattr(self.pipe, "vae_scale_factor", 8)
        return {
            "steps": parameters["num_inference_steps"].default if "num_inference_steps" in parameters else 50,
            "guidance": parameters["guidance_scale"].default if "guidance_scale" in parameters else 7.5,
            "width": pixels,
            "height": pixels,
        }

    def sampler_name(self, scheduler: str | None) -> str:
        if scheduler is not None:
            return SCHEDULERS[scheduler][2]
        cls = type(self.pipe.scheduler).__name__
        if cls == "DPMSolverMultistepScheduler" and getattr(
            self.pipe.scheduler.config, "use_karras_sigmas", False
        ):
            return "DPM++ 2M Karras"
        return SAMPLER_BY_CLASS.get(cls, cls)

    def truncation(self, text: str) -> tuple[int, int, str] | None:
        """What the text encoder will not read of `text`: (tokens in the text, tokens it reads, the words
        dropped, as written), or None when all of it fits. CLIP reads 77 tokens (start and end included);
        diffusers cuts the rest."""
        tokenizer = getattr(self.pipe, "tokenizer", None) or getattr(self.pipe, "tokenizer_2", None)
        if tokenizer is None or not text:
            return None
        ids = tokenizer(text, truncation=False).input_ids
        limit = tokenizer.model_max_length
        if len(ids) <= limit:
            return None
        # Name the dropped words as the user wrote them: the text encoder keeps about as many words as
        # its tokens decode to (its tokenizer lower-cases and splits punctuation, so quote whole words).
        kept = len(tokenizer.decode(ids[1 : limit - 1], skip_special_tokens=True).split())
        dropped = " ".join(text.split()[kept:])
        return len(ids) - 2, limit - 2, dropped

    def _pipeline(self, request: ImageRequest) -> Any:
        """The pipeline for this request: the loaded one, or one sharing its components."""
        import diffusers

        pipe = self.pipe
        task = "inpaint" if request.mask_image is not None else "img2img" if request.init_image else None
        if task is not None:
            if task not in self._made:  # made once, shares every component with the loaded pipeline
                auto = (
                    diffusers.AutoPipelineForInpainting
                    if task == "inpaint"
                    else diffusers.AutoPipelineForImage2Image
                )
                self._made[task] = auto.from_pipe(self.pipe)
                self._made[task].set_progress_bar_config(disable=True)
            pipe = self._made[task]
        swaps: dict[str, Any] = {}
        if request.scheduler is not None:
            cls_name, overrides, _ = SCHEDULERS[request.scheduler]
            swaps["scheduler"] = getattr(diffusers, cls_name).from_config(
                self.pipe.scheduler.config, **overrides
            )
        if request.vae is not None:
            swaps["vae"] = self._vae(request.vae)
        if swaps:
            pipe = type(pipe).from_pipe(pipe, **swaps)
            pipe.set_progress_bar_config(disable=True)
        return pipe

    def _vae(self, folder: str) -> Any:
        """The VAE in `folder` (AutoencoderTiny or AutoencoderKL, by its config), loaded once, in the
        pipeline VAE's dtype and on its device."""
        if folder not in self._vaes:
            import json

            import diffusers

            cls_name = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))["_class_name"]
            own = self.pipe.vae
            vae = getattr(diffusers, cls_name).from_pretrained(folder, dtype=own.dtype)
            self._vaes[folder] = vae.to(own.device)
        return self._vaes[folder]

    def _load_adapter(self, lora: Lora, name: str) -> None:
        """Load one adapter into the pipeline's UNet (and text encoders); UsageError (exit 2) naming it
        when it is not a LoRA or was made for another architecture (nothing of it stays loaded)."""
        import logging

        from ..errors import UsageError

        path = Path(lora.path)
        log = logging.getLogger("diffusers.loaders.peft")  # logs the error it then raises: once is enough
        level = log.level
        log.setLevel(logging.CRITICAL)
        try:
            self.pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as exc:
            text = str(exc)
            if "size mismatch" in text:
                why = "its layers have other sizes than this model's: a LoRA for another base model?"
            elif "Invalid LoRA checkpoint" in text:
                why = "it holds no LoRA weights"
            else:
                why = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
            if name in {n for names in self.pipe.get_list_adapters().values() for n in names}:
                self.pipe.delete_adapters(name)
            raise UsageError(f"The LoRA {lora.name} does not fit this model: {why}") from exc
        finally:
            log.setLevel(level)
        self._adapters.add(name)

    @contextmanager
    def _loras(self, loras: tuple[Lora, ...]) -> Iterator[None]:
        """The request's LoRA adapters active at their weights for one call, disabled after it (loaded
        once: an adapter is named by its file's hash)."""
        if not loras:
            yield
            return
        names = [f"aigc-{lora.sha256[:16]}" for lora in loras]
        try:
            for lora, name in zip(loras, names, strict=True):
                if name not in self._adapters:
                    self._load_adapter(lora, name)
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=[lora.weight for lora in loras])
            yield
        finally:
            if self._adapters:
                self.pipe.disable_lora()

    def _preview(self, pipeline: Any, latents: Any, request: ImageRequest, step_seconds: float | None) -> Any:
        """A preview of the latents: decoded by the family's tiny autoencoder (TAESD) when the Hugging Face
        cache has it (never downloaded for this), else by the linear map (latent_preview). A preview must
        cost under a tenth of a step: a TAESD decode that took more (a CPU at 512x512 and up: ~1 s, about a
        step) leaves this engine's later previews of that family to the linear map (~10 ms)."""
        name = type(pipeline).__name__
        if name not in self._previewers:
            self._previewers[name] = _cached_tiny_autoencoder(name)
        decoder = self._previewers[name]
        if decoder is None:
            return latent_preview(latents, name, *_size(request))
        started = time.perf_counter()
        image = tiny_decode(decoder, latents, *_size(request))
        if step_seconds is not None and time.perf_counter() - started > step_seconds / 10:
            self._previewers[name] = None
        return image

    def generate(
        self, request: ImageRequest, on_step: Callable[..., None] | None = None
    ) -> Iterator[ImageResult]:
        """request.count images one by one; on_step(step, total) reports progress, and with request.previews
        on_step(step, total, preview) at evenly spaced steps (a PIL image from the latents)."""
        import numpy as np

        from ..device import make_generator

        pipe = self._pipeline(request)
        for index in range(request.count):
            seed = request.seed + index
            latents: dict[str, Any] = {}
            stamps: list[float] = []

            def callback(pipeline, step, timestep, kwargs, _latents=latents, _stamps=stamps):
                _stamps.append(time.perf_counter())
                _latents["last"] = kwargs["latents"]
                if on_step is None:
                    return kwargs
                # image-to-image runs fewer steps than asked (strength): the pipeline knows how many
                total = getattr(pipeline, "num_timesteps", None) or request.steps
                if request.previews and step + 1 in preview_steps(request.previews, total):
                    pace = (_stamps[-1] - _stamps[0]) / (len(_stamps) - 1) if len(_stamps) > 1 else None
                    on_step(
                        step + 1, request.steps, self._preview(pipeline, kwargs["latents"], request, pace)
                    )
                else:
                    on_step(step + 1, request.steps)
                return kwargs

            arguments: dict[str, Any] = {
                "prompt": request.prompt,
                "negative_prompt": request.negative or None,
                "num_inference_steps": request.steps,
                "guidance_scale": request.guidance,
                "generator": make_generator(seed),
                "output_type": "np",
                "callback_on_step_end": callback,
            }
            if request.init_image is not None:
                arguments.update(image=request.init_image, strength=request.strength)
            else:
                arguments.update(width=request.width, height=request.height)
            if request.mask_image is not None:
                arguments.update(mask_image=request.mask_image, width=request.width, height=request.height)
            started = time.perf_counter()
            with _savings(pipe, request.low_memory), self._loras(request.loras):
                pixels = pipe(**arguments).images
            retried = False
            if np.isnan(pixels).any() and "last" in latents:
                pixels, retried = decode_in_float32(pipe, latents["last"]), True
            image = pipe.image_processor.numpy_to_pil(pixels)[0]
            ended = time.perf_counter()
            step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 0.0
            decode = ended - stamps[-1] if stamps else 0.0
            yield ImageResult(
                image, seed, index, round(ended - started, 4), round(step, 4), round(decode, 4), retried
            )


@contextmanager
def _savings(pipe: Any, on: bool) -> Iterator[None]:
    """Attention slicing and VAE tiling for one call, undone after it."""
    if not on:
        yield
        return
    vae = getattr(pipe, "vae", None)
    pipe.enable_attention_slicing()
    if hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    try:
        yield
    finally:
        pipe.disable_attention_slicing()
        if hasattr(vae, "disable_tiling"):
            vae.disable_tiling()


def decode_in_float32(pipe: Any, latents: Any) -> Any:
    """Redo the VAE decode in float32 (fp16 VAEs overflow to NaN, black images, on some devices), then put
    the VAE back in its own dtype so that the next image runs as the first did."""
    import torch

    vae = pipe.vae
    original = vae.dtype
    vae.to(torch.float32)
    try:
        latents = latents.to(device=vae.device, dtype=torch.float32)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        with torch.no_grad():
            decoded = vae.decode(latents / vae.config.scaling_factor + shift, return_dict=False)[0]
    finally:
        vae.to(original)
    return pipe.image_processor.postprocess(decoded, output_type="np")


def tiny_decode(decoder: Any, latents: Any, width: int, height: int) -> Any:
    """The first image of `latents` (the pipeline's, scaled as its UNet sees them) decoded by a tiny
    autoencoder (TAESD, diffusers' AutoencoderTiny, which takes them as they are), as a PIL image of
    width x height: a preview a few times closer to the final image than the linear map, at a few
    hundredths of a step."""
    import torch
    from PIL import Image

    with torch.no_grad():
        sample = decoder.decode(latents[:1].detach().to("cpu", torch.float32)).sample[0]
    pixels = ((sample + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(pixels, "RGB")
    return (
        image if image.size == (width, height) else image.resize((width, height), Image.Resampling.BILINEAR)
    )


def _size(request: ImageRequest) -> tuple[int, int]:
    """The size the image comes out at: the request's, else its init image's."""
    if request.init_image is not None and (not request.width or not request.height):
        return request.init_image.size
    return request.width, request.height


def _cached_tiny_autoencoder(pipeline_class: str) -> Any:
    """The TAESD of the pipeline's family (engines.image.TINY_VAES), on the CPU in float32, when it is in
    the Hugging Face cache; None when it is not, or cannot be loaded (previews fall back to the linear
    map: a preview is never worth a download or a failed request)."""
    from ..hub import cached_snapshot
    from .image import tiny_vae_repo

    repo = tiny_vae_repo(pipeline_class)
    snapshot = cached_snapshot(repo) if repo is not None else None
    if snapshot is None:
        return None
    try:
        from diffusers import AutoencoderTiny

        return AutoencoderTiny.from_pretrained(snapshot).to("cpu").eval()
    except (OSError, ValueError, RuntimeError):
        return None
