"""A tiny VITS, and a tiny SpeechT5 with a tiny HiFi-GAN, from configs; tokenizers made here.

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


def build_speecht5(out: Path) -> Path:
    """A tiny SpeechT5 (char SentencePiece tokenizer trained here) with a tiny HiFi-GAN in out/vocoder."""
    import sentencepiece
    import torch
    from transformers import (
        SpeechT5Config,
        SpeechT5FeatureExtractor,
        SpeechT5ForTextToSpeech,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        SpeechT5Processor,
        SpeechT5Tokenizer,
    )

    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "hello there this is a test",
        "the lighthouse keeper watched the sea",
        "a red fox in the snow",
    ] * 20
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(out / "spm_char"),
        vocab_size=40,
        model_type="char",
        character_coverage=1.0,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    tokenizer = SpeechT5Tokenizer(str(out / "spm_char.model"))
    SpeechT5Processor(
        tokenizer=tokenizer, feature_extractor=SpeechT5FeatureExtractor(num_mel_bins=8)
    ).save_pretrained(out)
    config = SpeechT5Config(
        vocab_size=len(tokenizer),
        hidden_size=24,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=8,
        speech_decoder_prenet_layers=2,
        speech_decoder_prenet_units=16,
        speech_decoder_postnet_layers=2,
        speech_decoder_postnet_units=16,
        speaker_embedding_dim=16,
        reduction_factor=2,
        max_speech_positions=600,
        max_text_positions=200,
    )
    torch.manual_seed(0)
    SpeechT5ForTextToSpeech(config).save_pretrained(out)
    vocoder = SpeechT5HifiGanConfig(
        model_in_dim=8,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3, 5]],
        sampling_rate=16000,
    )
    SpeechT5HifiGan(vocoder).save_pretrained(out / "vocoder")
    return out


if __name__ == "__main__":
    print(build_vits(Path(sys.argv[1]) / "tiny-vits"), build_speecht5(Path(sys.argv[1]) / "tiny-speecht5"))
