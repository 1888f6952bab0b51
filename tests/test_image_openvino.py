"""The OpenVINO image backend against plain diffusers, in-process: the same pipeline with its UNet and VAE
decoder on OpenVINO (float32) gives the same pixels within PIXEL_TOLERANCE; the export is made once, made
again when damaged, and leaves nothing behind when it fails; the backend choice answers each case.

Float32 OpenVINO differs from torch by ~1e-6 on the tiny pipelines' [0, 1] pixels; PIXEL_TOLERANCE leaves
room for the summation order of other CPUs. Through generate() (PIL, uint8) images may differ by one level.
"""

from __future__ import annotations

import json
import os
import shutil
import threading

import numpy as np
import pytest

pytest.importorskip("openvino")

import diffusers
import openvino as ov
import torch
from conftest import isolate
from tiny_pipelines import UNET

from aigc_cli.console import Console
from aigc_cli.engines import openvino_export
from aigc_cli.engines.base import EngineKey
from aigc_cli.engines.image import ImageRequest, Lora
from aigc_cli.engines.image_openvino import OpenVinoImageEngine, load_pipeline
from aigc_cli.engines.openvino_export import AUTO_CHOICE, ExportFailed, choose_image_backend, exported
from aigc_cli.errors import UsageError
from aigc_cli.made_once import FailedBefore

PIXEL_TOLERANCE = 1e-4
PROMPT = "a red fox, watercolor"


CLI_ARGS = ["--seed", "4", "--steps", "2", "--width", "64", "--height", "64", "--json"]


@pytest.fixture(scope="module")
def first_cli_run(pipes, tmp_path_factory):
    """(its home, the run, its image): `aigc image -m SD --backend openvino -v` in a fresh AIGC_HOME, which
    makes the module's SD export (the export is the slow part: one for the module, not one more here)."""
    from inproc import run_cli

    home = tmp_path_factory.mktemp("ov-home")
    with pytest.MonkeyPatch.context() as env:
        isolate(env, home)
        args = ["image", PROMPT, "-m", str(pipes["sd"]), *CLI_ARGS, "-o", "auto.png", "-v"]
        asked = run_cli(*args, env={"AIGC_IMAGE_BACKEND": "openvino"})
    return home, asked, home / "auto.png"


@pytest.fixture(scope="module")
def exports(pipes, first_cli_run):
    """{sd, sdxl: (pipeline folder, export folder)}, exported once for the module in its own AIGC_HOME (SD's
    by first_cli_run)."""
    home, _, _ = first_cli_run
    with pytest.MonkeyPatch.context() as env:
        isolate(env, home)
        return {name: (folder, exported(folder, Console(quiet=True))) for name, folder in pipes.items()}


@pytest.fixture(scope="module")
def engines(exports):
    """{sd, sdxl: (the OpenVINO engine, the plain diffusers text-to-image pipeline)}."""
    loaded = {}
    for name, (folder, export) in exports.items():
        key = EngineKey("image", str(folder), "cpu", "float32", "openvino", (("export", str(export)),))
        raw = diffusers.AutoPipelineForText2Image.from_pretrained(folder)
        raw.set_progress_bar_config(disable=True)
        loaded[name] = OpenVinoImageEngine.load(key), raw
    return loaded


def call(pipe, seed=3, **arguments):
    """The pipeline's float pixels (N, H, W, 3) for a CPU generator seeded with `seed`."""
    arguments = {"prompt": PROMPT, "num_inference_steps": 3, "output_type": "np", **arguments}
    return pipe(generator=torch.Generator("cpu").manual_seed(seed), **arguments).images


@pytest.mark.parametrize("name", ["sd", "sdxl"])
@pytest.mark.parametrize(
    "settings",
    [
        {"guidance_scale": 7.5},  # classifier-free guidance: the UNet runs on a batch of 2
        {"guidance_scale": 1.0},  # none: a batch of 1
        {"guidance_scale": 5.0, "width": 48, "height": 40, "negative_prompt": "blurry"},  # 24x20 latents
    ],
)
def test_text_to_image_equals_diffusers(engines, name, settings):
    engine, raw = engines[name]
    got, expected = call(engine.pipe, **settings), call(raw, **settings)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=PIXEL_TOLERANCE)


