"""Small pure functions: registry lookup, file choice, stop-string hold-back, error mapping."""

from __future__ import annotations

import pytest

from aigc_cli.errors import ExitCode, ModelNotCachedError, WrongModalityError, map_exception
from aigc_cli.generators.text import _safe_end
from aigc_cli.loading import pick_files
from aigc_cli.registry import UnknownModelError, resolve


def test_resolve_alias_folder_repo(tmp_path):
    ref = resolve("smollm2", "text")
    assert ref.spec is not None and ref.repo == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve("SmolLM2-135M", "text").spec is ref.spec
    assert resolve(str(tmp_path), "text").folder == tmp_path.resolve()
    assert resolve("org/name-1.5", "text").repo == "org/name-1.5"


def test_resolve_errors(tmp_path):
    with pytest.raises(UnknownModelError, match="did you mean gpt2"):
        resolve("gtp2", "text")
    file = tmp_path / "weights.bin"
    file.write_bytes(b"x")
    with pytest.raises(UnknownModelError, match="is a file"):
        resolve(str(file), "text")
    with pytest.raises(WrongModalityError, match="'gpt2' is a text model, not an image model"):
        resolve("gpt2", "image")


def test_pick_files_takes_one_weight_format():
    files = [
        "config.json", "generation_config.json", "tokenizer.json", "README.md", ".gitattributes",
        "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "onnx/model.onnx",
        "merges.txt", "vocab.json", "chat_template.jinja",
    ]  # fmt: skip
    assert pick_files(files) == sorted(
        ["config.json", "generation_config.json", "tokenizer.json", "model.safetensors", "merges.txt",
         "vocab.json", "chat_template.jinja"]
    )  # fmt: skip
    assert "pytorch_model.bin" in pick_files(["config.json", "pytorch_model.bin", "tf_model.h5"])


@pytest.mark.parametrize(
    ("text", "stops", "end"),
    [
        ("hello wor", ("world",), 6),
        ("hello", ("world",), 5),
        ("hello w", ("xyz", "wz"), 6),
        ("abc", (), 3),
        ("ab", ("abc",), 0),
    ],
)
def test_safe_end_holds_back_a_possible_stop(text, stops, end):
    assert _safe_end(text, stops) == end


def test_map_exception_by_name():
    class LocalEntryNotFoundError(Exception):
        pass

    class OutOfMemoryError(RuntimeError):
        pass

    mapped = map_exception(LocalEntryNotFoundError("x"), model="gpt2")
    assert isinstance(mapped, ModelNotCachedError) and "aigc models pull gpt2" in mapped.message
    assert map_exception(OutOfMemoryError("CUDA out of memory")).exit_code == ExitCode.FAILURE
    assert map_exception(ValueError("something else")) is None


def test_pick_files_for_a_diffusers_pipeline_skips_checkpoints_and_variants():
    files = [
        "model_index.json", "v1-5-pruned-emaonly.safetensors", "v1-5-pruned.ckpt",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin", "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.safetensors", "tokenizer/vocab.json", "scheduler/scheduler_config.json",
    ]  # fmt: skip
    assert pick_files(files) == sorted(
        ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
         "vae/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.safetensors", "tokenizer/vocab.json",
         "scheduler/scheduler_config.json"]
    )  # fmt: skip
