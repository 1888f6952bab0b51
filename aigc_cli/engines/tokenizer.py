"""A model's tokenizer without transformers: the `tokenizers` library for tokenizer.json, and the chat
template rendered in the Jinja environment transformers renders it in, so that the token ids equal
`AutoTokenizer.from_pretrained(folder).apply_chat_template(messages, add_generation_prompt=True)`.

Importing transformers costs seconds even without torch; the onnx text path runs on this instead.
The Jinja environment follows transformers' `utils/chat_template_utils.py` (Apache-2.0): a sandboxed,
immutable environment with trim_blocks and lstrip_blocks, the loopcontrols extension, a `tojson` that
does not escape HTML, and the globals `raise_exception`, `strftime_now`, `dict` and `namespace`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import UsageError

SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


class FastTokenizer:
    """Encode, decode and the chat template of a folder with a tokenizer.json (all fast tokenizers)."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = _read(folder / "tokenizer_config.json")
        template_file = folder / "chat_template.jinja"
        template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None
        self.chat_template: str | None = template or config.get("chat_template") or None
        if isinstance(self.chat_template, list):  # named templates: the default one
            named = {t.get("name"): t.get("template") for t in self.chat_template}
            self.chat_template = named.get("default")
        specials = {**_read(folder / "special_tokens_map.json"), **config}
        self.special_tokens = {
            name: value.get("content") if isinstance(value, dict) else value
            for name in SPECIAL_TOKEN_NAMES
            if (value := specials.get(name)) is not None
        }

    def encode(self, text: str) -> list[int]:
        """As `tokenizer(text)["input_ids"]`: the tokenizer's own special tokens added (a BOS, say)."""
        return self.backend.encode(text, add_special_tokens=True).ids

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """As `apply_chat_template(messages, add_generation_prompt=True)`: rendered, then encoded with no
        special tokens added (the template writes them)."""
        assert self.chat_template is not None
        with template_refusals():
            rendered = _compile(self.chat_template).render(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=True,
                **self.special_tokens,
            )
        return self.backend.encode(rendered, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """As `tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)`."""
        return self.backend.decode(ids, skip_special_tokens=True)


class TransformersTokenizer:
    """The same three operations on a transformers tokenizer (the torch engine's, the reference)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.chat_template: str | None = getattr(tokenizer, "chat_template", None) or None

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        with template_refusals():
            out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        return list(out["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


@contextmanager
def template_refusals() -> Iterator[None]:
    """A chat template that raises (`raise_exception(...)` in Jinja: roles must alternate, no system role,
    a conversation without a user turn) as a UsageError naming the conversation and the template's own
    rule (param `messages` for an API client), not Jinja's TemplateError."""
    import jinja2

    try:
        yield
    except jinja2.exceptions.TemplateError as exc:
        rule = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"The model's chat template refuses this conversation: {rule}",
            param="messages",
            code="invalid_value",
        ) from None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    from datetime import datetime

    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` (assistant-mask markers): rendered as their body."""

        tags = {"generation"}  # noqa: RUF012 (jinja's own class attribute)

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: Any = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    class TemplateNamespace(jinja2.utils.Namespace):
        def __setitem__(self, name: str, value: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")
            super().__setitem__(name, value)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols]
    )
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    environment.globals["dict"] = lambda *args, **kwargs: dict(*args, **kwargs)
    environment.globals["namespace"] = TemplateNamespace
    return environment.from_string(template)
