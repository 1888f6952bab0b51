"""The core as a library (aigc_cli/core): prepare -> Job, run -> events. In-process, so these also catch
state that leaks from one request to the next on one engine."""

from __future__ import annotations

from dataclasses import replace

import pytest

from aigc_cli.core import MODALITIES
from aigc_cli.core.events import ImageStep, Notice, Reporter, Result, SeedChosen, TextDelta
from aigc_cli.pool import EnginePool
from aigc_cli.settings import resolve_settings


def test_text_events_seed_and_notices(tiny):
    pool = EnginePool()
    reporter = Reporter()
    flags = {"model": str(tiny["llama"]), "max_tokens": 100000, "temperature": 0.9, "count": 2}
    job = MODALITIES["text"].prepare(resolve_settings("text", flags), "Write a poem", reporter, pool)
    (seed,) = [e for e in reporter.events if isinstance(e, SeedChosen)]
    assert seed.drawn and seed.matters and job.request.seed == seed.seed and job.seed_drawn
    (capped,) = [e for e in reporter.notices() if e.level == "warning"]
    assert capped.code == "max_tokens_capped" and capped.message.startswith("--max-tokens 100000 capped to")
    assert capped.settings == ("max_tokens",)

    # The run's checks hold at any length: 24 tokens a completion, not the capped ~500 (four of them: 20 s)
    job = replace(job, request=replace(job.request, max_tokens=24))
    events = list(MODALITIES["text"].run(job, pool.get(job.key)))
    results = [e for e in events if isinstance(e, Result)]
    assert [r.record["seed"] for r in results] == [seed.seed, seed.seed + 1]
    for result in results:  # the deltas of a completion make its text
        text = "".join(e.text for e in events if isinstance(e, TextDelta) and e.index == result.index)
        assert text == result.payload.text == result.record["text"]
    again = list(MODALITIES["text"].run(job, pool.get(job.key)))  # nothing leaks between runs
    assert [r.record["text"] for r in again if isinstance(r, Result)] == [r.record["text"] for r in results]


def test_notices_name_the_setting_by_its_source(tiny, monkeypatch, tmp_path):
    pool = EnginePool()
    from_api = resolve_settings(
        "text", {"model": str(tiny["llama"]), "max_tokens": 100000}, given_in="request"
    )
    reporter = Reporter()
    MODALITIES["text"].prepare(from_api, "hi", reporter, pool)
    assert reporter.notices()[-1].message.startswith("field 'max_tokens' 100000 capped")
    home = tmp_path / "aigc-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text("[text]\nmax_tokens = 100000\n")
    reporter = Reporter()
    MODALITIES["text"].prepare(resolve_settings("text", {"model": str(tiny["llama"])}), "hi", reporter, pool)
    warning = next(n for n in reporter.notices() if n.level == "warning")
    assert warning.message.startswith(f"[text] max_tokens in {home / 'config.toml'} 100000 capped")


def test_greedy_text_has_no_seed_that_matters(tiny):
    reporter = Reporter()
    flags = {"model": str(tiny["llama"]), "temperature": 0.0, "seed": 4}
    MODALITIES["text"].prepare(resolve_settings("text", flags), "hi", reporter, EnginePool())
    (seed,) = [e for e in reporter.events if isinstance(e, SeedChosen)]
    assert (seed.seed, seed.drawn, seed.matters) == (4, False, False)


def test_seed_checks_name_the_fields():
    from aigc_cli.core.seeds import check_seeds
    from aigc_cli.errors import UsageError

    with pytest.raises(UsageError, match=r"^--seed 4294967295 with -n 2 needs seeds up to 4294967296"):
        check_seeds(resolve_settings("image", {"seed": 2**32 - 1, "count": 2}), "image")
    api = resolve_settings("image", {"seed": 2**32 - 1, "count": 2}, given_in="request")
    with pytest.raises(UsageError, match=r"^field 'seed' 4294967295 with field 'n' 2 needs"):
        check_seeds(api, "image")


def test_image_steps_results_and_truncation(pipes):
    pool = EnginePool()
    reporter = Reporter()
    flags = {"model": str(pipes["sd"]), "steps": 3, "width": 64, "height": 64, "count": 2, "seed": 11}
    job = MODALITIES["image"].prepare(resolve_settings("image", flags), "word " * 120, reporter, pool)
    (cut,) = [n for n in reporter.notices() if n.level == "warning"]
    assert cut.code == "prompt_truncated" and "text encoder reads" in cut.message
    events = list(MODALITIES["image"].run(job, pool.get(job.key)))
    steps = [(e.index, e.step) for e in events if isinstance(e, ImageStep)]
    assert steps == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    results = [e for e in events if isinstance(e, Result)]
    assert [r.record["seed"] for r in results] == [11, 12] and results[0].payload.size == (64, 64)
    # Closing the iterator early stops the pipeline; the engine then runs the next job as a fresh one would.
    partial = MODALITIES["image"].run(job, pool.get(job.key))
    next(partial)
    partial.close()
    again = [e for e in MODALITIES["image"].run(job, pool.get(job.key)) if isinstance(e, Result)]
    assert [r.payload.tobytes() for r in again] == [r.payload.tobytes() for r in results]


def test_speech_chunks_and_cleaned_text(vits):
    pool = EnginePool()
    reporter = Reporter()
    resolved = resolve_settings("speech", {"model": str(vits), "seed": 2})
    job = MODALITIES["speech"].prepare(resolved, "Hello there.\x00 How are you?", reporter, pool)
    assert any(n.code == "text_cleaned" for n in reporter.notices())
    assert "\x00" not in job.request.text
    events = list(MODALITIES["speech"].run(job, pool.get(job.key)))
    (result,) = [e for e in events if isinstance(e, Result)]
    assert (
        len(events) == 3 and result.timings["duration"] == len(result.payload) / result.record["sample_rate"]
    )


def test_the_core_never_prints(tiny, capfd):
    reporter = Reporter()
    job = MODALITIES["text"].prepare(
        resolve_settings("text", {"model": str(tiny["llama"]), "max_tokens": 4}), "hi", reporter, EnginePool()
    )
    assert isinstance(reporter.events[0], Notice) and job.count == 1
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
