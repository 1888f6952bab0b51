"""Tiny Stable Diffusion and SDXL pipelines from configs, with a CLIP tokenizer trained here.

Nothing is downloaded. Run as a script to build them into a folder: python tests/tiny_pipelines.py OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

CAPTIONS = [
    "a red fox, watercolor",
    "a lighthouse at dusk, oil painting",
    "a cat sitting on a mat",
    "blurry, low quality, ugly",
]


def clip_tokenizer(work: Path):
    """A CLIP BPE tokenizer (</w> word ends, lower-case) trained on a few captions."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|startoftext|>", "<|endoftext|>"], end_of_word_suffix="</w>"
    )
    tokenizer.train_from_iterator(CAPTIONS * 10, trainer=trainer)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer.model.save(str(work))
    return CLIPTokenizer(str(work / "vocab.json"), str(work / "merges.txt"), model_max_length=77)


def clip_config(tokenizer, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id or 0,
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        **extra,
    )


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=64,
    )


def scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


UNET = {  # the shape both tiny UNets share
    "block_out_channels": (4, 8),
    "layers_per_block": 1,
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 2,
}


def build_sd(out: Path) -> Path:
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = clip_tokenizer(out.parent / f"{out.name}-bpe")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET, cross_attention_dim=32)
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(clip_config(tokenizer)),
        tokenizer=tokenizer,
        scheduler=scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)
    return out


def build_sdxl(out: Path) -> Path:
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = clip_tokenizer(out.parent / f"{out.name}-bpe")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        **UNET,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + the 32-wide pooled text embedding
        cross_attention_dim=64,  # the two text encoders' 32-wide states side by side
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(clip_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(clip_config(tokenizer, projection_dim=32)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=scheduler(),
    )
    pipe.save_pretrained(out)
    return out


def build_lora(pipeline: Path, out: Path, seed: int = 1, text_encoder: bool = False) -> Path:
    """A LoRA for a tiny pipeline's UNet (and its text encoder), rank 2, seeded random weights (a fresh
    LoRA's B matrices are zero: no effect), saved as diffusers saves one: out/pytorch_lora_weights.safetensors."""
    import torch
    from diffusers import AutoPipelineForText2Image
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = AutoPipelineForText2Image.from_pretrained(pipeline)
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = {"unet_lora_layers": pipe.unet}
    if text_encoder:
        # peft itself: transformers 5's add_adapter asks for a peft newer than PyPI has
        config = LoraConfig(r=2, lora_alpha=2, target_modules=["q_proj", "v_proj"])
        inject_adapter_in_model(config, pipe.text_encoder)
        layers["text_encoder_lora_layers"] = pipe.text_encoder
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in layers.values():
            for name, weight in module.named_parameters():
                if "lora_" in name:
                    weight.normal_(0.0, 0.5)
    state = {k: convert_state_dict_to_diffusers(get_peft_model_state_dict(m)) for k, m in layers.items()}
    type(pipe).save_lora_weights(out, **state, safe_serialization=True)
    return out / "pytorch_lora_weights.safetensors"


def build_taesd(out: Path) -> Path:
    """A tiny AutoencoderTiny with the tiny VAE's latent shape (4 channels, 2x scale), seeded weights."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(2)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    ).save_pretrained(out)
    return out


def build_all(root: Path) -> dict[str, Path]:
    return {"sd": build_sd(root / "tiny-sd"), "sdxl": build_sdxl(root / "tiny-sdxl")}


if __name__ == "__main__":
    print(build_all(Path(sys.argv[1])))
