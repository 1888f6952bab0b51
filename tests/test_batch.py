"""`aigc batch` through real processes, as a user runs it: each result equals the single `aigc text|image|speak`
run with the same settings and seed; results in job order; a bad job fails alone; resume; stdin and stdout;
Ctrl-C; and the same jobs on Ray Data."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import AIGC, isolate
from inproc import run_cli
from PIL import Image

SMALL_IMAGE = ["--steps", "2", "--width", "64", "--height", "64"]
TIMINGS = {
    "seconds",
    "time_to_first_token",
    "tokens_per_second",
    "real_time_factor",
    "step_seconds",
    "decode_seconds",
    "path",
}
TEXT_JOBS = [  # id, prompt, model, temperature, seed: greedy jobs of one model share batches, sampled run alone
    ("story", "Tell me a story", "llama", 0, None),
    ("hello", "Hello there, how are you today? Say it.", "llama", 0, None),
    ("sea", "Write one line about the sea", "llama", 0, None),
    ("sampled", "Tell me a story", "llama", 0.9, 5),
    ("gpt2", "Once upon a time", "gpt2", 0, None),
]
NOT_JSON = '{"prompt": "Hi",}'
SUMMARY = re.compile(
    r"aigc: (?P<jobs>\d+) jobs?: (?P<ok>\d+) ok, (?P<failed>\d+) failed"
    r"(?:, (?P<skipped>\d+) skipped \(done in (?P<results>.+)\))?, in \d+\.\d s"
)


def batch(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return run_cli("batch", *args, input=input)


def single(*args: str) -> dict:
    """The `--json` line of a single run that must succeed."""
    result = run_cli(*args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    (line,) = result.stdout.decode().splitlines()
    return json.loads(line)


def records(data: bytes | str | Path) -> list[dict]:
    """Result lines (each must be a whole JSON object)."""
    if isinstance(data, Path):
        data = data.read_bytes()
    if isinstance(data, bytes):
        data = data.decode()
    return [json.loads(line) for line in data.splitlines()]


def untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMINGS}


def summary(result: subprocess.CompletedProcess) -> dict:
    """The one line on stderr, parsed: jobs, ok, failed, skipped (None when nothing was skipped)."""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, result.stderr.decode()
    found = SUMMARY.fullmatch(lines[0])
    assert found, lines[0]
    return {k: v if k == "results" or v is None else int(v) for k, v in found.groupdict().items()}


def json_error(line: str) -> str:
    try:
        json.loads(line + "\n")
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"{line!r} is JSON")


def jsonl(jobs: list[dict | str]) -> str:
    """A job file: each job a JSON line (a string: that line as it is)."""
    return "".join((j if isinstance(j, str) else json.dumps(j)) + "\n" for j in jobs)


def write_jobs(path: Path, jobs: list[dict | str]) -> Path:
    path.write_text(jsonl(jobs))
    return path


def as_run_alone(record: dict, alone: dict) -> None:
    """A batch result is the single run's `--json` line with id, task and status first (timings aside)."""
    assert record["status"] == "ok", record
    assert list(record)[:3] == ["id", "task", "status"]
    assert list(record)[3:] == list(alone)
    assert untimed(record) == {"id": record["id"], "task": record["task"], "status": "ok", **untimed(alone)}


# --- one job file of every kind: the local engine against single runs (and, below, against Ray) ------------


