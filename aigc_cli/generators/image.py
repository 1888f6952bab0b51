"""Image generation with a diffusers pipeline: `stream_images` yields one image at a time, each from its
own CPU generator seeded with seed + i, so that image i equals a single raw diffusers call with
`generator=torch.Generator("cpu").manual_seed(seed + i)` and the same settings. Nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..device import make_generator

SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    # name: (diffusers class, config overrides, A1111 sampler name)
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
    "dpm++": ("DPMSolverMultistepScheduler", {}, "DPM++ 2M"),
    "dpm++-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "dpm++-sde": ("DPMSolverSinglestepScheduler", {}, "DPM++ SDE"),
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "pndm": ("PNDMScheduler", {}, "PLMS"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
    "lcm": ("LCMScheduler", {}, "LCM"),
}
SAMPLER_BY_CLASS = {cls: sampler for cls, kw, sampler in SCHEDULERS.values() if not kw}


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    seed: int
    """Image i of a batch uses seed + i."""
    steps: int
    guidance: float
    width: int
    height: int
    negative: str | None = None
    count: int = 1
    init_image: Any = None
    """A PIL image for image-to-image, or None."""
    strength: float = 0.75
    """How far image-to-image moves away from the init image (0..1)."""


@dataclass(frozen=True)
class ImageResult:
    image: Any
    """A PIL image."""
    seed: int
    index: int
    seconds: float
    """Wall time for this image: prompt encoding, denoising, VAE decode."""
    step_seconds: float = 0.0
    """Mean time of one denoising step."""
    decode_seconds: float = 0.0
    """Time from the last step to the image (VAE decode and post-processing)."""
    vae_retried: bool = False
    """The VAE decode gave NaNs in the model's dtype and was redone in float32."""


def sampler_name(pipe: Any) -> str:
    """The A1111 name of the pipeline's scheduler (its class name when A1111 has none)."""
    cls = type(pipe.scheduler).__name__
    if cls == "DPMSolverMultistepScheduler" and getattr(pipe.scheduler.config, "use_karras_sigmas", False):
        return "DPM++ 2M Karras"
    return SAMPLER_BY_CLASS.get(cls, cls)


def pipeline_defaults(pipe: Any) -> dict[str, Any]:
    """What a raw call of this pipeline uses when steps, guidance and size are not given."""
    import inspect

    parameters = inspect.signature(pipe.__call__).parameters
    size = getattr(pipe, "default_sample_size", None) or pipe.unet.config.sample_size
    pixels = size * getattr(pipe, "vae_scale_factor", 8)
    return {
        "steps": parameters["num_inference_steps"].default if "num_inference_steps" in parameters else 50,
        "guidance": parameters["guidance_scale"].default if "guidance_scale" in parameters else 7.5,
        "width": pixels,
        "height": pixels,
    }


def set_scheduler(pipe: Any, name: str) -> None:
    import diffusers

    cls_name, overrides, _ = SCHEDULERS[name]
    pipe.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **overrides)


def stream_images(
    pipe: Any, request: ImageRequest, on_step: Callable[[int, int], None] | None = None
) -> Iterator[ImageResult]:
    """Generate request.count images one by one; on_step(step, total) reports progress."""
    import numpy as np

    for index in range(request.count):
        seed = request.seed + index
        latents: dict[str, Any] = {}
        stamps: list[float] = []

        def callback(pipeline, step, timestep, kwargs, _latents=latents, _stamps=stamps):
            _stamps.append(time.perf_counter())
            _latents["last"] = kwargs["latents"]
            if on_step is not None:
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
        started = time.perf_counter()
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


def decode_in_float32(pipe: Any, latents: Any) -> Any:
    """Redo the VAE decode in float32: fp16 VAEs overflow to NaN (black images) on some devices."""
    import torch

    vae = pipe.vae.to(torch.float32)
    latents = latents.to(device=vae.device, dtype=torch.float32)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with torch.no_grad():
        decoded = vae.decode(latents / vae.config.scaling_factor + shift, return_dict=False)[0]
    return pipe.image_processor.postprocess(decoded, output_type="np")