@pytest.mark.parametrize("name", ["sd", "sdxl"])
def test_image_to_image_and_inpainting_from_pipe(engines, name):
    engine, raw = engines[name]
    init = engine.pipe.image_processor.numpy_to_pil(call(raw, seed=5))[0]
    mask = init.convert("L").point(lambda v: 255 if v > 127 else 0)
    for auto, extra in (
        (diffusers.AutoPipelineForImage2Image, {"image": init, "strength": 0.6}),
        (diffusers.AutoPipelineForInpainting, {"image": init, "mask_image": mask, "strength": 0.8}),
    ):
        ours, theirs = auto.from_pipe(engine.pipe), auto.from_pipe(raw)
        assert type(ours.unet).__name__ == "OpenVinoUNet"
        got, expected = call(ours, **extra), call(theirs, **extra)
        np.testing.assert_allclose(got, expected, rtol=0, atol=PIXEL_TOLERANCE)


def test_generate_equals_diffusers(engines):
    """Through the engine's own generate(): text-to-image, then image-to-image (its from_pipe pipeline)."""
    engine, raw = engines["sd"]
    request = ImageRequest(PROMPT, seed=11, steps=3, guidance=7.5, width=64, height=64, count=2)
    images = [np.asarray(result.image, dtype=int) for result in engine.generate(request)]
    for index, image in enumerate(images):
        expected = np.asarray(
            raw.image_processor.numpy_to_pil(call(raw, seed=11 + index, guidance_scale=7.5))[0]
        )
        assert np.abs(image - expected).max() <= 1
    init = engine.pipe.image_processor.numpy_to_pil(call(raw, seed=5))[0]
    request = ImageRequest(
        PROMPT, seed=4, steps=4, guidance=7.5, width=64, height=64, init_image=init, strength=0.5
    )
    (result,) = engine.generate(request)
    img2img = diffusers.AutoPipelineForImage2Image.from_pipe(raw)
    pixels = call(img2img, seed=4, num_inference_steps=4, guidance_scale=7.5, image=init, strength=0.5)
    expected = np.asarray(img2img.image_processor.numpy_to_pil(pixels)[0])
    assert np.abs(np.asarray(result.image, dtype=int) - expected).max() <= 1


def test_low_memory_tiles_the_decode_and_loras_are_refused(engines):
    """--low-memory: attention slicing skips the stand-in UNet; VAE tiling decodes tiles on OpenVINO."""
    engine, raw = engines["sd"]
    request = ImageRequest(PROMPT, seed=2, steps=2, guidance=7.5, width=96, height=80, low_memory=True)
    (result,) = engine.generate(request)
    raw.enable_attention_slicing()
    raw.vae.enable_tiling()  # the tiny VAE tiles latents over 32: these are 48x40
    try:
        pixels = call(raw, seed=2, num_inference_steps=2, guidance_scale=7.5, width=96, height=80)
    finally:
        raw.disable_attention_slicing()
        raw.vae.disable_tiling()
    expected = np.asarray(raw.image_processor.numpy_to_pil(pixels)[0])
    assert np.abs(np.asarray(result.image, dtype=int) - expected).max() <= 1
    lora = Lora("some/lora", 1.0, "/nowhere/lora.safetensors", "0" * 64)
    with pytest.raises(UsageError, match="torch backend"):
        next(engine.generate(ImageRequest(PROMPT, 1, 2, 7.5, 64, 64, loras=(lora,))))


