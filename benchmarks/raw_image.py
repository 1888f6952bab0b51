"""The minimal plain-diffusers script aigc image is measured against: same pipeline and settings.

python benchmarks/raw_image.py FOLDER PROMPT STEPS SIZE [channels_last]  -> one JSON line of timings

Options (for benchmarks/image_features.py): --guidance G (7.5), --seed S (0), --vae FOLDER (an
AutoencoderTiny to decode with), --lora FILE[:WEIGHT] (repeatable: load_lora_weights + set_adapters),
--init IMG --mask MASK (AutoPipelineForInpainting, strength 1.0, the init image's size), --out PATH (the
image as a PNG, written after the timings).
"""

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, AutoPipelineForInpainting, AutoPipelineForText2Image
from PIL import Image

parser = argparse.ArgumentParser()
parser.add_argument("folder")
parser.add_argument("prompt")
parser.add_argument("steps", type=int)
parser.add_argument("size", type=int)
parser.add_argument("memory", nargs="?", choices=["channels_last"])
parser.add_argument("--guidance", type=float, default=7.5)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--vae")
parser.add_argument("--lora", action="append", default=[])
parser.add_argument("--init")
parser.add_argument("--mask")
parser.add_argument("--out")
args = parser.parse_args()

components = {"vae": AutoencoderTiny.from_pretrained(args.vae)} if args.vae else {}
auto = AutoPipelineForInpainting if args.mask else AutoPipelineForText2Image
pipe = auto.from_pretrained(args.folder, dtype=torch.float32, **components)
pipe.set_progress_bar_config(disable=True)
if args.memory == "channels_last":
    pipe.unet.to(memory_format=torch.channels_last)
if args.lora:
    names, weights = [], []
    for index, spec in enumerate(args.lora):
        file, colon, weight = spec.rpartition(":")
        path = Path(file if colon else spec)
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=f"lora{index}")
        names.append(f"lora{index}")
        weights.append(float(weight) if colon else 1.0)
    pipe.set_adapters(names, adapter_weights=weights)
arguments = {"width": args.size, "height": args.size}
if args.mask:
    init = Image.open(args.init).convert("RGB")
    mask = Image.open(args.mask).convert("L")
    arguments = {
        "image": init,
        "mask_image": mask,
        "width": init.width,
        "height": init.height,
        "strength": 1.0,
    }
stamps = []


def stamp(pipeline, step, timestep, kwargs):
    stamps.append(time.perf_counter())
    return kwargs


started = time.perf_counter()
image = pipe(
    args.prompt,
    num_inference_steps=args.steps,
    guidance_scale=args.guidance,
    generator=torch.Generator("cpu").manual_seed(args.seed),
    callback_on_step_end=stamp,
    **arguments,
).images[0]
ended = time.perf_counter()
if args.out:
    image.save(args.out)
step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 0.0
print(json.dumps({"seconds": ended - started, "step_seconds": step, "decode_seconds": ended - stamps[-1]}))
