"""The onnxruntime-genai backend against the transformers reference: `aigc` in-process (the export runs the
model builder as its own process), and a real process where what it imports is the point."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import raw
from conftest import AIGC, heavy_imports
from inproc import run_cli

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime_genai") is None, reason="onnxruntime-genai is not installed"
)
GREEDY = ["--temperature", "0", "--max-tokens", "24"]


def run(*args, env=None):
    """`aigc ARGS` in-process (inproc.run_cli); the export itself is the model builder's own process."""
    return run_cli(*args, env=env)


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One AIGC_HOME for the module, so that each export happens once."""
    return {"AIGC_HOME": str(tmp_path_factory.mktemp("onnx-home"))}


def test_fp32_greedy_equals_transformers(tiny, home):
    result = ok(
        run(
            "text",
            "Write a haiku about rain",
            "-m",
            str(tiny["llama"]),
            *GREEDY,
            "--backend",
            "onnx",
            "--json",
            env=home,
        )
    )
    record = json.loads(result.stdout)
    expected = raw.generate(
        tiny["llama"], "Write a haiku about rain", chat=True, do_sample=False, max_new_tokens=24
    )
    assert record["text"] == expected and record["backend"] == "onnx" and record["precision"] == "float32"
    assert record["completion_tokens"] == 24 and record["sampling_matches_reference"] is True
    streamed = ok(
        run(
            "text",
            "Write a haiku about rain",
            "-m",
            str(tiny["llama"]),
            *GREEDY,
            "--backend",
            "onnx",
            env=home,
        )
    )
    assert streamed.stdout.decode() == expected + "\n"
    assert streamed.stderr == b""  # exported once already: nothing to say


def test_auto_picks_onnx_on_cpu_for_llama_and_torch_for_gpt2(tiny, home):
    env = {**home, "AIGC_TEXT_BACKEND": "auto"}
    llama = json.loads(ok(run("text", "hi", "-m", str(tiny["llama"]), *GREEDY, "--json", env=env)).stdout)
    gpt2 = ok(run("text", "hi", "-m", str(tiny["gpt2"]), *GREEDY, "--json", env=env))
    assert llama["backend"] == "onnx" and json.loads(gpt2.stdout)["backend"] == "torch"
    assert gpt2.stderr == b""  # auto falls back without a word


def test_explicit_onnx_on_an_unsupported_architecture_falls_back_with_a_warning(tiny, home):
    result = ok(
        run("text", "The quick brown fox", "-m", str(tiny["gpt2"]), *GREEDY, "--backend", "onnx", env=home)
    )
    assert result.stderr.decode() == (
        "aigc: warning: the onnx backend cannot run this: onnxruntime-genai's builder does not convert gpt2 "
        "models; using transformers\n"
    )
    expected = raw.generate(
        tiny["gpt2"], "The quick brown fox", chat=False, do_sample=False, max_new_tokens=24
    )
    assert result.stdout.decode() == expected + "\n"


def test_failed_export_leaves_nothing_and_falls_back(tmp_path, home, monkeypatch):
    """A Llama with 8-wide attention heads exports, but onnxruntime's attention kernel cannot run it. The
    failure is remembered: the next run does not export again; changed weights or libraries try again."""
    from tiny_models import build_llama

    from aigc_cli.engines import onnx_export

    model = build_llama(tmp_path / "narrow-heads", hidden_size=32, intermediate_size=64)
    args = ["text", "hi", "-m", str(model), *GREEDY, "--backend", "onnx", "--json"]
    result = ok(run(*args, env=home))
    record = json.loads(result.stdout)
    assert record["backend"] == "torch"
    assert record["text"] == raw.generate(model, "hi", chat=True, do_sample=False, max_new_tokens=24)
    err = result.stderr.decode()
    assert err.startswith("aigc: warning: the ONNX export of narrow-heads failed (") and "head_size" in err
    assert err.endswith(
        "; using transformers, as --backend torch does (remembered: later runs skip the export)\n"
    )
    assert err.count("\n") == 1  # one line
    exports = os.listdir(os.path.join(home["AIGC_HOME"], "onnx"))
    key = onnx_export.export_key(model, "fp32")
    assert [
        n for n in exports if n.startswith((".exporting-", "narrow-heads")) and not n.endswith(".lock")
    ] == [f"{key}.failed.json"]
    marker = Path(home["AIGC_HOME"]) / "onnx" / f"{key}.failed.json"
    remembered = json.loads(marker.read_text())
    assert "head_size" in remembered["reason"] and remembered["inputs"]["versions"]["onnxruntime-genai"]

    builds = []

    def stand_in(folder, precision, out):  # counts the exports tried from here on
        builds.append(folder)
        raise onnx_export.ExportFailed("stand-in")

    monkeypatch.setattr(onnx_export, "_export", stand_in)
    again = ok(run(*args, env=home))
    assert builds == [] and json.loads(again.stdout)["text"] == record["text"]
    assert again.stderr.decode() == (
        f"aigc: warning: the ONNX export of narrow-heads failed before ({remembered['reason']}); using "
        f"transformers (delete {marker} to try the export again)\n"
    )
    auto = ["auto" if a == "onnx" else a for a in args]  # auto chose onnx: a note (-v), no warning
    assert ok(run(*auto, env=home)).stderr == b"" and builds == []
    assert b"failed before" in ok(run(*auto, "-v", env=home)).stderr
    # A weight file changed: a new key, tried again (the stand-in fails: remembered for that key).
    weights = model / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert (
        b"the ONNX export of narrow-heads failed (stand-in)" in ok(run(*args, env=home)).stderr
        and len(builds) == 1
    )
    assert b"failed before (stand-in)" in ok(run(*args, env=home)).stderr and len(builds) == 1
    # Another library version: tried again.
    versions = onnx_export.library_versions
    monkeypatch.setattr(onnx_export, "library_versions", lambda *names: {**versions(*names), "torch": "9"})
    assert (
        b"the ONNX export of narrow-heads failed (stand-in)" in ok(run(*args, env=home)).stderr
        and len(builds) == 2
    )


def test_stop_count_and_sampling_contract(tiny, home):
    args = ["text", "Write a haiku about rain", "-m", str(tiny["llama"]), "--backend", "onnx"]
    full = ok(run(*args, *GREEDY, env=home)).stdout.decode().rstrip("\n")
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    record = json.loads(ok(run(*args, *GREEDY, "--stop", stop, "--json", env=home)).stdout)
    assert record["text"] == full[: full.index(stop)] and record["finish_reason"] == "stop"
    sample = ["--temperature", "0.9", "--top-k", "20", "--max-tokens", "12", "--json"]
    records = [
        json.loads(line)
        for line in ok(run(*args, *sample, "-n", "2", "--seed", "4", env=home)).stdout.splitlines()
    ]
    assert [r["seed"] for r in records] == [4, 5] and all(
        r["sampling_matches_reference"] is False for r in records
    )
    again = json.loads(ok(run(*args, *sample, "--seed", "5", env=home)).stdout)
    assert again["text"] == records[1]["text"]  # repeatable for a seed


def test_int4_runs_and_says_it_differs(tiny, home):
    result = ok(
        run(
            "text",
            "hi",
            "-m",
            str(tiny["llama"]),
            *GREEDY,
            "--backend",
            "onnx",
            "--precision",
            "int4",
            "--json",
            env=home,
        )
    )
    assert json.loads(result.stdout)["precision"] == "int4"
    assert (
        "aigc: warning: int4 is quantised: results differ from the transformers reference"
        in result.stderr.decode()
    )
    bad = run("text", "hi", "-m", str(tiny["llama"]), "--precision", "int3", env=home)
    assert (
        bad.returncode == 2
        and bad.stderr.decode() == "aigc: error: Unknown precision 'int3': use one of fp32, int4\n"
    )


def test_concurrent_first_use_exports_once(tiny, tmp_path):
    env = {**os.environ, "AIGC_HOME": str(tmp_path / "fresh")}
    command = [AIGC, "text", "hi", "-m", str(tiny["llama"]), *GREEDY, "--backend", "onnx", "-v"]
    runs = [
        subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [(p.communicate(timeout=300), p.returncode) for p in runs]
    assert all(code == 0 for _, code in outputs), outputs
    assert outputs[0][0][0] == outputs[1][0][0]
    assert sum(b"exporting" in err for (_, err), _ in outputs) == 1
    folders = [p for p in (tmp_path / "fresh" / "onnx").iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / "genai_config.json").is_file()


def test_the_onnx_path_imports_neither_torch_nor_transformers(tiny, home):
    """Once the export exists, `aigc text` on the onnx backend runs on onnxruntime-genai, tokenizers and
    jinja2 alone; the text equals the torch backend's."""
    args = ["text", "Café, naïve: a haiku about rain", "-m", str(tiny["llama"]), *GREEDY, "--backend", "onnx"]
    first = ok(run(*args, env=home))  # exports once if no test did yet (that needs torch)
    heavy, probe = heavy_imports(*args, env=home)
    assert heavy == [] and probe.stdout == first.stdout
    torch_run = ok(run(*args[:-1], "torch", env=home))
    assert torch_run.stdout == first.stdout
    system = ok(run(*args, "--system", "Be brief.", env=home))
    assert system.stdout == ok(run(*args[:-1], "torch", "--system", "Be brief.", env=home)).stdout
