"""The minimal plain-diffusers script aigc image is measured against: same pipeline and settings.

python benchmarks/raw_image.py FOLDER PROMPT STEPS SIZE [channels_last]  -> one JSON line of timings
"""

import json
import sys
import time

import torch
from diffusers import AutoPipelineForText2Image

folder, prompt, steps, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pipe = AutoPipelineForText2Image.from_pretrained(folder, dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
if "channels_last" in sys.argv[5:]:
    pipe.unet.to(memory_format=torch.channels_last)
stamps = []


def stamp(pipeline, step, timestep, kwargs):
    stamps.append(time.perf_counter())
    return kwargs


started = time.perf_counter()
pipe(
    prompt,
    num_inference_steps=steps,
    guidance_scale=7.5,
    width=size,
    height=size,
    generator=torch.Generator("cpu").manual_seed(0),
    callback_on_step_end=stamp,
).images[0]
ended = time.perf_counter()
step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 0.0
print(json.dumps({"seconds": ended - started, "step_seconds": step, "decode_seconds": ended - stamps[-1]}))
