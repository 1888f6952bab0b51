"""A faster CPU engine for `stream_text`: onnxruntime-genai running an ONNX export of the model.

It takes the same prompt token ids (encoded by the model's own tokenizer) and the same effective
settings as the transformers reference. Greedy output (fp32 export) equals the reference token for
token; sampling uses onnxruntime-genai's own random generator, so sampled text differs from the
reference for the same seed (still repeatable for a seed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .base import EngineKey
from .prefix_cache import PrefixCache
from .text import Sampling

HEADROOM = 1024
"""Room a kept generator leaves past its first request, for the turns that follow (its KV buffer holds
max_length tokens from the start: onnxruntime-genai's past_present_share_buffer)."""


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
        genai = json.loads((export / "genai_config.json").read_text())
        config = session_config(og, export)
        # Batches are padded on the right with a token id the prompts do not hold (onnxruntime-genai masks
        # the prompt's tokens that equal pad_token_id; the export's own is often the end token, which chat
        # prompts hold). A solo run masks nothing: its tokens are the same whatever this id is (tested).
        self.pad_id = int(genai["model"].get("vocab_size", 1)) - 1
        config.overlay(json.dumps({"model": {"pad_token_id": self.pad_id}}))
        self.model = og.Model(config)
        self.tokenizer = tokenizer
        self.generation_defaults = generation_defaults
        # One vocabulary with the torch engine: the numbers the weights run in.
        self.precision = "float32" if precision == "fp32" else precision
        self.dtype = "float32" if precision == "fp32" else precision
        self.context_length = genai["model"].get("context_length")
        decoder = genai["model"].get("decoder", {})
        # bytes of K and V per token, fp32 (the KV cache of the CPU exports, int4 too)
        self.kv_bytes_per_token = (
            2
            * 4
            * (
                decoder.get("num_hidden_layers", 0)
                * decoder.get("num_key_value_heads", decoder.get("num_attention_heads", 0))
                * decoder.get("head_size", 0)
            )
        )
        self.prefix_cache = PrefixCache()
        """Generators of recent greedy sequences (engines.prefix_cache), rewound to the prefix a new
        prompt shares with one and given the rest: a conversation's next turn runs only its new tokens."""

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
        """New token ids one at a time; stopping early is just not asking for the next one.

        A greedy request runs on a kept generator when one holds a prefix of its prompt (rewound to that
        prefix, the rest appended: the same tokens as a fresh generator, tested), and its generator is kept
        for the next. Sampling always starts a fresh generator: its random state is the seed's."""
        ids = prompt_ids
        options: dict[str, Any] = {"do_sample": bool(config.do_sample)}
        if config.do_sample:
            options.update(
                temperature=float(config.temperature or 1.0),
                top_k=int(config.top_k or 0),
                top_p=float(config.top_p if config.top_p is not None else 1.0),
                random_seed=int(seed % 2**31),
            )
        if config.repetition_penalty not in (None, 1.0):
            options["repetition_penalty"] = float(config.repetition_penalty)
        end = len(ids) + config.max_new_tokens
        if self.context_length:
            end = min(end, self.context_length)
        keep = not config.do_sample and self.prefix_cache.budget > 0 and self.kv_bytes_per_token > 0
        kind = tuple(sorted(options.items()))
        generator, room = None, end
        hit = self.prefix_cache.find(ids, kind) if keep else None
        if hit is not None:
            entry, shared = hit
            # The last token of a kept sequence has not run yet: rewinding to it and appending from it runs
            # it (appending after it gave other tokens than a fresh generator). A generator is claimed only
            # by a prompt that goes on with most of it (the next turn), not by one that shares its start.
            shared = min(shared, len(entry.ids) - 1)
            if entry.state[1] >= end and 2 * shared >= len(entry.ids) and self.prefix_cache.claim(entry):
                generator, room = entry.state
        if generator is not None:
            generator.rewind_to(shared)
            generator.append_tokens(ids[shared:])
        if generator is None:
            if keep:  # room for the turns that follow, within the context
                room = max(end, min(end + HEADROOM, self.context_length or end))
            params = self.og.GeneratorParams(self.model)
            params.set_search_options(max_length=room, **options)
            generator = self.og.Generator(self.model, params)
            generator.append_tokens(ids)
        made = 0
        try:
            while made < config.max_new_tokens and not generator.is_done():
                generator.generate_next_token()
                made += 1
                yield [int(generator.get_next_tokens()[0])]
        except GeneratorExit:  # the reader stopped: the generator still holds what ran
            raise
        except BaseException:
            keep = False
            raise
        finally:
            if keep:
                sequence = [int(t) for t in generator.get_sequence(0)]
                self.prefix_cache.put(sequence, (generator, room), room * self.kv_bytes_per_token, kind)

    def batch_fits(self, prompts: list[list[int]], settings: Sampling) -> bool:
        """Whether `tokens_batch` gives each of these prompts its solo tokens: none holds the pad id, and the
        longest with max_new_tokens fits the context (the batch's length limit is the longest row's)."""
        longest = max(len(p) for p in prompts)
        fits = not self.context_length or longest + settings.max_new_tokens <= self.context_length
        return fits and not any(self.pad_id in p for p in prompts)

    def tokens_batch(
        self, prompts: list[list[int]], settings: Sampling, wanted: Callable[[], list[bool]]
    ) -> Iterator[list[int]]:
        """Greedy decoding of several prompts in one onnxruntime-genai batch: per step, one new token id per
        row; generation ends when no row is wanted (see text_torch.tokens_batch).

        Rows are padded on the right with pad_id, which onnxruntime-genai masks: its attention
        (GroupQueryAttention) reads each row's length from the mask and keeps right-padded rows apart, and
        each row's greedy tokens equal its solo run's (tested, 8 prompts of different lengths). Left padding,
        as transformers pads, does not: GroupQueryAttention takes a row's valid keys to start at 0, so
        left-padded rows attended to their pads and their tokens drifted from their solo runs (and the pad
        id, the end token, masked the prompts' own end tokens). Check `batch_fits` first."""
        import numpy as np

        if settings.do_sample or settings.repetition_penalty not in (None, 1.0):
            raise ValueError("tokens_batch runs greedy settings without a repetition penalty only")
        longest = max(len(p) for p in prompts)
        ids = np.array([list(p) + [self.pad_id] * (longest - len(p)) for p in prompts], dtype=np.int32)
        end = longest + settings.max_new_tokens
        if self.context_length:
            end = min(end, self.context_length)
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=end, do_sample=False, batch_size=len(prompts))
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids)
        while not generator.is_done() and any(wanted()):
            generator.generate_next_token()
            yield [int(t) for t in generator.get_next_tokens()]
