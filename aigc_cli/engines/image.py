"""Image requests and results, and the schedulers aigc names; the engine is image_diffusers.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "PLMS"),  # PLMS as SD runs it; any step count
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
    scheduler: str | None = None
    """A key of SCHEDULERS; None keeps the model's own."""
    low_memory: bool = False
    """Attention slicing and VAE tiling for this call (less memory, a little slower)."""


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