def test_stand_ins_answer_as_the_torch_modules(engines, exports):
    engine, raw = engines["sdxl"]
    unet = engine.pipe.unet
    expected = {k: v for k, v in raw.unet.config.items() if k != "_name_or_path"}
    assert {k: v for k, v in unet.config.items() if k != "_name_or_path"} == expected
    assert unet.dtype == torch.float32 and unet.device == torch.device("cpu")
    assert unet.add_embedding.linear_1.in_features == raw.unet.add_embedding.linear_1.in_features
    assert engine.defaults() == {"steps": 50, "guidance": 5.0, "width": 64, "height": 64}
    assert engine.backend == "openvino" and engine.dtype == "float32"
    # OpenVINO's default on CPUs with bf16 is bf16: the float32 engine must have asked for f32.
    assert unet.graph.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    # the scalar timestep a scheduler gives and the per-item one run alike
    torch.manual_seed(0)
    sample, states = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 64)
    added = {"text_embeds": torch.randn(2, 32), "time_ids": torch.randn(2, 6)}
    scalar = unet(sample, torch.tensor(500.0), states, added_cond_kwargs=added).sample
    (batched,) = unet(
        sample, torch.tensor([500.0, 500.0]), states, added_cond_kwargs=added, return_dict=False
    )
    with torch.no_grad():
        reference = raw.unet(sample, 500, states, added_cond_kwargs=added).sample
    assert torch.equal(scalar, batched)
    torch.testing.assert_close(scalar, reference, rtol=0, atol=1e-5)
    folder, export = exports["sdxl"]
    bf16 = OpenVinoImageEngine.load(
        EngineKey("image", str(folder), "cpu", "bfloat16", "openvino", (("export", str(export)),))
    )
    hint = bf16.pipe.unet.graph.compiled.get_property("INFERENCE_PRECISION_HINT")
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert hint == ov.Type.bf16


def test_the_unet_weights_are_never_read(engines, exports, tmp_path):
    folder, export = exports["sd"]
    copy = tmp_path / "no-unet-weights"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.safetensors"), dirs_exist_ok=True)
    for part in ("text_encoder", "vae"):
        shutil.copytree(folder / part, copy / part, dirs_exist_ok=True)
    assert not list((copy / "unet").glob("*.safetensors"))
    pipe = load_pipeline(copy, export)
    np.testing.assert_allclose(call(pipe), call(engines["sd"][1]), rtol=0, atol=PIXEL_TOLERANCE)


def test_two_threads_share_an_engine(engines):
    engine, _ = engines["sd"]
    unet = engine.pipe.unet
    torch.manual_seed(1)
    inputs = [
        (torch.randn(b, 4, 8 + 2 * b, 8), torch.tensor(float(b * 100)), torch.randn(b, 77, 32))
        for b in (1, 2)
    ] * 4
    alone = [unet(*x, return_dict=False)[0] for x in inputs]
    together: dict[int, torch.Tensor] = {}

    def work(indices):
        for i in indices:
            together[i] = unet(*inputs[i], return_dict=False)[0]

    threads = [threading.Thread(target=work, args=(range(k, len(inputs), 2),)) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(together[i], alone[i]) for i in range(len(inputs)))


def test_export_made_once_and_again_when_damaged(exports, isolated, monkeypatch):
    folder, good = exports["sd"]
    builds = []

    def copy_good(source, work):  # stands in for the real export (the tests above check that one)
        builds.append(source)
        shutil.copytree(good, work, dirs_exist_ok=True)

    # The module's export was made by the real build; asked again, it is reused as it is.
    monkeypatch.setenv("AIGC_HOME", str(good.parent.parent))
    monkeypatch.setattr(openvino_export, "_export", copy_good)
    stamp = (good / "unet.bin").stat().st_mtime_ns
    assert exported(folder, Console(quiet=True)) == good
    assert builds == [] and (good / "unet.bin").stat().st_mtime_ns == stamp
    # In a fresh AIGC_HOME: made once, then reused; a truncated .bin or a missing .xml makes it again.
    monkeypatch.setenv("AIGC_HOME", str(isolated / "aigc-home"))
    target = exported(folder, Console(quiet=True))
    assert target != good and exported(folder, Console(quiet=True)) == target and len(builds) == 1
    weights = target / "vae_decoder.bin"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "is truncated" in openvino_export.ir_problem(target)
    assert exported(folder, Console(quiet=True)) == target and len(builds) == 2
    assert openvino_export.ir_problem(target) is None
    (target / "unet.xml").unlink()
    assert exported(folder, Console(quiet=True)) == target and len(builds) == 3
    assert openvino_export.ir_problem(target) is None


