"""LoRA adapters, inpainting and another VAE (`--vae`, TAESD): pixels equal plain diffusers with the same
adapters, mask and autoencoder, in-process through the engine; then the CLI contract (records, `--from`,
bad input) with a few real processes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import raw
from tiny_pipelines import build_lora, build_taesd

from aigc_cli.engines import EngineKey, load_engine
from aigc_cli.engines.image import ImageRequest, Lora, lora_problem, parse_lora

SMALL = {"steps": 2, "guidance": 7.5, "width": 64, "height": 64}
RAW_SMALL = {"num_inference_steps": 2, "guidance_scale": 7.5, "width": 64, "height": 64}
CLI_SMALL = ["--steps", "2", "--width", "64", "--height", "64"]


@pytest.fixture(scope="module")
def parts(pipes, tmp_path_factory):
    """Two LoRAs for the tiny SD (one with text-encoder layers), one for the tiny SDXL, a tiny TAESD, an
    init image and a mask."""
    from PIL import Image

    root = tmp_path_factory.mktemp("image-parts")
    init = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    init.save(root / "init.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(root / "mask.png")
    return {
        "lora": build_lora(pipes["sd"], root / "lora-a", seed=1, text_encoder=True),
        "lora_b": build_lora(pipes["sd"], root / "lora-b", seed=2),
        "lora_xl": build_lora(pipes["sdxl"], root / "lora-xl", seed=3),
        "taesd": build_taesd(root / "taesd"),
        "init": root / "init.png",
        "mask": root / "mask.png",
    }


@pytest.fixture(scope="module")
def engine(pipes):
    """One engine for every in-process request of this module: state left by one request would show."""
    return load_engine(EngineKey("image", str(pipes["sd"]), "cpu", "float32", "torch"))


def pixels(engine, request) -> np.ndarray:
    return np.asarray(next(iter(engine.generate(request))).image)


def lora(path, weight: float) -> Lora:
    return Lora(str(path), weight, str(path), hashlib.sha256(path.read_bytes()).hexdigest())


raw_pipeline = raw.new_image_pipeline
raw_pixels = raw.pipeline_image


# --- in-process: equal to plain diffusers ---------------------------------------------------------------------


def test_loras_equal_diffusers_set_adapters_and_leave_nothing_behind(engine, pipes, parts):
    a, b = parts["lora"], parts["lora_b"]
    base = pixels(engine, ImageRequest("a red fox", seed=3, **SMALL))
    both = pixels(engine, ImageRequest("a red fox", seed=3, loras=(lora(a, 0.7), lora(b, -0.4)), **SMALL))
    only_b = pixels(engine, ImageRequest("a red fox", seed=3, loras=(lora(b, 1.0),), **SMALL))
    after = pixels(engine, ImageRequest("a red fox", seed=3, **SMALL))

    pipe = raw_pipeline(pipes["sd"])
    pipe.load_lora_weights(str(a.parent), weight_name=a.name, adapter_name="a")
    pipe.load_lora_weights(str(b.parent), weight_name=b.name, adapter_name="b")
    pipe.set_adapters(["a", "b"], adapter_weights=[0.7, -0.4])
    assert np.array_equal(both, raw_pixels(pipe, "a red fox", 3, **RAW_SMALL))
    pipe.set_adapters(["b"], adapter_weights=[1.0])
    assert np.array_equal(only_b, raw_pixels(pipe, "a red fox", 3, **RAW_SMALL))
    assert np.array_equal(after, base)  # the adapters are off again once their request ends
    assert np.array_equal(base, raw.image(pipes["sd"], "a red fox", 3, **RAW_SMALL))
    assert not np.array_equal(both, base) and not np.array_equal(only_b, both)


def test_tiny_autoencoder_equals_diffusers_with_that_vae(engine, pipes, parts):
    from diffusers import AutoencoderTiny

    tiny = pixels(engine, ImageRequest("a red fox", seed=4, vae=str(parts["taesd"]), **SMALL))
    pipe = raw_pipeline(pipes["sd"], vae=AutoencoderTiny.from_pretrained(parts["taesd"]))
    assert np.array_equal(tiny, raw_pixels(pipe, "a red fox", 4, **RAW_SMALL))
    own = pixels(engine, ImageRequest("a red fox", seed=4, **SMALL))
    assert not np.array_equal(tiny, own)
    assert np.array_equal(own, raw.image(pipes["sd"], "a red fox", 4, **RAW_SMALL))


def test_inpainting_equals_diffusers_and_text_to_image_is_unchanged_after(engine, pipes, parts):
    from PIL import Image

    init, mask = Image.open(parts["init"]).convert("RGB"), Image.open(parts["mask"])
    request = ImageRequest(
        "a cat",
        seed=5,
        steps=4,
        guidance=7.5,
        width=64,
        height=64,
        init_image=init,
        mask_image=mask,
        strength=1.0,
    )
    painted = pixels(engine, request)
    pipe = raw_pipeline(pipes["sd"], "inpaint")
    expected = raw_pixels(
        pipe,
        "a cat",
        5,
        image=init,
        mask_image=mask,
        num_inference_steps=4,
        guidance_scale=7.5,
        width=64,
        height=64,
    )
    assert np.array_equal(painted, expected)
    half = ImageRequest(**{**request.__dict__, "strength": 0.5, "loras": (lora(parts["lora_b"], 0.8),)})
    with_lora = pixels(engine, half)
    pipe.load_lora_weights(str(parts["lora_b"].parent), weight_name=parts["lora_b"].name, adapter_name="b")
    pipe.set_adapters(["b"], adapter_weights=[0.8])
    kwargs = {"image": init, "mask_image": mask, "num_inference_steps": 4, "guidance_scale": 7.5}
    assert np.array_equal(
        with_lora, raw_pixels(pipe, "a cat", 5, strength=0.5, width=64, height=64, **kwargs)
    )
    after = pixels(engine, ImageRequest("a red fox", seed=3, **SMALL))
    assert np.array_equal(after, raw.image(pipes["sd"], "a red fox", 3, **RAW_SMALL))


@pytest.mark.parametrize(
    ("spec", "parsed", "problem"),
    [
        ("owner/style", ("owner/style", 1.0), None),
        ("owner/style:0.6", ("owner/style", 0.6), None),
        ("./my lora.safetensors:-1.5", ("./my lora.safetensors", -1.5), None),
        ("C:\\loras\\x.safetensors", ("C:\\loras\\x.safetensors", 1.0), None),
        ("C:\\loras\\x.safetensors:0.25", ("C:\\loras\\x.safetensors", 0.25), None),
        ("style:nan", None, "the weight nan is not a finite number"),
        ("style:11", ("style", 11.0), "the weight must be between -10 and 10 (got 11)"),
        (":0.5", None, "give a Hub repo, a .safetensors file or a folder before the weight"),
        ("style.safetensors:abc", None, "the weight after ':' must be a number (got 'abc')"),
        ("style:", None, "the weight after ':' must be a number (got '')"),
        ("style:0.5:0.3", None, "give one weight, after the last ':' (NAME:WEIGHT)"),
    ],
)
def test_lora_specs(spec, parsed, problem):
    if parsed is not None:
        assert parse_lora(spec) == parsed
    else:
        with pytest.raises(ValueError):
            parse_lora(spec)
    assert lora_problem(spec) == problem


# --- the CLI ------------------------------------------------------------------------------------------------


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result


def test_lora_cli_records_replays_and_equals_diffusers(aigc, pipes, parts, tmp_path):
    import shutil

    from PIL import Image

    a = tmp_path / "style.safetensors"
    shutil.copy(parts["lora"], a)
    out = tmp_path / "fox.png"
    args = [
        "image",
        "a red fox",
        "-m",
        str(pipes["sd"]),
        *CLI_SMALL,
        "--seed",
        "3",
        "--lora",
        "./style.safetensors:0.7",
    ]
    record = json.loads(ok(aigc(*args, "-o", str(out), "--json")).stdout)
    sha = hashlib.sha256(a.read_bytes()).hexdigest()
    assert record["lora"] == [f"{a}:0.7"] and record["backend"] == "torch"  # replayable from anywhere
    assert record["loras"] == [{"name": str(a), "weight": 0.7, "sha256": sha}]
    parameters = Image.open(out).text["parameters"]
    assert parameters.startswith("a red fox <lora:style:0.7>\n")
    assert f'Lora hashes: "style: {sha[:12]}"' in parameters
    pipe = raw_pipeline(pipes["sd"])
    pipe.load_lora_weights(str(tmp_path), weight_name=a.name, adapter_name="a")
    pipe.set_adapters(["a"], adapter_weights=[0.7])
    assert np.array_equal(np.asarray(Image.open(out)), raw_pixels(pipe, "a red fox", 3, **RAW_SMALL))
    (tmp_path / "elsewhere").mkdir()
    again = tmp_path / "again.png"
    replay = ok(aigc("image", "--from", str(out), "-o", str(again), cwd=tmp_path / "elsewhere"))
    assert again.read_bytes() == out.read_bytes() and replay.stderr == b""
    shutil.copy(parts["lora_b"], a)  # the file changes: the replay says so
    changed = ok(aigc("image", "--from", str(out), "-o", str(tmp_path / "changed.png")))
    assert f"the LoRA {a} has changed since the image was made" in changed.stderr.decode()


def test_inpaint_and_vae_cli(aigc, pipes, parts, tmp_path):
    from PIL import Image

    out = tmp_path / "painted.png"
    args = ["image", "a cat", "-m", str(pipes["sd"]), "--steps", "4", "--seed", "5", "--init-image"]
    args += [str(parts["init"]), "--mask", str(parts["mask"]), "--vae", str(parts["taesd"]), "-o", str(out)]
    ok(aigc(*args))
    from diffusers import AutoencoderTiny

    pipe = raw_pipeline(pipes["sd"], "inpaint", vae=AutoencoderTiny.from_pretrained(parts["taesd"]))
    init, mask = Image.open(parts["init"]).convert("RGB"), Image.open(parts["mask"])
    kwargs = {"image": init, "mask_image": mask, "num_inference_steps": 4, "width": 64, "height": 64}
    assert np.array_equal(np.asarray(Image.open(out)), raw_pixels(pipe, "a cat", 5, **kwargs))
    record = json.loads(Image.open(out).text["aigc"])
    assert record["mask"] == "mask.png" and record["strength"] == 1.0 and record["vae"] == parts["taesd"].name
    assert "VAE: taesd" in Image.open(out).text["parameters"]
    result = aigc(
        "image", "--from", str(out), "--init-image", str(parts["init"]), "-o", str(tmp_path / "b.png")
    )
    assert result.returncode == 2 and b"was inpainted with a mask: give it again with --mask" in result.stderr


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (
            ["--mask", "bad.png"],
            2,
            "bad.png) has mode RGBA: give a grayscale or RGB image, white where to repaint",
        ),
        (["--lora", "missing.safetensors"], 2, "No such file: missing.safetensors (--lora)"),
        (["--lora", "owner/style:inf"], 2, "--lora 'owner/style:inf': the weight inf is not a finite number"),
        (["--vae", "taesd"], 3, "madebyollin/taesd"),
        (["--lora", "XL"], 2, "does not fit this model: its layers have other sizes than this model's"),
    ],
)
def test_bad_masks_adapters_and_vaes(aigc, pipes, parts, tmp_path, extra, code, message):
    from PIL import Image

    Image.new("RGBA", (64, 64)).save(tmp_path / "bad.png")
    args = [
        "image",
        "a cat",
        "-m",
        str(pipes["sd"]),
        *CLI_SMALL,
        "--seed",
        "1",
        "-o",
        str(tmp_path / "out.png"),
    ]
    if extra[0] == "--mask":
        args += ["--init-image", str(parts["init"])]
    args += [str(parts["lora_xl"]) if e == "XL" else e for e in extra]
    result = aigc(*args)
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    ("size", "mode", "message"),
    [
        (
            (32, 32),
            "L",
            "The mask (m.png) is 32x32 but the init image is 64x64: give a mask of the image's size",
        ),
        (
            (64, 64),
            "LA",
            "The mask (m.png) has mode LA: give a grayscale or RGB image, white where to repaint",
        ),
        ((64, 64), "CMYK", "The mask (m.png) has mode CMYK"),
        ((64, 64), "P", None),  # indexed, as PNG optimizers save grayscale: taken
        (None, None, "The mask (m.png) is not an image Pillow can read: give a PNG"),
    ],
)
def test_masks_are_checked_against_the_init_image(size, mode, message):
    import io

    from PIL import Image

    from aigc_cli.core.image import decode_init_image, decode_mask
    from aigc_cli.errors import UsageError

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    init = decode_init_image(buffer.getvalue(), "i.png", None, None)
    if size is None:
        data = b"not an image"
    else:
        buffer = io.BytesIO()
        Image.new(mode, size).save(buffer, format="TIFF" if mode == "CMYK" else "PNG")
        data = buffer.getvalue()
    if message is None:
        assert decode_mask(data, "m.png", init).mode == "L"
    else:
        with pytest.raises(UsageError) as raised:
            decode_mask(data, "m.png", init)
        assert message in raised.value.message
    # a mask of the size given, resized with an init image that --width/--height resize
    buffer = io.BytesIO()
    Image.new("1", (64, 64), 1).save(buffer, format="PNG")
    resized = decode_init_image(buffer.getvalue(), "i.png", 32, 48)
    mask = decode_mask(buffer.getvalue(), "m.png", resized)
    assert (mask.mode, mask.size, mask.getextrema()) == ("L", (32, 48), (255, 255))


def test_a1111_names_loras_as_other_tools_read_them():
    from aigc_cli.metadata import a1111_parameters

    record = {"prompt": "a fox", "steps": 2, "sampler": "Euler", "guidance": 7.5, "seed": 1, "width": 64}
    record |= {
        "height": 64,
        "model": "m",
        "vae": "taesd",
        "loras": [
            {"name": "/x/lora-a/pytorch_lora_weights.safetensors", "weight": 0.8, "sha256": "a" * 64},
            {"name": "owner/ink-style", "weight": -0.5, "sha256": "b" * 64},
        ],
    }
    assert a1111_parameters(record).splitlines() == [
        "a fox <lora:lora-a:0.8> <lora:ink-style:-0.5>",
        "Steps: 2, Sampler: Euler, CFG scale: 7.5, Seed: 1, Size: 64x64, Model: m, "
        'Lora hashes: "lora-a: aaaaaaaaaaaa, ink-style: bbbbbbbbbbbb", VAE: taesd',
    ]


def test_no_denoising_step_is_refused_before_the_model_loads():
    from aigc_cli.core import image as core_image
    from aigc_cli.core.events import Reporter
    from aigc_cli.errors import UsageError
    from aigc_cli.settings import resolve_settings

    resolved = resolve_settings("image", {"model": "not/loaded", "steps": 2, "strength": 0.25})
    inputs = core_image.ImageInputs(init=b"not read yet", mask=b"not read yet")
    with pytest.raises(UsageError, match=r"--steps 2 with --strength 0\.25 leaves no denoising step"):
        core_image.prepare(resolved, "a cat", Reporter(), None, inputs)
    # The same rule from an API body names its fields.
    from_api = resolve_settings("image", {"steps": 2, "strength": 0.25}, given_in="request")
    with pytest.raises(UsageError, match=r"field 'steps' 2 with field 'strength' 0\.25 leaves no"):
        core_image.prepare(from_api, "a cat", Reporter(), None, inputs)


def test_adapters_and_vaes_are_found_or_refused(pipes, parts, tmp_path):
    from aigc_cli.adapters import find_lora, find_vae
    from aigc_cli.console import Console
    from aigc_cli.errors import ModelNotCachedError, UsageError

    quiet = Console(quiet=True)
    found = find_lora(f"{parts['lora'].parent}:0.5", quiet)  # a folder holding one adapter
    assert (found.path, found.weight) == (str(parts["lora"]), 0.5)
    assert found.sha256 == hashlib.sha256(parts["lora"].read_bytes()).hexdigest()
    for name in ("owner/style", "owner/style/x.safetensors"):  # offline, not cached: exit 3, the remedy
        with pytest.raises(ModelNotCachedError) as raised:
            find_lora(f"{name}:0.5", quiet)
        assert raised.value.message.startswith("The LoRA 'owner/style' is not cached and offline mode is on")
        assert "`aigc models pull owner/style`" in raised.value.message
        assert raised.value.message.endswith("(--lora)")
    (tmp_path / "two").mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        (tmp_path / "two" / name).write_bytes(b"x")
    cases = [
        (lambda: find_lora(str(tmp_path / "two"), quiet), "holds several .safetensors files (a.safetensors"),
        (lambda: find_lora(str(parts["init"]), quiet), "is not a .safetensors file"),
        (lambda: find_vae(str(tmp_path), pipes["sd"], quiet), "holds no VAE config"),
        (lambda: find_vae(str(pipes["sd"] / "unet"), pipes["sd"], quiet), "holds a UNet2DConditionModel"),
    ]
    for call, message in cases:
        with pytest.raises(UsageError) as raised:
            call()
        assert message in raised.value.message
    assert find_vae(str(pipes["sd"]), pipes["sd"], quiet) == (pipes["sd"] / "vae", str(pipes["sd"]))
    assert find_vae(str(parts["taesd"]), pipes["sd"], quiet) == (parts["taesd"], str(parts["taesd"]))


def test_mask_without_init_image_is_refused_before_any_model_loads(aigc, tmp_path):
    result = aigc("image", "a cat", "--mask", str(tmp_path / "m.png"))
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "aigc: error: --mask needs --init-image: the image to repaint"


def test_previews_decode_with_a_cached_tiny_autoencoder_else_the_linear_map(engine, pipes, parts, tmp_path,
                                                                             monkeypatch):  # fmt: skip
    """Previews (streamed images) at the steps asked: the family's TAESD when the Hugging Face cache has it,
    else the linear map; each equals decoding plain diffusers' latents at that step the same way."""
    import shutil

    import torch
    from diffusers import AutoencoderTiny
    from huggingface_hub import constants

    from aigc_cli.device import make_generator
    from aigc_cli.engines.image import latent_preview, preview_steps
    from aigc_cli.engines.image_diffusers import tiny_decode

    steps = {**SMALL, "steps": 6}
    (step,) = preview_steps(1, 6)  # the middle: 3
    captured = {}

    def grab(pipe, index, timestep, kwargs):
        if index + 1 == step:
            captured["latents"] = kwargs["latents"].clone()
        return kwargs

    raw_pipeline(pipes["sd"])(
        prompt="a red fox", num_inference_steps=6, guidance_scale=7.5, width=64, height=64,
        generator=make_generator(5), output_type="np", callback_on_step_end=grab,
    )  # fmt: skip

    def previews() -> list:
        made = []
        request = ImageRequest("a red fox", seed=5, previews=1, **steps)
        list(engine.generate(request, lambda s, total, preview=None: made.append((s, preview))))
        return [(s, np.asarray(p)) for s, p in made if p is not None]

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    engine._previewers.clear()
    linear = latent_preview(captured["latents"], "StableDiffusionPipeline", 64, 64)
    assert [(s, p.tobytes()) for s, p in previews()] == [(step, np.asarray(linear).tobytes())]

    repo = cache / "models--madebyollin--taesd"  # the cache as huggingface_hub lays it out
    shutil.copytree(parts["taesd"], repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    engine._previewers.clear()
    with torch.no_grad():
        tiny = tiny_decode(AutoencoderTiny.from_pretrained(parts["taesd"]), captured["latents"], 64, 64)
    ((made_at, preview),) = previews()
    assert made_at == step and np.array_equal(preview, np.asarray(tiny))
    assert not np.array_equal(preview, np.asarray(linear))
    engine._previewers.clear()