@pytest.fixture(scope="module")
def main_batch(tiny, pipes, vits, tmp_path_factory):
    """The jobs of every kind, run once by the local engine, and each good one run alone by its command, in
    an isolated home and folder (as conftest's `isolated` makes for a test)."""
    folder = tmp_path_factory.mktemp("main-batch")
    models = {"llama": str(tiny["llama"]), "gpt2": str(tiny["gpt2"])}
    sd = str(pipes["sd"])
    jobs = [
        {
            "id": job_id,
            "task": "text",
            "prompt": prompt,
            "model": models[model],
            "max_tokens": 8,
            "temperature": temperature,
            **({"seed": seed} if seed is not None else {}),
        }
        for job_id, prompt, model, temperature, seed in TEXT_JOBS
    ]
    jobs += [
        {
            "id": "fox",
            "task": "image",
            "prompt": "a red fox",
            "model": sd,
            "steps": 2,
            "width": 64,
            "height": 64,
            "seed": 7,
            "negative": "blurry",
            "out": "fox.png",
        },
        {
            "id": "hi",
            "task": "speech",
            "input": "hello there, this is a test.",
            "model": str(vits),
            "seed": 3,
            "out": "hi.wav",
        },
        {"id": "ghost", "task": "text", "prompt": "Hi", "model": "nope/not-there", "max_tokens": 4},
        {"id": "neg", "task": "text", "prompt": "Hi", "model": models["gpt2"], "max_tokens": -4},
    ]
    with pytest.MonkeyPatch.context() as env:
        isolate(env, folder)
        write_jobs(folder / "jobs.jsonl", jobs)
        result = batch("jobs.jsonl", "-o", "results.jsonl", "--out-dir", "outs")
        alone = {
            job_id: single(
                "text",
                prompt,
                *("-m", models[model], "--max-tokens", "8", "--temperature", str(temperature)),
                *(("--seed", str(seed)) if seed is not None else ()),
            )
            for job_id, prompt, model, temperature, seed in TEXT_JOBS
        }
        fox = ["a red fox", "-m", sd, *SMALL_IMAGE, "--seed", "7", "--negative", "blurry", "-o", "fox.png"]
        alone["fox"] = single("image", *fox)
        alone["hi"] = single(
            "speak", "hello there, this is a test.", "-m", str(vits), "--seed", "3", "-o", "hi.wav"
        )
        ghost = run_cli("text", "Hi", "-m", "nope/not-there", "--max-tokens", "4")
    return {"folder": folder, "result": result, "alone": alone, "ghost": ghost}


def test_each_result_equals_the_single_run(main_batch):
    folder, result, alone = main_batch["folder"], main_batch["result"], main_batch["alone"]
    assert result.returncode == 1, result.stderr.decode()
    assert result.stdout == b""
    assert summary(result) == {"jobs": 9, "ok": 7, "failed": 2, "skipped": None, "results": None}
    lines = records(folder / "results.jsonl")
    assert [r["id"] for r in lines] == [*(job[0] for job in TEXT_JOBS), "fox", "hi", "ghost", "neg"]
    by_id = {r["id"]: r for r in lines}
    for job_id, record in alone.items():
        as_run_alone(by_id[job_id], record)
    assert [by_id[i]["task"] for i in ("story", "fox", "hi")] == ["text", "image", "speech"]
    # the greedy jobs (batched together) and the sampled one (alone, its seed) are the runs alone, token for
    # token; the greedy texts differ from each other, so rows were not mixed up
    assert len({by_id[i]["text"] for i in ("story", "hello", "sea")}) == 3
    assert by_id["sampled"]["seed"] == 5 and by_id["story"]["seed"] is None
    # files: `out` is relative to --out-dir; the bytes are those of `aigc image|speak -o`
    assert by_id["fox"]["path"] == os.path.join("outs", "fox.png")
    assert by_id["hi"]["path"] == os.path.join("outs", "hi.wav")
    assert (folder / "outs" / "fox.png").read_bytes() == (folder / "fox.png").read_bytes()
    assert (folder / "outs" / "hi.wav").read_bytes() == (folder / "hi.wav").read_bytes()
    assert sorted(p.name for p in (folder / "outs").iterdir()) == ["fox.png", "hi.wav"]
    # the bad ones: the message and the exit code a single run gives
    ghost = main_batch["ghost"]
    assert ghost.returncode == 3
    message = ghost.stderr.decode().strip().removeprefix("aigc: error: ")
    # and a digest of the job as asked (its line, --task and the flags), which resuming compares
    hashes = {by_id[i].pop("job_hash") for i in ("ghost", "neg")}
    assert len(hashes) == 2 and all(re.fullmatch(r"[0-9a-f]{16}", h) for h in hashes)
    assert by_id["ghost"] == {
        "id": "ghost",
        "task": "text",
        "status": "error",
        "error": f"job ghost (line 8): {message}",
        "exit_code": 3,
    }
    assert by_id["neg"] == {
        "id": "neg",
        "task": "text",
        "status": "error",
        "error": "job neg (line 9): field 'max_tokens' must be at least 1 (got -4)",
        "exit_code": 2,
    }