def test_failed_export_leaves_nothing(pipes, isolated):
    """A UNet that loads but whose forward raises (class conditioning it is not given)."""
    from diffusers import UNet2DConditionModel

    folder = isolated / "class-conditioned"
    shutil.copytree(pipes["sd"], folder)
    torch.manual_seed(0)
    UNet2DConditionModel(**UNET, cross_attention_dim=32, class_embed_type="timestep").save_pretrained(
        folder / "unet"
    )
    with pytest.raises(ExportFailed, match="the unet did not export: ValueError: class_labels"):
        exported(folder, Console(quiet=True))
    assert not [p for p in (isolated / "aigc-home" / "openvino").iterdir() if p.is_dir()]
    with pytest.raises(FailedBefore, match="the unet did not export: ValueError: class_labels"):
        exported(folder, Console(quiet=True))  # remembered: not tried again
    assert choose_image_backend("openvino", "cpu", "auto", folder, False)[0] == "torch"


def test_choose_image_backend(pipes, isolated, monkeypatch):
    sd, sdxl = pipes["sd"], pipes["sdxl"]
    lcm = isolated / "lcm"
    shutil.copytree(sd, lcm)
    config = json.loads((lcm / "unet" / "config.json").read_text())
    (lcm / "unet" / "config.json").write_text(json.dumps({**config, "time_cond_proj_dim": 256}))
    no_unet = isolated / "no-unet"
    (no_unet / "transformer").mkdir(parents=True)
    cases = [
        (("auto", "cpu", "auto", sd, False), ("torch", AUTO_CHOICE)),
        (("auto", "cpu", "float32", sdxl, False), ("torch", AUTO_CHOICE)),
        (("openvino", "cpu", "auto", sd, False), ("openvino", "asked for")),
        (("openvino", "cpu", "float32", sdxl, False), ("openvino", "asked for")),
        (("openvino", "cpu", "bfloat16", sd, False), ("openvino", "asked for")),
        (("torch", "cpu", "auto", sd, False), ("torch", "asked for")),
        (("openvino", "cpu", "float16", sd, False), ("torch", "--dtype float16 runs on the torch backend")),
        (
            ("openvino", "cuda", "auto", sd, False),
            ("torch", "the openvino backend runs on the CPU, not cuda"),
        ),
        (("openvino", "cpu", "auto", sd, True), ("torch", "LoRA adapters run on the torch backend")),
        (("openvino", "cpu", "auto", no_unet, False), ("torch", "the pipeline has no UNet2DConditionModel")),
        (
            ("openvino", "cpu", "auto", lcm, False),
            ("torch", "its UNet takes a guidance embedding (LCM), which the export leaves out"),
        ),
        (
            ("openvino", "mps", "float16", sd, True),
            (
                "torch",
                "the openvino backend runs on the CPU, not mps; LoRA adapters run on the torch backend; --dtype float16 runs on the torch backend",
            ),
        ),
    ]
    for arguments, expected in cases:
        assert choose_image_backend(*arguments) == expected, arguments
    assert openvino_export.openvino_available()
    monkeypatch.setattr(openvino_export, "openvino_available", lambda: False)
    assert choose_image_backend("openvino", "cpu", "auto", sd, False) == (
        "torch",
        "openvino is not installed",
    )


# --- the CLI --------------------------------------------------------------------------------------------------


