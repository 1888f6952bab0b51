"""The minimal plain-transformers script aigc is measured against: same model, prompt and settings.

python benchmarks/raw_text.py FOLDER PROMPT MAX_TOKENS  -> one JSON line: seconds, ttft, tokens/s, text
"""

import json
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, prompt, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
if tokenizer.chat_template:
    messages = [{"role": "user", "content": prompt}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
else:
    inputs = tokenizer(prompt, return_tensors="pt")


class Clock:
    """Records when each new token arrives (the first put() is the prompt)."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


clock = Clock()
transformers.set_seed(0)
started = time.perf_counter()
out = model.generate(**inputs, do_sample=False, max_new_tokens=max_tokens, streamer=clock)
token_times = clock.times[1:]
new = out[0, inputs["input_ids"].shape[1] :]
decode = token_times[-1] - token_times[0]
print(
    json.dumps(
        {
            "seconds": token_times[-1] - started,
            "time_to_first_token": token_times[0] - started,
            "tokens_per_second": (len(token_times) - 1) / decode if decode else 0.0,
            "completion_tokens": len(token_times),
            "text": tokenizer.decode(new, skip_special_tokens=True),
        }
    )
)