# --- order, ids, defaults; stdin and stdout ------------------------------------------------------------------


def test_results_keep_job_order_ids_default_to_the_line_and_a_job_value_wins(tiny, vits, tmp_path):
    """Jobs of two text models alternate (and a speech job): execution is grouped by model, the results are
    in job order. Ids default to the line number (blank lines count), --task is the default task, and the
    batch flags (-m, --max-tokens) are defaults that a job's own value overrides. Jobs come from stdin,
    results go to stdout."""
    llama, gpt2 = str(tiny["llama"]), str(tiny["gpt2"])
    jobs = [
        {"prompt": "Once upon a time", "temperature": 0},
        {"prompt": "Once upon a time", "model": gpt2, "temperature": 0},
        "",
        {"id": "own", "prompt": "The sea", "max_tokens": 3, "temperature": 0},
        {"prompt": "The sea", "model": gpt2, "max_tokens": 3, "temperature": 0},
        {"task": "speech", "input": "hi there.", "model": str(vits), "seed": 1, "out": "s.wav"},
        {"id": 42, "prompt": "Hi", "temperature": 0},
        {"prompt": "Hi", "model": gpt2, "temperature": 0},
    ]
    result = batch("-", "--task", "text", "-m", llama, "--max-tokens", "5", input=jsonl(jobs))
    assert result.returncode == 0, result.stderr.decode()
    assert summary(result) == {"jobs": 7, "ok": 7, "failed": 0, "skipped": None, "results": None}
    lines = records(result.stdout)
    assert [r["id"] for r in lines] == ["1", "2", "own", "5", "6", "42", "8"]
    assert all(r["status"] == "ok" for r in lines)
    assert [r["task"] for r in lines] == ["text"] * 4 + ["speech"] + ["text"] * 2
    assert [r["model"] for r in lines] == [llama, gpt2, llama, gpt2, str(vits), llama, gpt2]
    text = [r for r in lines if r["task"] == "text"]
    assert [r["max_new_tokens"] for r in text] == [5, 5, 3, 3, 5, 5]
    assert lines[4]["path"] == "s.wav" and (tmp_path / "s.wav").is_file()
    # the same prompt, model and settings in one batch: the same text (greedy)
    alone = single("text", "Once upon a time", "-m", gpt2, "--max-tokens", "5", "--temperature", "0")
    as_run_alone(lines[1], alone)


# --- bad jobs fail alone ---------------------------------------------------------------------------------


