"""Engines: the table (modality, backend) -> engine class, and loading one from its key.

A new backend is one module here and one row of ENGINES. Modules are imported only when their engine loads.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import EngineKey

ENGINES: dict[tuple[str, str], str] = {
    ("text", "torch"): "text_torch:TorchTextEngine",
    ("text", "onnx"): "text_onnx:OnnxTextEngine",
    ("image", "torch"): "image_diffusers:DiffusersEngine",
    ("image", "openvino"): "image_openvino:OpenVinoImageEngine",
    ("speech", "piper"): "speech_piper:PiperEngine",
    ("speech", "transformers"): "speech_transformers:TransformersSpeechEngine",
}


def backends(modality: str) -> tuple[str, ...]:
    """The backends the table has for a modality, in table order."""
    return tuple(backend for each, backend in ENGINES if each == modality)


def engine_class(modality: str, backend: str) -> type:
    """The class of the table's row; KeyError for a pair the table does not have."""
    module, _, name = ENGINES[(modality, backend)].partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def load_engine(key: EngineKey) -> Any:
    """A loaded engine for the key (slow: reads weights). Every engine class has `load(key)`."""
    return engine_class(key.modality, key.backend).load(key)


__all__ = ["ENGINES", "EngineKey", "backends", "engine_class", "load_engine"]
