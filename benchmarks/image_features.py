"""`aigc image`'s features against plain diffusers in the same run, on Stable Diffusion 1.5's architecture
with random weights: a fast decode with TAESD (--vae), the OpenVINO backend, and what --lora and
inpainting cost. Ratios >= 1.0 mean aigc is at least as fast; absolute numbers are for context only.

Run as the `images` section of benchmarks/run.py (`.venv/bin/python benchmarks/run.py images`).
BENCH_IMAGE_SIZE (512) sets the image size (the LoRA and inpainting part uses at most 256); BENCH_REPEATS
(1 here) how many runs each measurement takes (the median is shown).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from run import AIGC, HERE, sd15_random

SIZE = int(os.environ.get("BENCH_IMAGE_SIZE", "512"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "1"))
PROMPT = "a lighthouse at dusk, oil painting"
RAW = [sys.executable, str(HERE / "raw_image.py")]
TAESD_AIM = 2.5
OPENVINO_AIM = 1.4
AGREEMENT_AIM = 99.9
ROW = "  {:<28} {:<10} {:9.3f} {:<6} {:<10} {:9.3f} {:<6} {:<8} {:6.2f}x{}"


class Failed(Exception):
    pass


def execute(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run one command that prints a JSON line last: that line (its last image's, for aigc), with "wall"
    (the process's wall seconds) and "load" (wall less the in-process seconds: start-up and load)."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, env=env, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        shown = " ".join(command)
        raise Failed(f"exit {result.returncode}: {shown}\n{result.stderr.decode(errors='replace')[-3000:]}")
    record = json.loads(result.stdout.decode().splitlines()[-1])
    return {**record, "wall": elapsed, "load": elapsed - record["seconds"]}


def measure(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """The median of REPEATS runs, for each timing (other fields: the first run's)."""
    runs = [execute(command, env) for _ in range(REPEATS)]
    timings = ("seconds", "step_seconds", "decode_seconds", "wall", "load")
    return {**runs[0], **{k: statistics.median(r[k] for r in runs) for k in timings}}


def aigc(folder: Path, out: Path, steps: int, guidance: float, *flags: str, size: int | None = None) -> list:
    command = [AIGC, "image", PROMPT, "-m", str(folder), "--steps", str(steps), "--guidance", str(guidance)]
    if size is not None:
        command += ["--width", str(size), "--height", str(size)]
    return [*command, "--seed", "0", "--json", "-o", str(out), *flags]


def raw(folder: Path, out: Path, steps: int, guidance: float, size: int) -> list:
    return [*RAW, str(folder), PROMPT, str(steps), str(size), "--guidance", str(guidance), "--out", str(out)]


def pixels(a: Path, b: Path) -> tuple[float, int, bool]:
    """(% of uint8 values within 1 level, the largest difference, identical) of two images' RGB pixels."""
    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.int16)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.int16)
    if x.shape != y.shape:
        return 0.0, 255, False
    difference = np.abs(x - y)
    return float((difference <= 1).mean() * 100), int(difference.max()), bool((difference == 0).all())


def row(label: str, a: tuple[str, float], b: tuple[str, float], ratio: tuple[str, float], unit="s", note=""):
    print(ROW.format(label, a[0], a[1], unit, b[0], b[1], unit, ratio[0], ratio[1], note))


def aim(value: float, target: float, unit: str = "x") -> str:
    return f"  (aim >= {target:g}{unit}: {'met' if value >= target else 'NOT met'})"


def taesd_random(folder: Path) -> Path:
    """TAESD's architecture (diffusers.AutoencoderTiny's default config), seeded random weights."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny().save_pretrained(folder)
    return folder


def lora_random(model: Path, out: Path) -> Path:
    """A rank-8 LoRA on the UNet's attention projections, seeded random weights (a fresh LoRA's B matrices
    are zero: no effect), saved as diffusers saves one: out/pytorch_lora_weights.safetensors."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    unet.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, weight in unet.named_parameters():
            if "lora_" in name:
                weight.normal_(0.0, 0.05)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)
    return out / "pytorch_lora_weights.safetensors"