def test_a_bad_job_fails_alone(tiny, pipes, tmp_path):
    gpt2, sd = str(tiny["gpt2"]), str(pipes["sd"])
    jobs = [
        {"id": "good", "prompt": "Once upon a time", "model": gpt2, "max_tokens": 4, "temperature": 0},
        {"id": "ghost", "prompt": "Hi", "model": "nope/not-there"},
        {"id": "neg", "prompt": "Hi", "model": gpt2, "max_tokens": -4},
        {"prompt": "Hi", "model": gpt2, "top_p": 1.5},
        NOT_JSON,
        {"prompt": "Hi", "model": gpt2, "bogus": 1, "colour": "red"},
        {
            "id": "init",
            "task": "image",
            "prompt": "a fox",
            "model": sd,
            "init_image": "missing.png",
            "steps": 2,
            "width": 64,
            "height": 64,
            "out": "init.png",
        },
        "[1, 2]",
        {"id": "video", "task": "video", "prompt": "Hi"},
        {"id": "empty", "prompt": "  "},
        {"id": "count", "prompt": "Hi", "model": gpt2, "count": 2},
        {"id": "good2", "prompt": "The sea", "model": gpt2, "max_tokens": 4, "temperature": 0},
    ]
    write_jobs(tmp_path / "jobs.jsonl", jobs)
    result = batch("jobs.jsonl", "--task", "text", "-o", "results.jsonl", "--out-dir", "outs")
    assert result.returncode == 1, result.stderr.decode()
    assert result.stdout == b""
    assert summary(result) == {"jobs": 12, "ok": 2, "failed": 10, "skipped": None, "results": None}
    lines = records(tmp_path / "results.jsonl")
    assert [r["id"] for r in lines] == [
        "good",
        "ghost",
        "neg",
        "4",
        "5",
        "6",
        "init",
        "8",
        "video",
        "empty",
        "count",
        "good2",
    ]
    assert [r["status"] for r in lines] == ["ok"] + ["error"] * 10 + ["ok"]
    assert [r["completion_tokens"] for r in (lines[0], lines[-1])] == [4, 4]
    errors = {r["id"]: (r["task"], r["error"], r["exit_code"]) for r in lines[1:-1]}
    ghost = errors.pop("ghost")
    assert ghost[0] == "text" and ghost[2] == 3
    assert ghost[1].startswith("job ghost (line 2): Model 'nope/not-there' ")
    assert errors == {
        "neg": ("text", "job neg (line 3): field 'max_tokens' must be at least 1 (got -4)", 2),
        "4": ("text", "line 4: field 'top_p' must be at most 1 (got 1.5)", 2),
        "5": (None, f"line 5: not JSON ({json_error(NOT_JSON)})", 2),
        "6": ("text", "line 6: unknown fields 'bogus', 'colour' for a text job", 2),
        "init": ("image", "job init (line 7): No such file: missing.png ('init_image')", 2),
        "8": (None, "line 8: not a JSON object", 2),
        "video": (
            None,
            "job video (line 9): task 'video': give 'task' (text, image or speech) or run with --task",
            2,
        ),
        "empty": ("text", "job empty (line 10): 'prompt' must be a non-empty string", 2),
        "count": ("text", "job count (line 11): unknown field 'count' for a text job", 2),
    }
    assert list((tmp_path / "outs").iterdir()) == []  # the failed image job wrote nothing


def test_a_batch_that_cannot_start_writes_nothing(tiny, tmp_path):
    gpt2 = str(tiny["gpt2"])
    write_jobs(
        tmp_path / "dup.jsonl",
        [{"id": "x", "prompt": "a"}, {"prompt": "b", "model": gpt2}, {"id": "x", "prompt": "c"}],
    )
    for args, message in [
        (["dup.jsonl"], "Job id 'x' is on line 1 and line 3: ids must be unique"),
        (["empty.jsonl"], "No jobs in empty.jsonl: one JSON object per line"),
        (["blank.jsonl"], "No jobs in blank.jsonl: one JSON object per line"),
        (["one.jsonl", "--temperature", "-1"], "--temperature must be at least 0 (got -1)"),
        (["one.jsonl", "--steps", "0"], None),  # no image job: the image flags are not its to check
        (["numbered.jsonl"], "Job id '2' is on line 1 and line 2: ids must be unique"),
        (["missing.jsonl"], "No such file: missing.jsonl (the jobs, one JSON object per line)"),
    ]:
        (tmp_path / "empty.jsonl").write_text("")
        (tmp_path / "blank.jsonl").write_text("\n  \n")
        write_jobs(tmp_path / "one.jsonl", [{"prompt": "a", "model": "nope/not-there"}])
        write_jobs(tmp_path / "numbered.jsonl", [{"id": 2, "prompt": "a"}, {"prompt": "b"}])
        result = batch(*args, "--task", "text", "-o", "results.jsonl", "--out-dir", "outs")
        if message is None:  # it ran (and its one job failed)
            assert result.returncode == 1, result.stderr.decode()
            (tmp_path / "results.jsonl").unlink()
            continue
        assert (result.returncode, result.stderr.decode(), result.stdout) == (
            2,
            f"aigc: error: {message}\n",
            b"",
        )
        assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "outs").exists()


# --- resume ------------------------------------------------------------------------------------------------


