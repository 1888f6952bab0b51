"""Kept KV states (engines.prefix_cache) are invisible in results: each turn of a conversation, greedy, gives
the same tokens with the kept state as without it, on both backends; with a chat template that renders
earlier turns differently once the conversation goes on; after eviction; with requests running at once. And
the onnx engine's batches (the server's concurrent greedy requests) equal solo runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading

import pytest
from readers import read_together
from tiny_models import CHATML

from aigc_cli.engines import EngineKey, load_engine
from aigc_cli.engines.prefix_cache import PrefixCache, common_prefix
from aigc_cli.engines.text import TextRequest, generate_text

HAS_ONNX = importlib.util.find_spec("onnxruntime_genai") is not None

# Earlier user turns are shown shortened once a later one follows: the next turn's prompt differs from the
# previous one inside the history, not only at its end (as templates that drop earlier reasoning do).
RERENDER = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'user' and not loop.last %}{{ message['content'][:12] }}"
    "{% else %}{{ message['content'] }}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
USER_TURNS = [
    "Write a haiku about rain",
    "The quick brown fox jumps over the lazy dog.",
    "A lighthouse stands at dusk",
    "Numbers: one, two, three",
]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rerender(tiny, tmp_path_factory):
    """The tiny chat Llama with the RERENDER template."""
    folder = tmp_path_factory.mktemp("rerender") / "tiny-llama-rerender"
    shutil.copytree(tiny["llama"], folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config))
    (folder / "chat_template.jinja").write_text(RERENDER)
    assert CHATML != RERENDER
    return folder


@pytest.fixture(scope="module")
def onnx_export(tiny, tmp_path_factory):
    """The fp32 ONNX export of the tiny Llama (the model builder's own process, once per module)."""
    from aigc_cli.engines.onnx_export import _export

    out = tmp_path_factory.mktemp("onnx-cache") / "export"
    _export(tiny["llama"], "fp32", out)
    return out


def engine_for(backend: str, folder, export=None, budget: int | None = None):
    if backend == "torch":
        engine = load_engine(EngineKey("text", str(folder), "cpu", "float32", "torch"))
    else:
        options = (("export", str(export)), ("precision", "fp32"))
        engine = load_engine(EngineKey("text", str(folder), "cpu", "float32", "onnx", options))
    if budget is not None:
        engine.prefix_cache = PrefixCache(budget)
    return engine


def converse(engine, turns: list[str], system: str | None = None, max_tokens: int = 10) -> list[tuple]:
    """A greedy conversation: each reply goes into the history of the next turn. Per turn: (text,
    completion tokens, finish reason)."""
    history: list[tuple[str, str]] = []
    replies = []
    for turn in turns:
        history.append(("user", turn))
        request = TextRequest(
            turn, seed=0, max_tokens=max_tokens, temperature=0, messages=tuple(history), system=system
        )
        completion = generate_text(engine, request)
        replies.append((completion.text, completion.completion_tokens, completion.finish_reason))
        history.append(("assistant", completion.text))
    return replies


def backends():
    return [
        "torch",
        pytest.param("onnx", marks=pytest.mark.skipif(not HAS_ONNX, reason="no onnxruntime-genai")),
    ]


def folders(backend, tiny, rerender, request):
    export = request.getfixturevalue("onnx_export") if backend == "onnx" else None
    return export


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("template", ["chatml", "rerender"])
def test_turns_equal_without_the_kept_state(tiny, rerender, backend, template, request):
    folder = tiny["llama"] if template == "chatml" else rerender
    export = folders(backend, tiny, rerender, request)
    plain = converse(engine_for(backend, folder, export, budget=0), USER_TURNS, system="Be brief.")
    cached_engine = engine_for(backend, folder, export)
    cached = converse(cached_engine, USER_TURNS, system="Be brief.")
    assert cached == plain
    assert cached_engine.prefix_cache.hits == len(USER_TURNS) - 1  # every later turn reused the one before
    assert len(cached_engine.prefix_cache) == 1


@pytest.mark.parametrize("backend", backends())
def test_eviction_and_interleaved_conversations(tiny, backend, request):
    """Two conversations in turn on one engine whose store holds one of them: each turn evicts the other's
    state, and every reply equals the one without a store."""
    export = folders(backend, tiny, None, request)
    a_turns, b_turns = USER_TURNS, list(reversed(USER_TURNS))
    plain = engine_for(backend, tiny["llama"], export, budget=0)
    expected = (converse(plain, a_turns), converse(plain, b_turns, system="Answer in French."))
    engine = engine_for(backend, tiny["llama"], export)
    probe = converse(engine, a_turns[:1])  # one conversation's state: the budget holds one such and a bit
    assert probe == expected[0][:1]
    size = engine.prefix_cache.nbytes
    engine.prefix_cache = PrefixCache(int(size * 2.5))
    got: tuple[list, list] = ([], [])
    histories: tuple[list, list] = ([], [])
    for index in range(len(a_turns)):
        for which, (turns, system) in enumerate([(a_turns, None), (b_turns, "Answer in French.")]):
            histories[which].append(("user", turns[index]))
            completion = generate_text(
                engine,
                TextRequest(
                    turns[index],
                    seed=0,
                    max_tokens=10,
                    temperature=0,
                    messages=tuple(histories[which]),
                    system=system,
                ),
            )
            got[which].append((completion.text, completion.completion_tokens, completion.finish_reason))
            histories[which].append(("assistant", completion.text))
            assert engine.prefix_cache.nbytes <= engine.prefix_cache.budget
    assert got == expected


@pytest.mark.parametrize("backend", backends())
def test_concurrent_conversations_share_one_engine(tiny, backend, request):
    """Four conversations at once on one engine, all starting with the same turn (they race for the same
    kept states): each equals its run alone without a store."""
    export = folders(backend, tiny, None, request)
    conversations = [[USER_TURNS[0], USER_TURNS[1 + i % 3], USER_TURNS[(2 + i) % 4]] for i in range(4)]
    plain = engine_for(backend, tiny["llama"], export, budget=0)
    expected = [converse(plain, turns) for turns in conversations]
    engine = engine_for(backend, tiny["llama"], export)
    got: list = [None] * len(conversations)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            got[index] = converse(engine, conversations[index])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conversations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and got == expected
    assert engine.prefix_cache.hits > 0


def test_store_finds_the_longest_prefix_and_evicts_the_oldest():
    store = PrefixCache(100)
    store.put([1, 2, 3], "abc", 40)
    store.put([1, 2, 9, 9], "ab99", 40)
    assert common_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    entry, keep = store.find([1, 2, 3, 4])
    assert entry.state == "abc" and keep == 3 and len(store) == 2
    assert store.claim(entry) and not store.claim(entry) and len(store) == 1
    entry, keep = store.find([1, 2, 9])  # one token is always left to run
    assert entry.state == "ab99" and keep == 2
    assert store.find([7, 8]) is None and store.find([1, 2, 9], kind="other") is None
    store.put([1, 2, 9, 9, 5], "extends", 40)  # in place of the entry it extends
    assert len(store) == 1 and store.find([1, 2, 9, 9, 5, 6])[0].state == "extends"
    for i in range(4):
        store.put([i, i], i, 40)
    assert len(store) == 2 and store.nbytes == 80 and store.find([0, 0, 1]) is None
    store.put([5], "big", 101)
    assert store.find([5, 6]) is None
    assert PrefixCache(0).find([1, 2]) is None


@pytest.mark.skipif(not HAS_ONNX, reason="no onnxruntime-genai")
def test_onnx_batched_rows_equal_solo_runs(tiny, onnx_export):
    """The server's batching on the onnx engine (tokens_batch, right-padded): 8 requests at once, prompts of
    different lengths and rows of different max_tokens, one read only in part: each equals its solo run."""
    from aigc_cli.engines.text import sampling
    from aigc_cli.pool import EnginePool
    from aigc_cli.server.batching import BatchedView, TextBatcher

    options = (("export", str(onnx_export)), ("precision", "fp32"))
    key = EngineKey("text", str(tiny["llama"]), "cpu", "float32", "onnx", options)
    pool = EnginePool()
    engine = pool.get(key)
    prompts = [turn[: 4 + 5 * i] for i, turn in enumerate(USER_TURNS * 2)]
    requests = [
        TextRequest(p, seed=0, max_tokens=6 + 2 * i, temperature=0, system="Be brief." if i % 3 else None)
        for i, p in enumerate(prompts)
    ]
    solo = [generate_text(engine, r).text for r in requests]
    settings = sampling(engine.generation_defaults, requests[0])
    assert not engine.batch_fits([[1, 2], [engine.pad_id, 3]], settings)
    engine.prefix_cache = PrefixCache(0)  # rows alone in a batch run solo: here they share batches only
    batcher = TextBatcher(pool, key)
    view = BatchedView(engine, batcher)
    results = read_together(view, requests, leaver=7)  # a reader that goes away after a few tokens
    batcher.stop()
    assert [results[i] for i in range(7)] == solo[:7]
    assert solo[7].startswith(results[7])
    assert max(batcher.batches) > 1
