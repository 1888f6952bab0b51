"""The text reference: transformers' `model.generate`, run in a worker thread that streams token ids."""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .base import EngineKey
from .prefix_cache import PrefixCache
from .text import Sampling


class _QueueStreamer:
    """transformers streamer protocol: put(tokens) per step (the prompt first), end() at the end."""

    def __init__(self, sink: queue.Queue) -> None:
        self.sink = sink
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.sink.put(value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class _StopWhen:
    """A stopping criterion that ends generation once the consumer is done (stop string, closed pipe)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _StopRows:
    """A stopping criterion per row: a row ends once its consumer no longer wants it; all rows end once
    the consumer of the whole batch is done."""

    def __init__(self, wanted: Callable[[], list[bool]], event: threading.Event) -> None:
        self.wanted = wanted
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        rows = [not w or self.event.is_set() for w in self.wanted()]
        return torch.tensor(rows, dtype=torch.bool, device=input_ids.device)


_DONE = object()


class TorchTextEngine:
    """The reference: transformers' `model.generate`, run in a worker thread that streams token ids."""

    backend = "torch"

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        from ..device import dtype_name
        from .tokenizer import TransformersTokenizer

        self.model = model
        self.tokenizer = TransformersTokenizer(tokenizer)
        self.device = device
        own = model.generation_config
        self.generation_defaults = {
            key: getattr(own, key, None)
            for key in ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "eos_token_id")
        }
        self.dtype = self.precision = dtype_name(model.dtype)
        config = model.config
        self.context_length = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        self.prefix_cache = PrefixCache()
        """The KV caches of recent sequences (engines.prefix_cache): a prompt that starts as one of them did
        runs only its new tokens."""

    @classmethod
    def load(cls, key: EngineKey) -> TorchTextEngine:
        from ..device import torch_dtype
        from ..loading import load_causal_lm

        model, tokenizer = load_causal_lm(
            Path(key.folder), key.device, torch_dtype(key.dtype), bool(key.option("trust_remote_code"))
        )
        return cls(model, tokenizer, key.device)

    def generation_config(self, settings: Sampling) -> Any:
        """The model's own GenerationConfig with the settings that run on top."""
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = settings.max_new_tokens
        config.max_length = None
        config.do_sample = settings.do_sample
        # Greedy clears temperature, top_k and top_p (None): they do not apply, and transformers warns.
        config.temperature, config.top_k, config.top_p = settings.temperature, settings.top_k, settings.top_p
        config.repetition_penalty = settings.repetition_penalty
        if config.pad_token_id is None and config.eos_token_id is not None:
            eos = config.eos_token_id
            config.pad_token_id = eos[0] if isinstance(eos, list) else eos
        return config

    def tokens(self, prompt_ids: list[int], settings: Sampling, seed: int) -> Iterator[list[int]]:
        """New token ids as they come. Closing the iterator stops generation at the next token."""
        import torch

        input_ids = torch.tensor([prompt_ids], device=self.model.device)
        finished = threading.Event()
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        cache, parent = self._cache_for(prompt_ids)
        if cache is not None:
            inputs["cache"] = cache
        return self._stream(inputs, settings, seed, _StopWhen(finished), finished, parent)

    def _cache_for(self, prompt_ids: list[int]) -> tuple[Any, Any]:
        """A transformers DynamicCache for this prompt, holding the longest prefix it shares with a kept one
        (generate then runs only the rest of the prompt; the kept one stays as it was). None where the model's
        cache is not a plain DynamicCache (sliding windows, linear attention, a static cache: their states
        cannot be cut back to a prefix) or reuse is off: generate makes its own, as before. With it, the kept
        entry this one goes on with (most of it shared: the conversation's previous turn), to replace."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        if self.prefix_cache.budget <= 0 or self.model.generation_config.cache_implementation is not None:
            return None, None
        try:
            cache = DynamicCache(config=self.model.config)
        except Exception:  # a config DynamicCache cannot read: generate's own cache, no reuse
            return None, None
        if not all(type(layer) is DynamicLayer for layer in cache.layers):
            return None, None
        hit = self.prefix_cache.find(prompt_ids)
        if hit is not None:  # the kept prefix as views: DynamicLayer.update concatenates into new tensors
            entry, keep = hit
            for layer, kept in zip(cache.layers, entry.state.layers, strict=True):
                if getattr(kept, "is_initialized", False):
                    layer.lazy_initialization(kept.keys, kept.values)
                    layer.keys = kept.keys[..., :keep, :]
                    layer.values = kept.values[..., :keep, :]
            return cache, entry if 2 * keep >= len(entry.ids) else None
        return cache, None

    def _keep(self, cache: Any, sequence: list[int], parent: Any) -> None:
        """Put the cache in the store with the tokens it holds (the last token generated has none), in place
        of the entry it went on with."""
        if parent is not None:
            self.prefix_cache.claim(parent)
        held = cache.get_seq_length()
        nbytes = sum(
            t.numel() * t.element_size()
            for layer in cache.layers
            for t in (layer.keys, layer.values)
            if getattr(layer, "is_initialized", False) and t is not None
        )
        self.prefix_cache.put(sequence[:held], cache, nbytes)

    def tokens_batch(
        self, prompts: list[list[int]], settings: Sampling, wanted: Callable[[], list[bool]]
    ) -> Iterator[list[int]]:
        """Greedy decoding of several prompts in one batch: per step, one new token id per row.

        The prompts are left-padded with the pad token and masked out (transformers derives each row's
        positions from its attention mask), so that each row's greedy tokens equal its solo run's (tested).
        Only for greedy settings without a repetition penalty (the penalty would count the pad tokens).
        A row runs on, padded, after its end-of-sequence token; `wanted()` tells, per row, whether its
        consumer still reads it: a row no longer wanted stops, and generation ends when no row is wanted.
        """
        import torch

        if settings.do_sample or settings.repetition_penalty not in (None, 1.0):
            raise ValueError("tokens_batch runs greedy settings without a repetition penalty only")
        config = self.generation_config(settings)
        longest = max(len(p) for p in prompts)
        pad = config.pad_token_id if config.pad_token_id is not None else 0
        ids = [[pad] * (longest - len(p)) + list(p) for p in prompts]
        mask = [[0] * (longest - len(p)) + [1] * len(p) for p in prompts]
        device = self.model.device
        inputs = {
            "input_ids": torch.tensor(ids, device=device),
            "attention_mask": torch.tensor(mask, device=device),
        }
        finished = threading.Event()
        return self._stream(inputs, settings, 0, _StopRows(wanted, finished), finished)

    def _stream(
        self,
        inputs: dict[str, Any],
        settings: Sampling,
        seed: int,
        stop: Any,
        finished: threading.Event,
        parent: Any = None,
    ) -> Iterator[list[int]]:
        """Run generate in a worker thread; yield each step's new token ids (one per row) as they come."""
        import transformers
        from transformers import StoppingCriteriaList

        config = self.generation_config(settings)
        sink: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                transformers.set_seed(seed)
                out = self.model.generate(
                    **inputs,
                    generation_config=config,
                    streamer=_QueueStreamer(sink),
                    stopping_criteria=StoppingCriteriaList([stop]),
                )
                if "cache" in inputs:
                    self._keep(inputs["cache"], getattr(out, "sequences", out)[0].tolist(), parent)
                sink.put(_DONE)
            except BaseException as exc:  # handed to the consumer, which raises it
                sink.put(exc)

        worker = threading.Thread(target=work, name="aigc-generate", daemon=True)
        worker.start()
        try:
            while (item := sink.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            finished.set()
            worker.join(timeout=10)