def test_resume_skips_done_jobs_and_retries_failed_ones_when_asked(tiny, tmp_path):
    gpt2 = str(tiny["gpt2"])
    results = tmp_path / "results.jsonl"
    args = ["jobs.jsonl", "--task", "text", "-m", gpt2, "--max-tokens", "4", "-o", "results.jsonl"]
    good = [
        {"id": "a", "prompt": "Once upon a time", "temperature": 0},
        {"id": "b", "prompt": "The sea", "temperature": 0},
    ]
    write_jobs(tmp_path / "jobs.jsonl", [*good, {"id": "c", "prompt": "Hi", "model": "nope/not-there"}])

    first = batch(*args)
    assert first.returncode == 1, first.stderr.decode()
    assert summary(first) == {"jobs": 3, "ok": 2, "failed": 1, "skipped": None, "results": None}
    written = results.read_bytes()
    assert [(r["id"], r["status"]) for r in records(written)] == [("a", "ok"), ("b", "ok"), ("c", "error")]

    again = batch(*args)  # nothing runs again: the failed job too, without --retry-errors
    assert "3 skipped (done in results.jsonl; 1 of them failed: --retry-errors runs them again)" in (
        again.stderr.decode()
    )
    assert again.returncode == 1  # a job's last result is still a failure
    assert results.read_bytes() == written

    retried = batch(*args, "--retry-errors")  # only the failed job runs, and fails again: a new line
    assert retried.returncode == 1
    assert summary(retried) == {"jobs": 3, "ok": 0, "failed": 1, "skipped": 2, "results": "results.jsonl"}
    assert results.read_bytes().startswith(written)
    assert [(r["id"], r["status"]) for r in records(results)[3:]] == [("c", "error")]

    write_jobs(tmp_path / "jobs.jsonl", [*good, {"id": "c", "prompt": "Hi"}])  # the job fixed
    fixed = batch(*args, "--retry-errors")
    assert fixed.returncode == 0, fixed.stderr.decode()
    assert summary(fixed) == {"jobs": 3, "ok": 1, "failed": 0, "skipped": 2, "results": "results.jsonl"}
    lines = records(results)
    assert [(r["id"], r["status"]) for r in lines] == [
        ("a", "ok"),
        ("b", "ok"),
        ("c", "error"),
        ("c", "error"),
        ("c", "ok"),
    ]
    assert lines[-1]["model"] == gpt2 and lines[-1]["max_new_tokens"] == 4

    # A crash while writing: the last line cut short, inside a character (the tiny models' texts are not
    # ASCII, and results keep them as they are). The next run drops that part line, skips the whole ones and
    # runs the cut job again, with the same result: RESULTS stays valid JSON lines.
    whole = written.splitlines(keepends=True)
    inside = next((i for i, byte in enumerate(whole[1]) if byte >= 0xC0), None)
    assert inside is not None, whole[1]
    cut = whole[0] + whole[1][: inside + 1]
    results.write_bytes(cut)
    resumed = batch(*args)
    assert resumed.returncode == 0, resumed.stderr.decode()
    notice, last = resumed.stderr.decode().splitlines()  # the cut line reported, then the summary
    assert notice == (
        "aigc: warning: results.jsonl: its last line was cut short (a run stopped while writing it): dropped "
        f"its {inside + 1} bytes; job 'b' runs again"
    )
    resumed.stderr = (last + "\n").encode()
    assert summary(resumed) == {"jobs": 3, "ok": 2, "failed": 0, "skipped": 1, "results": "results.jsonl"}
    after = results.read_bytes()
    assert after.startswith(whole[0]) and len(after.splitlines()) == 3  # the part line is gone
    assert all(json.loads(line) for line in after.splitlines())
    rerun = records(after[len(whole[0]) :])
    assert [(r["id"], r["status"]) for r in rerun] == [("b", "ok"), ("c", "ok")]
    assert untimed(rerun[0]) == untimed(records(written)[1])
    assert untimed(rerun[1]) == untimed(lines[-1])
    assert batch(*args).stderr.decode().startswith("aigc: 3 jobs: 0 ok, 0 failed, 3 skipped")


# --- Ctrl-C --------------------------------------------------------------------------------------------------


