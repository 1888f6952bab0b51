"""Image requests and results, the schedulers aigc names, LoRA specs and tiny autoencoders; the engines are
image_diffusers.py (the reference) and image_openvino.py."""

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

# `--vae taesd`: the tiny autoencoder (madebyollin's TAESD family, MIT) made for the pipeline's latents.
TINY_VAES = {
    "StableDiffusionXL": "madebyollin/taesdxl",
    "StableDiffusion3": "madebyollin/taesd3",
    "Flux": "madebyollin/taef1",
    "StableDiffusion": "madebyollin/taesd",  # 1.x and 2.x
}


def tiny_vae_repo(pipeline_class: str) -> str | None:
    """The TAESD repo for a pipeline class name (StableDiffusionXLPipeline -> madebyollin/taesdxl), or None
    for a family that has none."""
    for prefix, repo in TINY_VAES.items():
        if pipeline_class.startswith(prefix):
            return repo
    return None


# Latents to RGB by a linear map (what ComfyUI and A1111 show as their cheap "approx" previews): about a
# thousand multiply-adds per latent pixel, no VAE pass. Fitted to each family's VAE (SD 1.x/2.x; SDXL).
LATENT_RGB = {
    "sd": (((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
            (-0.2120, -0.2616, -0.7177)), (0.0, 0.0, 0.0)),
    "sdxl": (((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
              (-0.3165, -0.2492, -0.2188)), (0.1084, -0.0175, -0.0011)),
}  # fmt: skip


def preview_steps(count: int, total: int) -> frozenset[int]:
    """The denoising steps (1-based, of `total`) after which `count` previews are made, evenly spaced and
    before the last step (the final image is the last): 2 of 20 -> {7, 13}."""
    return frozenset(s for k in range(count) if 1 <= (s := round(total * (k + 1) / (count + 1))) < total)


def latent_preview(latents: Any, pipeline_class: str, width: int, height: int) -> Any:
    """A rough RGB PIL image of `width` x `height` from the first image's latents (a torch tensor, 4
    channels, 1/8 of the size), by the family's linear map (LATENT_RGB): for a preview while denoising, at
    a small fraction of a step's cost; None for latents of another shape (not 4 channels)."""
    import torch
    from PIL import Image

    first = latents[0].detach().to("cpu", torch.float32)
    if first.ndim != 3 or first.shape[0] != 4:
        return None
    factors, bias = LATENT_RGB["sdxl" if pipeline_class.startswith("StableDiffusionXL") else "sd"]
    rgb = torch.einsum("chw,cr->hwr", first, torch.tensor(factors)) + torch.tensor(bias)
    pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB").resize((width, height), Image.Resampling.BILINEAR)


def parse_lora(spec: str) -> tuple[str, float]:
    """`NAME_OR_PATH[:WEIGHT]` -> (name or path, weight); the weight is 1.0 when not given. What follows the
    last ':' is the weight (a Windows drive's `C:` is not). ValueError for a weight that is not a finite
    number, or nothing before it."""
    source, colon, tail = spec.rpartition(":")
    if not colon or (len(source) == 1 and source.isalpha()):  # no weight, or C:\\path
        return spec, 1.0
    if not source.strip():
        raise ValueError("give a Hub repo, a .safetensors file or a folder before the weight")
    drive = len(source) >= 2 and source[1] == ":" and source[0].isalpha()
    if ":" in (source[2:] if drive else source):
        raise ValueError("give one weight, after the last ':' (NAME:WEIGHT)")
    try:
        weight = float(tail)
    except ValueError:
        raise ValueError(f"the weight after ':' must be a number (got {tail!r})") from None
    if weight != weight or weight in (float("inf"), float("-inf")):
        raise ValueError(f"the weight {tail} is not a finite number")
    return source, weight


def lora_problem(spec: str) -> str | None:
    """What is wrong with a --lora value, or None (settings.py checks every source with it)."""
    try:
        _, weight = parse_lora(spec)
    except ValueError as exc:
        return str(exc)
    if not -10.0 <= weight <= 10.0:
        return f"the weight must be between -10 and 10 (got {weight:g})"
    return None


@dataclass(frozen=True)
class Lora:
    """One LoRA adapter of a request, found on disk."""

    name: str
    """As the user gave it (a Hub repo, a path); the record and `--from` keep this."""
    weight: float
    """The adapter's scale (diffusers' set_adapters adapter_weights); 1.0 applies it as trained."""
    path: str
    """The .safetensors file loaded."""
    sha256: str
    """Of that file, hex (A1111's `Lora hashes` show its first 12 characters)."""

    @property
    def alias(self) -> str:
        """The file's stem, as AUTOMATIC1111 names a LoRA in `<lora:alias:weight>`."""
        return self.path.rsplit("/", 1)[-1].removesuffix(".safetensors")


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
    mask_image: Any = None
    """Inpainting: a PIL mode-L image of init_image's size, white where to repaint; None otherwise."""
    loras: tuple[Lora, ...] = ()
    """LoRA adapters applied to this call only."""
    vae: str | None = None
    """A folder holding another VAE (AutoencoderTiny or AutoencoderKL) to decode (and encode) with for
    this call; None keeps the model's own."""
    previews: int = 0
    """How many previews (latent_preview) to make while denoising each image, evenly spaced (0-3)."""


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
