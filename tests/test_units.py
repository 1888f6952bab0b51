"""Small pure functions: registry lookup, file choice, stop-string hold-back, error mapping."""

from __future__ import annotations

import pytest

from aigc_cli.engines.text import _safe_end
from aigc_cli.errors import ExitCode, ModelNotCachedError, WrongModalityError, map_exception
from aigc_cli.hub import pick_files
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


def test_map_exception_by_type_with_the_model_named():
    import torch
    from huggingface_hub.errors import LocalEntryNotFoundError

    class LocalEntryNotFoundError2(Exception):  # the same name, another type: not mapped
        pass

    LocalEntryNotFoundError2.__name__ = "LocalEntryNotFoundError"
    mapped = map_exception(LocalEntryNotFoundError("x"), model="gpt2")
    assert isinstance(mapped, ModelNotCachedError) and "`aigc models pull gpt2`" in mapped.message
    assert mapped.model == "gpt2"
    assert "`aigc models pull NAME`" in map_exception(LocalEntryNotFoundError("x")).message
    assert "MODEL" not in map_exception(LocalEntryNotFoundError("x")).message
    assert map_exception(LocalEntryNotFoundError2("x")) is None
    assert map_exception(torch.OutOfMemoryError("CUDA out of memory")).exit_code == ExitCode.FAILURE
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


def test_nan_pixels_are_decoded_again_in_float32():
    """fp16 VAEs overflow to NaN on some accelerators: the last latents are decoded again in float32."""
    from types import SimpleNamespace

    import numpy as np
    import torch
    from diffusers.image_processor import VaeImageProcessor

    from aigc_cli.engines.image import ImageRequest
    from aigc_cli.engines.image_diffusers import DiffusersEngine

    class HalfVae:
        config = SimpleNamespace(scaling_factor=0.5, shift_factor=None)
        device = torch.device("cpu")
        dtype = torch.float16

        def to(self, dtype):
            self.dtype = dtype
            return self

        def decode(self, latents, return_dict=False):
            assert (
                self.dtype == torch.float32 and latents.dtype == torch.float32 and torch.all(latents == 2.0)
            )  # 1.0 / scaling_factor
            return (torch.zeros(1, 3, 8, 8),)

    class NanPipe:
        vae = HalfVae()
        image_processor = VaeImageProcessor()

        def __call__(self, **kwargs):
            assert self.vae.dtype == torch.float16  # the pipeline runs in its own dtype, every image
            kwargs["callback_on_step_end"](
                self, 0, 0, {"latents": torch.ones(1, 4, 4, 4, dtype=torch.float16)}
            )
            return SimpleNamespace(images=np.full((1, 8, 8, 3), np.nan, dtype=np.float32))

    request = ImageRequest("a fox", seed=1, steps=1, guidance=0.0, width=8, height=8, count=2)
    results = list(DiffusersEngine(NanPipe(), "cpu", "float16").generate(request))
    # Each image of the run is retried the same way, and the VAE goes back to its own dtype after each.
    assert [r.vae_retried for r in results] == [True, True] and NanPipe.vae.dtype == torch.float16
    assert np.array_equal(np.asarray(results[1].image), np.full((8, 8, 3), 128, dtype=np.uint8))
