"""A faster CPU engine for `stream_text`: onnxruntime-genai running an ONNX export of the model.

It takes the same prompt token ids (encoded by the model's own tokenizer) and the same effective
settings as the transformers reference. Greedy output (fp32 export) equals the reference token for
token; sampling uses onnxruntime-genai's own random generator, so sampled text differs from the
reference for the same seed (still repeatable for a seed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import EngineKey
from .text import Sampling


def session_config(og: Any, export: Path) -> Any:
    """The export's config with onnxruntime's threads set for this machine: one per core the process may
    use, without spin-waiting. onnxruntime-genai's default ran one core here (22 tok/s on SmolLM2-135M
    fp32, 2 cores); these settings ran 35-38 tok/s on an idle machine and kept that rate when another
    process wanted a core, where spinning threads fell to 9 (benchmarks/, README). Same greedy tokens."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    options = {"intra_op_num_threads": cores, "session.intra_op.allow_spinning": "0"}
    config = og.Config(str(export))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    return config


class OnnxTextEngine:
    backend = "onnx"
    device = "cpu"

    def __init__(
        self, export: Path, tokenizer: Any, generation_defaults: dict[str, Any], precision: str
    ) -> None:
        import onnxruntime_genai as og

        self.og = og
        self.model = og.Model(session_config(og, export))
        self.tokenizer = tokenizer
        self.generation_defaults = generation_defaults
        # One vocabulary with the torch engine: the numbers the weights run in.
        self.precision = "float32" if precision == "fp32" else precision
        self.dtype = "float32" if precision == "fp32" else precision
        genai = json.loads((export / "genai_config.json").read_text())
        self.context_length = genai["model"].get("context_length")

    @classmethod
    def load(cls, key: EngineKey) -> OnnxTextEngine:
        """key.options: export (the folder onnx_export.exported made), precision (fp32 or int4).

        Neither torch nor transformers is imported: the tokenizer is the `tokenizers` library with the
        chat template rendered as transformers renders it (engines.tokenizer), and the generation defaults
        are read from generation_config.json."""
        from .text import generation_defaults
        from .tokenizer import FastTokenizer

        folder = Path(key.folder)
        return cls(
            Path(key.option("export")),
            FastTokenizer(folder),
            generation_defaults(folder),
            key.option("precision", "fp32"),
        )

    def tokens(self, prompt_ids: list[int], config: Sampling, seed: int) -> Iterator[list[int]]:
        """New token ids one at a time; stopping early is just not asking for the next one."""
        ids = prompt_ids
        options: dict[str, Any] = {
            "max_length": len(ids) + config.max_new_tokens,
            "do_sample": bool(config.do_sample),
        }
        if config.do_sample:
            options.update(
                temperature=float(config.temperature or 1.0),
                top_k=int(config.top_k or 0),
                top_p=float(config.top_p if config.top_p is not None else 1.0),
                random_seed=int(seed % 2**31),
            )
        if config.repetition_penalty not in (None, 1.0):
            options["repetition_penalty"] = float(config.repetition_penalty)
        if self.context_length:
            options["max_length"] = min(options["max_length"], self.context_length)
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(**options)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
            yield [int(generator.get_next_tokens()[0])]
