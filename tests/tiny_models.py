"""Build the tiny models the tests run on: a tokenizer trained here, seeded random weights.

Nothing is downloaded. Run as a script to build them into a folder: python tests/tiny_models.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Write a haiku about rain falling on the quiet city at night.",
    "A lighthouse stands at dusk, its lamp turning over the grey sea.",
    "Numbers: one, two, three, four, five, six, seven, eight, nine, ten.",
    "Pipes carry bytes from one program to the next without a word.",
    "Café, naïve, déjà vu: accents and ünïcödé survive the round trip.",
]


def train_tokenizer(out: Path, chat: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>" if chat else "<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    if chat:
        fast.chat_template = CHATML
    fast.save_pretrained(out)
    return fast


def build_llama(out: Path, hidden_size: int = 64, intermediate_size: int = 128):
    """A tiny Llama chat model (ChatML template, eos <|im_end|>)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(out, chat=True)
    config = LlamaConfig(  # head_dim 16 by default: onnxruntime's GroupQueryAttention needs a multiple of 16
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        initializer_range=0.2,  # wider than the default, so that greedy output varies
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def build_gpt2(out: Path, safetensors: bool = True):
    """A tiny GPT-2 base model (no chat template)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = train_tokenizer(out, chat=False)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.2,
    )
    torch.manual_seed(1)
    model = GPT2LMHeadModel(config)
    if safetensors:
        model.save_pretrained(out)
    else:  # a pickled checkpoint, as old repositories have
        model.save_pretrained(out)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(state, out / "pytorch_model.bin")
        (out / "model.safetensors").unlink()
    return out


def write_fake_folders(root: Path) -> dict[str, Path]:
    """Folders that are models of another kind: they must fail before any weights load."""
    image = root / "fake-image"
    image.mkdir(parents=True, exist_ok=True)
    (image / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    bert = root / "fake-bert"
    bert.mkdir(parents=True, exist_ok=True)
    (bert / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]})
    )
    remote = root / "fake-remote"
    remote.mkdir(parents=True, exist_ok=True)
    (remote / "config.json").write_text(
        json.dumps(
            {
                "model_type": "my_custom_lm",
                "architectures": ["MyCustomForCausalLM"],
                "auto_map": {"AutoModelForCausalLM": "modeling_custom.MyCustomForCausalLM"},
            }
        )
    )
    empty = root / "not-a-model"
    empty.mkdir(parents=True, exist_ok=True)
    (empty / "notes.txt").write_text("hello")
    return {"image": image, "bert": bert, "remote": remote, "empty": empty}


def build_all(root: Path) -> dict[str, Path]:
    paths = {
        "llama": build_llama(root / "tiny-llama"),
        "gpt2": build_gpt2(root / "tiny-gpt2"),
        "gpt2_bin": build_gpt2(root / "tiny-gpt2-bin", safetensors=False),
    }
    paths.update(write_fake_folders(root))
    return paths


if __name__ == "__main__":
    print(build_all(Path(sys.argv[1])))