def test_ctrl_c_writes_whole_lines_and_a_rerun_finishes(tiny, pipes, tmp_path):
    """SIGINT in the middle of a batch of images: exit 130, the results finished so far (also those that
    waited for an earlier job) as whole lines, no temp or half-written file; the same command then runs
    only the rest."""
    gpt2, sd = str(tiny["gpt2"]), str(pipes["sd"])
    images = [
        {
            "id": f"img{i}",
            "task": "image",
            "prompt": f"a fox {i}",
            "model": sd,
            "steps": 4,
            "width": 64,
            "height": 64,
            "seed": i,
            "out": f"img{i}.png",
        }
        for i in range(16)
    ]
    text = [
        {"id": f"t{i}", "prompt": "Once upon a time", "model": gpt2, "max_tokens": 4, "temperature": 0}
        for i in range(3)
    ]
    # the text jobs run first (the first job is one), the last two wait for all the images before them
    write_jobs(tmp_path / "jobs.jsonl", [text[0], *images, *text[1:]])
    ids = [text[0]["id"], *(j["id"] for j in images), *(j["id"] for j in text[1:])]
    command = [AIGC, "batch", "jobs.jsonl", "--task", "text", "-o", "results.jsonl", "--out-dir", "outs"]
    results = tmp_path / "results.jsonl"
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while b'"img0"' not in (results.read_bytes() if results.exists() else b""):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert results.read_bytes().endswith(b"\n")
    first = records(results)  # whole lines only
    done = [r["id"] for r in first]
    assert (process.returncode, out) == (130, b"")
    assert err.decode() == (  # one line: how far it got, and how to go on
        f"aigc: error: interrupted: {len(done)} of 19 jobs done, in results.jsonl; the same command resumes\n"
    )
    assert all(r["status"] == "ok" for r in first)
    assert len(done) < len(ids)  # it stopped before the end
    assert done[:2] == ["t0", "img0"]
    assert {"t1", "t2"} <= set(done)  # finished before the interrupt, written though img15 had not run
    assert done == sorted(done, key=ids.index)
    outs = tmp_path / "outs"
    names = sorted(p.name for p in outs.iterdir())
    assert not [n for n in names if not re.fullmatch(r"img\d+\.png", n)]  # no temp (.part) files
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))
    assert {f"{i}.png" for i in done if i.startswith("img")} <= set(names)
    for name in names:  # none half-written
        with Image.open(outs / name) as image:
            image.load()
            assert image.size == (64, 64)

    rest = run_cli(*command[1:])
    assert rest.returncode == 0, rest.stderr.decode()
    assert summary(rest) == {
        "jobs": 19,
        "ok": 19 - len(done),
        "failed": 0,
        "skipped": len(done),
        "results": "results.jsonl",
    }
    lines = records(results)
    assert lines[: len(first)] == first
    assert sorted(r["id"] for r in lines) == sorted(ids)  # each job ok exactly once
    assert all(r["status"] == "ok" for r in lines)
    assert sorted(p.name for p in outs.iterdir()) == sorted(f"{j['id']}.png" for j in images)


# --- Ray Data --------------------------------------------------------------------------------------------------


@pytest.mark.ray
def test_ray_gives_the_local_results(main_batch):
    """`--engine ray --workers 2` on the same job file: the same lines in the same order (timings and paths
    aside: Ray's paths are absolute), the same file bytes, the bad jobs reported, the rest finished."""
    pytest.importorskip("ray")
    folder = main_batch["folder"]
    env = {"AIGC_HOME": str(folder / "aigc-home"), "HF_HOME": str(folder / "hf-home")}
    result = subprocess.run(
        [
            AIGC,
            "batch",
            "jobs.jsonl",
            "-o",
            "ray.jsonl",
            "--out-dir",
            "ray-outs",
            "--engine",
            "ray",
            "--workers",
            "2",
        ],
        cwd=folder,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=240,
    )
    assert result.returncode == 1, result.stderr.decode()
    assert result.stdout == b""
    last = result.stderr.decode().splitlines()[-1]
    assert SUMMARY.fullmatch(last) and last.startswith("aigc: 9 jobs: 7 ok, 2 failed, in "), last
    on_ray, here = records(folder / "ray.jsonl"), records(folder / "results.jsonl")
    assert [untimed(r) for r in on_ray] == [untimed(r) for r in here]
    assert [list(r) for r in on_ray] == [list(r) for r in here]
    paths = {r["id"]: r["path"] for r in on_ray if "path" in r}
    assert paths == {"fox": os.path.join("ray-outs", "fox.png"), "hi": os.path.join("ray-outs", "hi.wav")}
    for name in ("fox.png", "hi.wav"):
        assert (folder / "ray-outs" / name).read_bytes() == (folder / "outs" / name).read_bytes()
