"""A tiny VITS text-to-speech model from a config, with a character tokenizer written here.

Nothing is downloaded. Run as a script to build it into a folder: python tests/tiny_speech.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHARACTERS = list("_ abcdefghijklmnopqrstuvwxyz',.!?-")


def build_vits(out: Path) -> Path:
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(CHARACTERS)}))
    tokenizer = VitsTokenizer(
        str(out / "vocab.json"), pad_token="_", unk_token="_", add_blank=True, normalize=True, phonemize=False
    )
    tokenizer.save_pretrained(out)
    config = VitsConfig(
        vocab_size=len(CHARACTERS),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=8,
        duration_predictor_num_flows=2,
        duration_predictor_filter_channels=16,
        prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=2,
        posterior_encoder_num_wavenet_layers=2,
        depth_separable_num_layers=2,
        wavenet_kernel_size=3,
        upsample_initial_channel=16,
        upsample_rates=[8, 2],
        upsample_kernel_sizes=[16, 4],
        resblock_kernel_sizes=[3, 7],
        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
        sampling_rate=16000,
    )
    torch.manual_seed(0)
    VitsModel(config).save_pretrained(out)
    return out


if __name__ == "__main__":
    print(build_vits(Path(sys.argv[1])))
