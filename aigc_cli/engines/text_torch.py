"""The text reference: transformers' `model.generate`, run in a worker thread that streams token ids."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import EngineKey


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


_DONE = object()


class TorchTextEngine:
    """The reference: transformers' `model.generate`, run in a worker thread that streams token ids."""

    backend = "torch"

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        from ..device import dtype_name

        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.base_config = model.generation_config
        self.dtype = self.precision = dtype_name(model.dtype)
        config = model.config
        self.context_length = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )

    @classmethod
    def load(cls, key: EngineKey) -> TorchTextEngine:
        from ..device import torch_dtype
        from ..loading import load_causal_lm

        model, tokenizer = load_causal_lm(
            Path(key.folder), key.device, torch_dtype(key.dtype), bool(key.option("trust_remote_code"))
        )
        return cls(model, tokenizer, key.device)

    def tokens(self, inputs: dict[str, Any], config: Any, seed: int) -> Iterator[list[int]]:
        """New token ids as they come. Closing the iterator stops generation at the next token."""
        import transformers
        from transformers import StoppingCriteriaList

        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        sink: queue.Queue = queue.Queue()
        finished = threading.Event()

        def work() -> None:
            try:
                transformers.set_seed(seed)
                self.model.generate(
                    **inputs,
                    generation_config=config,
                    streamer=_QueueStreamer(sink),
                    stopping_criteria=StoppingCriteriaList([_StopWhen(finished)]),
                )
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