def inpaint_inputs(home: Path, size: int) -> tuple[Path, Path]:
    """A seeded colour-noise init image and a mask repainting its middle half, size x size PNGs."""
    import numpy as np
    from PIL import Image

    init, mask = home / f"inpaint-init-{size}.png", home / f"inpaint-mask-{size}.png"
    noise = np.random.default_rng(0).integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    Image.fromarray(noise).resize((size, size), Image.Resampling.BICUBIC).save(init)
    hole = np.zeros((size, size), dtype=np.uint8)
    hole[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    Image.fromarray(hole, mode="L").save(mask)
    return init, mask


def fast_decode(home: Path, env: dict[str, str], model: Path) -> None:
    taesd = home / "taesd-random"
    if not (taesd / "config.json").exists():
        taesd_random(taesd)
    print(
        f"Fast decode: TAESD (AutoencoderTiny, default config, random weights), SD-1.5 random, {SIZE}x{SIZE},"
    )
    print(
        f"  one step, guidance 0 (the turbo case); aim: the one-step image >= {TAESD_AIM}x faster with TAESD"
    )
    out = {n: home / f"vae-{n}.png" for n in ("taesd", "full", "raw")}
    tiny = measure(aigc(model, out["taesd"], 1, 0, "--vae", str(taesd), "--backend", "torch", size=SIZE), env)
    full = measure(aigc(model, out["full"], 1, 0, "--backend", "torch", size=SIZE), env)
    bare = measure([*raw(model, out["raw"], 1, 0, SIZE), "--vae", str(taesd)], env)
    speedup = full["seconds"] / tiny["seconds"]
    print("  aigc --vae TAESD against aigc with the model's own VAE (speed-up = full VAE / TAESD)")
    a, b = ("TAESD", tiny["decode_seconds"]), ("full VAE", full["decode_seconds"])
    row("VAE decode", a, b, ("speed-up", full["decode_seconds"] / tiny["decode_seconds"]))
    row("one-step image", ("TAESD", tiny["seconds"]), ("full VAE", full["seconds"]), ("speed-up", speedup))
    print(f"  {'':<28} {aim(speedup, TAESD_AIM).strip()}")
    print("  aigc --vae TAESD against raw diffusers with the same AutoencoderTiny (ratio = raw / aigc)")
    for label, key in (
        ("VAE decode", "decode_seconds"),
        ("one-step image", "seconds"),
        ("wall with load", "wall"),
    ):
        row(label, ("aigc", tiny[key]), ("raw", bare[key]), ("ratio", bare[key] / tiny[key]))
    same = pixels(out["taesd"], out["raw"])[2]
    print(f"  same pixels as raw: {same}   (backend: {tiny.get('backend')})")


def openvino(home: Path, env: dict[str, str], model: Path) -> None:
    print(f"OpenVINO backend: SD-1.5 random, {SIZE}x{SIZE}, 4 steps, guidance 7.5, seed 0")
    exports = Path(env["AIGC_HOME"]) / "openvino"

    def made() -> set[Path]:
        return set(exports.iterdir()) if exports.is_dir() else set()

    out = {n: home / f"ov-{n}.png" for n in ("first", "openvino", "bf16", "torch", "raw")}
    before = made()
    first = execute(aigc(model, out["first"], 4, 7.5, "--backend", "openvino", size=SIZE), env)
    exported = made() - before
    runs = {
        "openvino": measure(aigc(model, out["openvino"], 4, 7.5, "--backend", "openvino", size=SIZE), env),
        "raw": measure(raw(model, out["raw"], 4, 7.5, SIZE), env),
        "torch": measure(aigc(model, out["torch"], 4, 7.5, "--backend", "torch", size=SIZE), env),
    }
    flags = ("--backend", "openvino", "--dtype", "bfloat16")
    runs["bf16"] = execute(aigc(model, out["bf16"], 4, 7.5, *flags, size=SIZE), env)
    later = runs["openvino"]["wall"]
    if exported:
        print(
            f"  one-time export: first run {first['wall']:.1f} s wall, a later run {later:.1f} s:"
            f" the export took about {first['wall'] - later:.1f} s"
        )
    else:
        print(f"  one-time export: made by an earlier run, under {exports} (first run {first['wall']:.1f} s)")
    for name in ("openvino", "bf16"):
        if runs[name].get("backend") != "openvino":
            print(f"  WARNING: the {name} run ran on backend {runs[name].get('backend')!r}, not openvino")
    ips = {n: 1 / r["seconds"] for n, r in runs.items()}
    print("  images per second (in the process, one image; ratio = aigc openvino / the other)")
    ov = ("openvino", ips["openvino"])
    ratio = ips["openvino"] / ips["raw"]
    row(
        "against raw diffusers fp32",
        ov,
        ("raw", ips["raw"]),
        ("ratio", ratio),
        "img/s",
        aim(ratio, OPENVINO_AIM),
    )
    row("against aigc torch", ov, ("torch", ips["torch"]), ("ratio", ips["openvino"] / ips["torch"]), "img/s")
    step = {n: runs[n]["step_seconds"] for n in ("openvino", "raw", "torch")}
    row(
        "per step",
        ("openvino", step["openvino"]),
        ("raw", step["raw"]),
        ("ratio", step["raw"] / step["openvino"]),
    )
    decode = {n: runs[n]["decode_seconds"] for n in ("openvino", "raw")}
    row(
        "VAE decode",
        ("openvino", decode["openvino"]),
        ("raw", decode["raw"]),
        ("ratio", decode["raw"] / decode["openvino"]),
    )
    row(
        "wall with load",
        ("openvino", runs["openvino"]["wall"]),
        ("raw", runs["raw"]["wall"]),
        ("ratio", runs["raw"]["wall"] / runs["openvino"]["wall"]),
    )
    share, largest, _ = pixels(out["openvino"], out["torch"])
    print(
        f"  pixels against aigc torch, same seed: {share:.3f}% of values within 1 level, largest difference"
        f" {largest}{aim(share, AGREEMENT_AIM, '%')}"
    )
    share, largest, _ = pixels(out["bf16"], out["torch"])
    print(
        f"  bfloat16 (--dtype bfloat16 --backend openvino, on request only, one run):"
        f" {ips['bf16']:.3f} img/s,"
        f" ratio {ips['bf16'] / ips['raw']:.2f}x raw; {share:.3f}% of values within 1 level of torch,"
        f" largest difference {largest}"
    )


def lora_and_inpainting(home: Path, env: dict[str, str], model: Path) -> None:
    size = min(256, SIZE)
    lora = home / "sd15-lora-r8" / "pytorch_lora_weights.safetensors"
    if not lora.exists():
        lora_random(model, lora.parent)
    init, mask = inpaint_inputs(home, size)
    print(f"LoRA and inpainting: SD-1.5 random, {size}x{size}, 4 steps, guidance 7.5, aigc --backend torch")
    print("  against raw diffusers (ratio = raw / aigc)")
    cases: dict[str, tuple[Callable[[Path], list], Callable[[Path], list]]] = {
        "LoRA rank 8, weight 1": (
            lambda out: aigc(model, out, 4, 7.5, "--lora", f"{lora}:1.0", "--backend", "torch", size=size),
            lambda out: [*raw(model, out, 4, 7.5, size), "--lora", f"{lora}:1.0"],
        ),
        "inpainting": (
            lambda out: aigc(
                model, out, 4, 7.5, "--init-image", str(init), "--mask", str(mask), "--backend", "torch"
            ),
            lambda out: [*raw(model, out, 4, 7.5, size), "--init", str(init), "--mask", str(mask)],
        ),
    }
    for index, (label, (aigc_command, raw_command)) in enumerate(cases.items()):
        out_a, out_r = home / f"feature-{index}-aigc.png", home / f"feature-{index}-raw.png"
        a = measure(aigc_command(out_a), env)
        r = measure(raw_command(out_r), env)
        print(f"  {label}")
        row(
            "  in the process",
            ("aigc", a["seconds"]),
            ("raw", r["seconds"]),
            ("ratio", r["seconds"] / a["seconds"]),
        )
        row("  wall with load", ("aigc", a["wall"]), ("raw", r["wall"]), ("ratio", r["wall"] / a["wall"]))
        print(f"    same pixels as raw: {pixels(out_a, out_r)[2]}")


def bench_image_features(home: Path, env: dict[str, str]) -> None:
    model = home / "sd15-random"
    if not (model / "model_index.json").exists():
        sd15_random(model)
    env = {**env, "HF_HUB_OFFLINE": "1"}
    env.setdefault("AIGC_HOME", str(home / "aigc"))
    failed = []
    for part in (fast_decode, openvino, lora_and_inpainting):
        try:
            part(home, env, model)
        except Failed as exc:
            print(f"  FAILED: {exc}")
            failed.append(part.__name__)
    if failed:
        raise SystemExit(f"image feature benchmarks failed: {', '.join(failed)}")
