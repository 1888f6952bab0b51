"""engines.tokenizer (the `tokenizers` library and a Jinja chat template, no transformers) against
transformers' own tokenizer: the same prompt token ids, the same text back."""

from __future__ import annotations

import pytest

from aigc_cli.engines.tokenizer import FastTokenizer, TransformersTokenizer

MESSAGES = [
    [{"role": "user", "content": "Write a haiku about rain"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write a haiku about rain"}],
    [{"role": "user", "content": "Café, naïve, déjà vu: ünïcödé 日本 🙂\n  with spaces  "}],
]


def pair(folder):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(folder)
    return FastTokenizer(folder), reference


def assert_same(fast, reference):
    """Chat template with and without a system message, non-ASCII text, raw prompts, decoding."""
    if reference.chat_template:
        assert fast.chat_template == reference.chat_template
        for messages in MESSAGES:
            expected = reference.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
            assert fast.encode_chat(messages) == list(expected["input_ids"]), messages
            assert fast.encode_chat(messages) == TransformersTokenizer(reference).encode_chat(messages)
    else:
        assert fast.chat_template is None
    for text in ("Write a haiku about rain", "Café 日本 🙂", " leading space", "<|im_end|> as text"):
        ids = reference(text)["input_ids"]
        assert fast.encode(text) == list(ids), text
        with_specials = [*ids, *reference.all_special_ids[:1]]
        assert fast.decode(with_specials) == reference.decode(
            with_specials, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_same_ids_as_transformers_on_the_tiny_models(tiny, kind):
    assert_same(*pair(tiny[kind]))


def test_a_template_that_raises_says_why(tiny, tmp_path):
    """Templates call raise_exception for conversations they refuse (jinja's TemplateError): a UsageError
    naming the template's rule, param `messages` for an API client."""
    import shutil

    from aigc_cli.errors import UsageError

    folder = tmp_path / "strict"
    shutil.copytree(tiny["llama"], folder)
    template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}x"
    (folder / "chat_template.jinja").write_text(template)
    with pytest.raises(UsageError, match="chat template refuses this conversation: no system role") as raised:
        FastTokenizer(folder).encode_chat(MESSAGES[1])
    assert raised.value.param == "messages"