def test_cli_openvino_when_asked_for_and_a_failed_export_falls_back(
    aigc, pipes, first_cli_run, tmp_path, monkeypatch
):
    from PIL import Image

    args = ["image", PROMPT, "-m", str(pipes["sd"]), *CLI_ARGS]
    home, asked, first_image = first_cli_run  # in a fresh AIGC_HOME, with OpenVINO asked for
    assert asked.returncode == 0, asked.stderr.decode()
    assert json.loads(asked.stdout)["backend"] == "openvino"
    assert json.loads(Image.open(first_image).text["aigc"])["backend"] == "openvino"
    assert b"exporting" in asked.stderr and b"OpenVINO" in asked.stderr  # the one-time export: a note (-v)
    shutil.copy(first_image, "auto.png")

    # An export damaged where its files' sizes do not show it: made again, with one warning.
    exports = (home / "aigc-home" / "openvino").glob(f"{pipes['sd'].name}-*")  # (and sdxl's, when made)
    (made,) = [p for p in exports if p.is_dir()]
    export = shutil.copytree(made, tmp_path / "aigc-home" / "openvino" / made.name)  # the module's stays good
    with open(export / "unet.bin", "r+b") as weights:
        weights.seek(1000)
        weights.write(bytes(20000))
    again = aigc(*args, "-o", "again.png", env={"AIGC_IMAGE_BACKEND": "openvino"})
    assert again.returncode == 0, again.stderr.decode()
    assert again.stderr.decode().splitlines()[0] == (
        f"aigc: warning: the OpenVINO export in {export} is damaged (OpenVINO cannot load it): making it again"
    )
    assert json.loads(again.stdout)["backend"] == "openvino"
    assert Image.open("again.png").tobytes() == Image.open("auto.png").tobytes()

    # An export that cannot be written: one warning, the image made by diffusers, exit 0.
    home = tmp_path / "blocked-home"
    home.mkdir()
    (home / "openvino").write_text("a file where the exports should go")
    env = {"AIGC_HOME": str(home), "AIGC_IMAGE_BACKEND": ""}  # auto: diffusers; the flag asks for openvino
    blocked = aigc(*args, "-o", "blocked.png", "--backend", "openvino", env=env)
    assert blocked.returncode == 0, blocked.stderr.decode()
    warning = blocked.stderr.decode().strip()
    assert warning.startswith("aigc: warning: the OpenVINO export of") and warning.endswith(
        "; using diffusers"
    )
    assert len(warning.splitlines()) == 1
    assert json.loads(blocked.stdout)["backend"] == "torch"
    a = np.asarray(Image.open("auto.png"), dtype=int)
    b = np.asarray(Image.open("blocked.png"), dtype=int)
    assert np.abs(a - b).max() <= 1  # openvino within one level of diffusers
    assert Image.open("blocked.png").tobytes() == raw_image_bytes(pipes["sd"])

    # A failed export is remembered: the next run does not export again; changed weights try again.
    builds = []

    def stand_in(folder, out):  # counts the exports tried
        builds.append(folder)
        raise ExportFailed("the unet did not export: stand-in")

    monkeypatch.setattr(openvino_export, "_export", stand_in)
    model = shutil.copytree(pipes["sd"], tmp_path / "sd-copy")  # the session's pipeline stays untouched
    args[args.index(str(pipes["sd"]))] = str(model)
    env = {"AIGC_HOME": str(tmp_path / "failing-home"), "AIGC_IMAGE_BACKEND": "openvino"}
    failed = aigc(*args, "-o", "failed.png", env=env)
    assert failed.returncode == 0 and len(builds) == 1, failed.stderr.decode()
    assert failed.stderr.decode().endswith("failed (the unet did not export: stand-in); using diffusers\n")
    (marker,) = (tmp_path / "failing-home" / "openvino").glob("*.failed.json")
    remembered = aigc(*args, "-o", "remembered.png", env=env)
    assert remembered.returncode == 0 and len(builds) == 1, remembered.stderr.decode()
    assert remembered.stderr.decode() == (
        f"aigc: warning: the OpenVINO export of {model} failed before (the unet did not export: stand-in); "
        f"using diffusers (delete {marker} to try the export again)\n"
    )
    assert json.loads(remembered.stdout)["backend"] == "torch"
    weights = next((model / "vae").glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    changed = aigc(*args, "-o", "changed.png", env=env)
    assert changed.returncode == 0 and len(builds) == 2, changed.stderr.decode()


def raw_image_bytes(folder) -> bytes:
    import raw

    image = raw.image(folder, PROMPT, 4, num_inference_steps=2, width=64, height=64)
    return image.tobytes()
