"""Fixtures: an isolated AIGC_HOME and Hugging Face cache per test, offline; tiny models built once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import build_all

AIGC = str(Path(sys.executable).with_name("aigc"))


def isolate(env: pytest.MonkeyPatch, folder: Path) -> Path:
    """A fresh AIGC_HOME and HF cache under `folder`, offline, no debug, no model defaults from the user,
    and `folder` as the current directory."""
    env.setenv("AIGC_HOME", str(folder / "aigc-home"))
    env.setenv("HF_HOME", str(folder / "hf-home"))
    env.setenv("HF_HUB_OFFLINE", "1")
    # The text tests check the transformers reference; tests/test_onnx_backend.py checks the other engine.
    env.setenv("AIGC_TEXT_BACKEND", "torch")
    env.setenv("AIGC_IMAGE_BACKEND", "torch")  # pixel equality with diffusers; openvino has its own tests
    # AIGC_HOST / AIGC_API_KEY: a server of the developer's own must not answer the tests.
    for name in (
        "AIGC_DEBUG",
        "AIGC_DEVICE",
        "AIGC_TEXT_MODEL",
        "HF_HUB_CACHE",
        "TRANSFORMERS_OFFLINE",
        "AIGC_HOST",
        "AIGC_API_KEY",
    ):
        env.delenv(name, raising=False)
    env.chdir(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def frozen_imports():
    """What the test modules imported, frozen for the garbage collector (inproc.freeze_imported): aigc's
    pool collects garbage on each unload, in-process servers and runs too."""
    from inproc import freeze_imported

    freeze_imported()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test: isolate() in its own tmp_path."""
    return isolate(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def pipes(tmp_path_factory) -> dict[str, Path]:
    """Tiny SD and SDXL pipelines."""
    from tiny_pipelines import build_all as build_pipelines

    return build_pipelines(tmp_path_factory.mktemp("pipelines"))


@pytest.fixture(scope="session")
def vits(tmp_path_factory) -> Path:
    """A tiny VITS (character-level tokenizer)."""
    from tiny_speech import build_vits

    return build_vits(tmp_path_factory.mktemp("speech") / "tiny-vits")


STRICT_TEMPLATE = (
    "{%- for m in messages %}"
    "{%- if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{%- endif %}"
    "{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{{ m['role'] + ': ' + m['content'] + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}assistant: {% endif %}"
)
"""A chat template as Gemma's and Mistral's are: it raises on a system message or turns out of order."""


@pytest.fixture(scope="session")
def strict_llama(tiny, tmp_path_factory) -> Path:
    """The tiny chat Llama with STRICT_TEMPLATE."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("strict") / "strict-llama"
    shutil.copytree(tiny["llama"], folder)
    (folder / "chat_template.jinja").write_text(STRICT_TEMPLATE, encoding="utf-8")
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["chat_template"] = STRICT_TEMPLATE
    config_file.write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def server(tiny, pipes, vits, strict_llama, tmp_path_factory):
    """One `aigc serve` per test worker, holding a tiny chat Llama (and one with STRICT_TEMPLATE), a tiny
    GPT-2, a tiny SD and a tiny VITS."""
    from server_helpers import start_server

    home = tmp_path_factory.mktemp("server")
    preload = [tiny["llama"], tiny["gpt2"], pipes["sd"], vits, strict_llama]
    running = start_server(home, "--keep-alive", "-1", *(a for p in preload for a in ("--preload", str(p))))
    yield running
    assert running.stop() == 0, running.stderr()


@pytest.fixture(scope="session")
def client(server):
    """The official openai client on `server`."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def run_aigc(
    *args: str, input: bytes | str | None = None, env: dict[str, str] | None = None, timeout=300, cwd=None
):
    """Run the real `aigc` console script; stdin is empty unless given."""
    if isinstance(input, str):
        input = input.encode()
    return subprocess.run(
        [AIGC, *args],
        input=input if input is not None else b"",
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture
def aigc():
    """`aigc` in this process (inproc.run_cli): the features through the real main(). Contract points that
    need a real process (pipes between processes, terminals, signals, imports) use run_aigc."""
    from inproc import run_cli

    return run_cli


HEAVY_PROBE = """
import sys
modules = sys.argv[1].split(",")
sys.argv = ["aigc", *sys.argv[2:]]
from aigc_cli.cli import main
try:
    main()
except SystemExit:
    pass
heavy = [m for m in modules if m in sys.modules]
print("HEAVY", heavy, file=sys.stderr)
"""


def heavy_imports(
    *args: str,
    env: dict[str, str] | None = None,
    modules: tuple[str, ...] = ("torch", "transformers", "diffusers"),
):
    """Run aigc's main() with these arguments in a fresh interpreter: (which of `modules` it imported, the
    completed process)."""
    result = subprocess.run(
        [sys.executable, "-c", HEAVY_PROBE, ",".join(modules), *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    last = result.stderr.decode().splitlines()[-1]
    assert last.startswith("HEAVY "), result.stderr.decode()
    return eval(last.removeprefix("HEAVY ")), result
