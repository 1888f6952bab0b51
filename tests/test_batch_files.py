"""`aigc batch` loses nothing: RESULTS cut by a killed run is mended (a whole line kept, a cut one dropped and
its job run again), RESULTS is locked for the run (a second run on it is refused), and job files as people
and editors write them (a BOM, CRLF, a byte that is not UTF-8, a lone surrogate, a line too long, an id that
is not one) fail line by line, never the whole batch."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys

import pytest
from conftest import AIGC
from inproc import run_cli
from test_batch import SUMMARY, jsonl, records, summary, write_jobs

TOO_FEW = "field 'max_tokens' must be at least 1 (got -4)"
BUSY = (
    "aigc: error: results.jsonl is in use: another aigc batch run holds its lock and is writing it; wait for "
    "that run to end (or give another -o)\n"
)


def batch(*args: str, input: bytes | str | None = None) -> subprocess.CompletedProcess:
    return run_cli("batch", *args, input=input)


def cut_notice(size: int, job: str | None, fate: str = "runs again") -> str:
    head = (
        "aigc: warning: results.jsonl: its last line was cut short (a run stopped while writing it): dropped"
    )
    if job is None:
        return f"{head} its {size} bytes (no job id readable); the jobs without a result run again"
    return f"{head} its {size} bytes; job '{job}' {fate}"


# --- resume after a crash --------------------------------------------------------------------------------------


def test_resume_keeps_a_whole_last_line_and_reruns_a_cut_one(tiny, tmp_path):
    """Results cut at many offsets of their last line (in the id, inside a character, one byte short, all but
    the newline): a whole line is kept and its newline added, nothing runs again; a cut one is dropped, said
    once on stderr, and its job runs again. The jobs fail at once, the same way each time (error results have
    no timings), so RESULTS after the resume is byte for byte the first run's."""
    gpt2 = str(tiny["gpt2"])
    first_id, second_id = 'été "1"', "naïve"
    jobs = [{"id": job_id, "prompt": "Hi", "max_tokens": -4} for job_id in (first_id, second_id)]
    write_jobs(tmp_path / "jobs.jsonl", jobs)
    args = ["jobs.jsonl", "--task", "text", "-m", gpt2, "-o", "results.jsonl"]
    results = tmp_path / "results.jsonl"
    first = batch(*args)
    assert first.returncode == 1, first.stderr.decode()
    full = results.read_bytes()
    one, two = full.splitlines(keepends=True)
    assert [r["error"] for r in records(full)] == [
        f"job {first_id} (line 1): {TOO_FEW}",
        f"job {second_id} (line 2): {TOO_FEW}",
    ]
    in_id = two.index("ï".encode()) + 1  # between the two bytes of ï
    after_id = len(b'{"id": ') + len(json.dumps(second_id, ensure_ascii=False).encode())
    after_first_id = len(b'{"id": ') + len(json.dumps(first_id, ensure_ascii=False).encode())
    assert two[:after_id].endswith('"naïve"'.encode()) and one[:after_first_id].endswith(b'\\"1\\""')
    cuts = {  # what RESULTS holds after the crash -> (RESULTS after the resume, the notice)
        one + two[:1]: (full, cut_notice(1, None)),
        one + two[:in_id]: (full, cut_notice(in_id, None)),
        one + two[:after_id]: (full, cut_notice(after_id, second_id)),
        one + two[: len(two) // 2]: (full, cut_notice(len(two) // 2, second_id)),
        one + two[:-2]: (full, cut_notice(len(two) - 2, second_id)),  # no closing brace
        one[:after_first_id]: (full, cut_notice(after_first_id, first_id)),  # both run again
        one + two[:-1]: (full, None),  # whole but for its newline: kept
        full: (full, None),
        one[:-1]: (one + two, None),  # the first line whole: only the second job runs
        # a cut line of a job that has a result before it: that result stands
        full + two[:after_id]: (full, cut_notice(after_id, second_id, "keeps its earlier result")),
    }
    for crashed, (expected, notice) in cuts.items():
        results.write_bytes(crashed)
        resumed = batch(*args)
        assert resumed.returncode == 1, resumed.stderr.decode()
        assert results.read_bytes() == expected, crashed
        lines = resumed.stderr.decode().splitlines()
        assert lines[:-1] == ([notice] if notice else []), crashed
        assert SUMMARY.fullmatch(lines[-1]), lines


# --- one run at a time on RESULTS ----------------------------------------------------------------------------


def test_a_second_run_on_the_same_results_is_refused(tiny, tmp_path):
    """While another process holds RESULTS' lock (here: this test, with flock), a run is refused at once
    (exit 2, one line), runs nothing and writes nothing; once the lock is let go, the run goes ahead."""
    gpt2 = str(tiny["gpt2"])
    write_jobs(tmp_path / "jobs.jsonl", [{"prompt": "Hi", "max_tokens": -4}])
    results = tmp_path / "results.jsonl"
    results.write_bytes(b'{"id": "old", "status": "ok"}\n')
    with results.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = batch("jobs.jsonl", "--task", "text", "-m", gpt2, "-o", "results.jsonl")
        assert (refused.returncode, refused.stderr.decode(), refused.stdout) == (2, BUSY, b"")
        assert results.read_bytes() == b'{"id": "old", "status": "ok"}\n'
    ran = batch("jobs.jsonl", "--task", "text", "-m", gpt2, "-o", "results.jsonl")
    assert ran.returncode == 1 and summary(ran)["failed"] == 1, ran.stderr.decode()
    assert [r["id"] for r in records(results)] == ["old", "1"]


def test_two_runs_started_together_run_each_job_once(tiny, tmp_path):
    """Two real `aigc batch` processes started together on one RESULTS: one runs the jobs, the other is refused
    (or, should it come after the first has ended, finds every job done): each job has one result."""
    gpt2 = str(tiny["gpt2"])
    ids = [f"j{i}" for i in range(12)]
    write_jobs(
        tmp_path / "jobs.jsonl",
        [{"id": i, "prompt": f"Story {i}", "max_tokens": 8, "temperature": 0} for i in ids],
    )
    command = [AIGC, "batch", "jobs.jsonl", "--task", "text", "-m", gpt2, "-o", "results.jsonl"]
    runs = [
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    done = sorted(
        ((run.wait(timeout=120), run.communicate()[1].decode()) for run in runs), key=lambda r: r[0]
    )
    assert [r["id"] for r in records(tmp_path / "results.jsonl")] == ids
    (ran, ran_err), (other, other_err) = done
    assert ran == 0, ran_err
    assert (other, other_err) == (2, BUSY) or (other == 0 and "12 skipped" in other_err), other_err


# --- job files as editors write them ---------------------------------------------------------------------------


def test_job_lines_fail_alone_bom_crlf_bytes_surrogates_long_lines_and_ids(tiny, tmp_path):
    """A BOM and CRLF line ends are read as they are meant; a line that is not UTF-8, a lone surrogate, a line
    over --max-line-bytes (also the last one, without a newline) and an id that is not a string or an integer
    are each that line's error (its number, and the value as written), and the other jobs run."""
    gpt2 = str(tiny["gpt2"])
    good = {"prompt": "Once upon a time", "max_tokens": 3, "temperature": 0}
    long = json.dumps({"prompt": "x" * 300})
    lines = [
        json.dumps({"id": "first", **good}).encode(),
        b'{"id": "latin-1", "prompt": "caf\xe9"}',
        b'{"id": "half", "prompt": "a \\ud800 b"}',
        b'{"id": "\\udc00", "prompt": "Hi"}',
        long.encode(),
        b'{"id": 1.5, "prompt": "Hi"}',
        b'{"id": true, "prompt": "Hi"}',
        b'{"id": null, "prompt": "Hi"}',
        b'{"id": ["a", 1], "prompt": "Hi"}',
        b"",
        json.dumps({"id": 11, **good, "prompt": "The sea, où"}, ensure_ascii=False).encode(),
        long.encode(),
    ]
    (tmp_path / "jobs.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines))
    result = batch(
        "jobs.jsonl", "--task", "text", "-m", gpt2, "-o", "results.jsonl", "--max-line-bytes", "200"
    )
    assert result.returncode == 1, result.stderr.decode()
    assert summary(result) == {"jobs": 11, "ok": 2, "failed": 9, "skipped": None, "results": None}
    out = records(tmp_path / "results.jsonl")
    assert [r["id"] for r in out] == ["first", "latin-1", "half", "4", "5", "6", "7", "8", "9", "11", "12"]
    assert [out[0]["status"], out[-2]["status"]] == ["ok", "ok"]
    assert out[0]["completion_tokens"] == 3
    surrogate = (
        "is not text: it holds a lone surrogate ({} at character {}), half of a UTF-16 pair; write the "
    )
    surrogate += "character itself, or both halves of its pair"
    too_long = f"longer than 200 bytes ({len(long)} bytes): --max-line-bytes raises the limit"
    not_id = "'id' must be a string or an integer, not "
    assert {r["id"]: (r["error"], r["exit_code"]) for r in out if r["status"] == "error"} == {
        "latin-1": (
            "job latin-1 (line 2): not UTF-8 (byte 0xe9 at byte 33 of the line): save the file as UTF-8",
            2,
        ),
        "half": ("job half (line 3): 'prompt' " + surrogate.format("\\ud800", 3), 2),
        "4": ("line 4: 'id' " + surrogate.format("\\udc00", 1), 2),
        "5": (f"line 5: {too_long}", 2),
        "6": (f"line 6: {not_id}1.5", 2),
        "7": (f"line 7: {not_id}true", 2),
        "8": (f"line 8: {not_id}null", 2),
        "9": (f'line 9: {not_id}["a", 1]', 2),
        "12": (f"line 12: {too_long}", 2),
    }


def test_the_default_line_limit_is_10_mb(tmp_path):
    """A line of just over 10 MB is its job's error by default; --max-line-bytes lets it through."""
    prompt = "x" * 10_000_000
    write_jobs(
        tmp_path / "jobs.jsonl", [{"prompt": prompt, "max_tokens": -4}, {"prompt": "Hi", "max_tokens": -4}]
    )
    size = len(json.dumps({"prompt": prompt, "max_tokens": -4}))
    result = batch("jobs.jsonl", "--task", "text")
    assert [r["error"] for r in records(result.stdout)] == [
        f"line 1: longer than 10000000 bytes ({size} bytes): --max-line-bytes raises the limit",
        f"line 2: {TOO_FEW}",
    ]
    raised = batch("jobs.jsonl", "--task", "text", "--max-line-bytes", str(size))
    assert [r["error"] for r in records(raised.stdout)] == [f"line 1: {TOO_FEW}", f"line 2: {TOO_FEW}"]


def test_stdin_jobs_with_a_bom_and_crlf(tmp_path):
    jobs = jsonl([{"prompt": "Hi", "max_tokens": -4}, {"id": "b", "prompt": "Hi", "max_tokens": -4}])
    result = batch("-", "--task", "text", input=b"\xef\xbb\xbf" + jobs.replace("\n", "\r\n").encode())
    assert [r["error"] for r in records(result.stdout)] == [
        f"line 1: {TOO_FEW}",
        f"job b (line 2): {TOO_FEW}",
    ]


# --- lines without a task -------------------------------------------------------------------------------------

NO_TASK = "give 'task' (text, image or speech) or run with --task"


def test_a_line_without_a_task_is_text_when_it_can_be_and_a_fixed_job_runs_again(tiny, tmp_path):
    """No `task` and no --task: a line with a prompt and only text fields runs as text; one with a field
    only image or speech jobs take fails alone, naming it. Resuming skips a failed job only while it is the
    same job (its line, --task and flags): fixed in the file, or run with other flags, it runs again."""
    gpt2 = str(tiny["gpt2"])
    text = {"id": "t", "prompt": "Once upon a time", "model": gpt2, "max_tokens": 4, "temperature": 0}
    image = {"id": "img", "prompt": "a fox", "steps": 2, "width": 64}
    speech = {"id": "say", "input": "hello", "voice": "joe"}
    write_jobs(tmp_path / "jobs.jsonl", [text, image, speech])
    results = tmp_path / "results.jsonl"
    first = batch("jobs.jsonl", "-o", "results.jsonl")
    assert first.returncode == 1, first.stderr.decode()
    assert summary(first) == {"jobs": 3, "ok": 1, "failed": 2, "skipped": None, "results": None}
    lines = records(results)
    assert [(r["id"], r["task"], r["status"]) for r in lines] == [
        ("t", "text", "ok"),
        ("img", None, "error"),
        ("say", None, "error"),
    ]
    assert lines[0]["completion_tokens"] == 4 and lines[0]["model"] == gpt2
    assert [r["error"] for r in lines[1:]] == [
        f"job img (line 2): no task, and 'steps' (image) and 'width' (image) are not for text jobs: {NO_TASK}",
        f"job say (line 3): no task, and 'input' (speech) and 'voice' (speech) are not for text jobs: {NO_TASK}",
    ]

    same = batch("jobs.jsonl", "-o", "results.jsonl")  # nothing changed: the failures would repeat
    assert same.returncode == 1 and results.read_bytes() == b"".join(
        json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in lines
    )
    assert "3 skipped (done in results.jsonl; 2 of them failed: --retry-errors runs them again)" in (
        same.stderr.decode()
    )

    fixed = {"id": "img", "prompt": "a fox", "model": gpt2, "max_tokens": 4, "temperature": 0}
    write_jobs(tmp_path / "jobs.jsonl", [text, fixed, speech])  # the image job made a text one
    rerun = batch("jobs.jsonl", "-o", "results.jsonl")
    assert rerun.returncode == 1, rerun.stderr.decode()  # "say" still failed (and was not run again)
    still = "results.jsonl; 1 of them failed: --retry-errors runs them again"
    assert summary(rerun) == {"jobs": 3, "ok": 1, "failed": 0, "skipped": 2, "results": still}
    assert [(r["id"], r["task"], r["status"]) for r in records(results)[3:]] == [("img", "text", "ok")]

    other_flags = batch("jobs.jsonl", "-o", "results.jsonl", "--temperature", "0")  # another job as asked
    assert summary(other_flags) == {"jobs": 3, "ok": 0, "failed": 1, "skipped": 2, "results": "results.jsonl"}
    assert [(r["id"], r["status"]) for r in records(results)[4:]] == [("say", "error")]


def test_results_from_before_job_hash_run_their_failed_jobs_again(tiny, tmp_path):
    """RESULTS written before failures recorded their job (as the lines without a task failed, every one):
    their failed jobs run again; an ok one stays done."""
    gpt2 = str(tiny["gpt2"])
    jobs = [{"id": i, "prompt": "Hi", "model": gpt2, "max_tokens": 2, "temperature": 0} for i in ("a", "b")]
    write_jobs(tmp_path / "jobs.jsonl", jobs)
    old = [
        {
            "id": "a",
            "task": None,
            "status": "error",
            "error": f"job a (line 1): no task: {NO_TASK}",
            "exit_code": 2,
        },
        {"id": "b", "task": "text", "status": "ok", "text": "x"},
    ]
    write_jobs(tmp_path / "results.jsonl", old)
    result = batch("jobs.jsonl", "-o", "results.jsonl")
    assert result.returncode == 0, result.stderr.decode()
    assert summary(result) == {"jobs": 2, "ok": 1, "failed": 0, "skipped": 1, "results": "results.jsonl"}
    assert [(r["id"], r["task"], r["status"]) for r in records(tmp_path / "results.jsonl")[2:]] == [
        ("a", "text", "ok")
    ]


def test_a_file_where_no_line_has_a_task_is_a_usage_error(tmp_path):
    """Not a failed result per job (which a rerun would then skip): exit 2 before anything is written,
    naming the field and the flag."""
    jobs = [{"prompt": "a fox", "steps": 2}, {"id": "v", "task": "video", "prompt": "Hi"}, {"input": "hello"}]
    write_jobs(tmp_path / "jobs.jsonl", jobs)
    for source, where in [("jobs.jsonl", "jobs.jsonl"), ("-", "stdin")]:
        result = batch(source, "-o", "results.jsonl", "--out-dir", "outs", input=jsonl(jobs))
        assert (result.returncode, result.stdout, result.stderr.decode()) == (
            2,
            b"",
            f"aigc: error: No job in {where} has a task (line 1: no task, and 'steps' (image) is not for text "
            "jobs): give each line a 'task' (text, image or speech), or run with --task\n",
        )
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith("-home")) == ["jobs.jsonl"]


# --- Ray missing -----------------------------------------------------------------------------------------------


def test_engine_ray_without_ray_stops_before_writing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    write_jobs(tmp_path / "jobs.jsonl", [{"prompt": "Hi"}])
    result = batch(
        "jobs.jsonl", "--task", "text", "-o", "results.jsonl", "--out-dir", "outs", "--engine", "ray"
    )
    assert (result.returncode, result.stdout, result.stderr.decode()) == (
        2,
        b"",
        "aigc: error: --engine ray needs Ray Data, which is not installed here: make install EXTRAS=dev,ray (ray "
        "among your extras) or pip install 'aigc[ray]'\n",
    )
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith("-home")) == ["jobs.jsonl"]


@pytest.mark.parametrize("job_id", [1.5, True, None, {"a": 1}])
def test_a_bad_id_names_its_line_and_value(job_id, tmp_path):
    jobs = jsonl([{"id": "x", "prompt": "Hi", "max_tokens": -4}, {"id": job_id, "prompt": "Hi"}])
    result = batch("-", "--task", "text", input=jobs)
    shown = json.dumps(job_id)
    assert records(result.stdout)[1]["error"] == f"line 2: 'id' must be a string or an integer, not {shown}"
