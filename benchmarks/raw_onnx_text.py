"""The bare onnxruntime-genai script `aigc text` (onnx backend) is measured against for cold start.

python benchmarks/raw_onnx_text.py EXPORT_FOLDER PROMPT MAX_TOKENS [REPETITION_PENALTY]
    -> the generated text on stdout (nothing else)

Imports only onnxruntime_genai: its own tokenizer applies the model's chat template (the export folder
carries tokenizer.json and chat_template.jinja), then greedy decoding for MAX_TOKENS tokens.
REPETITION_PENALTY defaults to 1.1, aigc's default for the embedded SmolLM2 (registry.py), so that the
two produce the same text for the same settings.
"""

import json
import sys

import onnxruntime_genai as og

folder, prompt, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
penalty = float(sys.argv[4]) if len(sys.argv) > 4 else 1.1

model = og.Model(folder)
tokenizer = og.Tokenizer(model)
templated = tokenizer.apply_chat_template(
    json.dumps([{"role": "user", "content": prompt}]), add_generation_prompt=True
)
ids = tokenizer.encode(templated)
params = og.GeneratorParams(model)
options = {"max_length": len(ids) + max_tokens, "do_sample": False}
if penalty != 1.0:
    options["repetition_penalty"] = penalty
params.set_search_options(**options)
generator = og.Generator(model, params)
generator.append_tokens(ids)
new: list[int] = []
while not generator.is_done():
    generator.generate_next_token()
    new.append(int(generator.get_next_tokens()[0]))
text = tokenizer.decode(new[:-1] if new and new[-1] == 2 else new)
print(text.strip())
