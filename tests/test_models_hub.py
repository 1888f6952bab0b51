"""`aigc models pull|list|path|rm|default` against a Hub served on 127.0.0.1, and config.toml precedence."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fake_hub import COMMIT, FakeHub


@pytest.fixture
def hub(tiny, pipes_free_repo, tmp_path):
    repo = tmp_path / "tiny-chat-repo"
    shutil.copytree(tiny["llama"], repo)
    # huggingface_hub reads 10 MB chunks: a dropped connection resumes with a Range request past 10 MB.
    (repo / "extra-shard.safetensors").write_bytes(os.urandom(24 * 1024 * 1024))
    server = FakeHub({"acme/tiny-chat": repo, "acme/not-a-model": pipes_free_repo})
    yield server
    server.close()


@pytest.fixture
def pipes_free_repo(tmp_path):
    folder = tmp_path / "plain-repo"
    folder.mkdir()
    (folder / "README.md").write_text("just words")
    return folder


def online(hub):
    return {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url}


def test_pull_downloads_resumes_and_the_model_runs_offline(aigc, hub, tiny):
    hub.drop_once.add("extra-shard.safetensors")
    result = aigc("models", "pull", "acme/tiny-chat", env=online(hub))
    assert result.returncode == 0, result.stderr.decode()
    snapshot = result.stdout.decode().strip()
    assert snapshot.endswith(f"models--acme--tiny-chat/snapshots/{COMMIT}")
    assert sorted(os.listdir(snapshot)) == sorted(os.listdir(hub.repos["acme/tiny-chat"]))
    shard = [r for method, path, r in hub.log if path.endswith("extra-shard.safetensors") and method == "GET"]
    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

    # Dropped at 12 MB; resumed after the last whole chunk written, not from the start.
    assert shard == [None, f"bytes={DOWNLOAD_CHUNK_SIZE}-"], hub.log
    for name in ("model.safetensors", "extra-shard.safetensors"):
        assert (Path(snapshot) / name).read_bytes() == (hub.repos["acme/tiny-chat"] / name).read_bytes()
    args = ["text", "hello", "--temperature", "0", "--max-tokens", "8"]
    offline = aigc(*args, "-m", "acme/tiny-chat")  # offline now: from the cache, no network
    assert offline.returncode == 0 and offline.stdout == aigc(*args, "-m", str(tiny["llama"])).stdout
    rows = {r["name"]: r for r in map(json.loads, aigc("models", "list", "--json").stdout.splitlines())}
    assert rows["acme/tiny-chat"]["modality"] == "text" and rows["acme/tiny-chat"]["offline"] is True
    assert rows["acme/tiny-chat"]["size"] >= (tiny["llama"] / "model.safetensors").stat().st_size
    assert aigc("models", "path", "acme/tiny-chat").stdout.decode().strip() == snapshot


def test_rm_asks_for_yes_without_a_terminal(aigc, hub):
    assert aigc("models", "pull", "acme/tiny-chat", env=online(hub)).returncode == 0
    refused = aigc("models", "rm", "acme/tiny-chat")
    assert refused.returncode == 2 and "needs --yes when there is no terminal" in refused.stderr.decode()
    removed = aigc("models", "rm", "acme/tiny-chat", "--yes")
    assert removed.returncode == 0 and removed.stdout.decode().startswith("removed acme/tiny-chat (")
    gone = aigc("models", "path", "acme/tiny-chat")
    assert gone.returncode == 3 and "`aigc models pull acme/tiny-chat`" in gone.stderr.decode()


def test_first_use_downloads_and_checks_modality_before_weights(aigc, hub):
    result = aigc("image", "a fox", "-m", "acme/tiny-chat", "-o", "x.png", env=online(hub))
    assert result.returncode == 3
    assert "is a llama model (LlamaForCausalLM), not a text-to-image pipeline" in result.stderr.decode()
    assert not [p for m, p, _ in hub.log if p.endswith("model.safetensors")]  # no weights moved
    missing = aigc("text", "hi", "-m", "acme/no-such-model", env=online(hub))
    assert (
        missing.returncode == 3
        and "No model 'acme/no-such-model' on the Hugging Face Hub" in missing.stderr.decode()
    )
    plain = aigc("text", "hi", "-m", "acme/not-a-model", env=online(hub))
    assert plain.returncode == 3 and "has no config.json or model_index.json" in plain.stderr.decode()


def test_pull_offline_and_unreachable_fail_fast(aigc):
    offline = aigc("models", "pull", "acme/tiny-chat")
    assert offline.returncode == 3 and offline.stderr.decode() == (
        "aigc: error: Cannot download acme/tiny-chat: offline mode is on (HF_HUB_OFFLINE=1 or --offline): "
        "unset it to download\n"
    )
    down = aigc(
        "models", "pull", "acme/tiny-chat", env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert down.returncode == 3 and down.stderr.decode() == (
        "aigc: error: Cannot download acme/tiny-chat: the Hugging Face Hub cannot be reached: "
        "check the network or proxy (HTTPS_PROXY), or run `aigc doctor`\n"
    )
    # Any other command still names the pull that fetches the model.
    used = aigc("text", "hi", "-m", "acme/tiny-chat")
    assert used.returncode == 3 and used.stderr.decode() == (
        "aigc: error: Model 'acme/tiny-chat' is not cached and offline mode is on: "
        "run `aigc models pull acme/tiny-chat` online\n"
    )


def test_config_precedence_flag_env_file_registry(aigc, tiny, isolated):
    config = isolated / "aigc-home" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[text]\nmodel = "{tiny["gpt2"]}"\nmax_tokens = 5\ntemperature = 0\n')
    record = json.loads(aigc("text", "hello", "--json").stdout)
    assert (record["model"], record["max_new_tokens"], record["do_sample"]) == (str(tiny["gpt2"]), 5, False)
    env = {"AIGC_TEXT_MODEL": str(tiny["llama"])}
    record = json.loads(aigc("text", "hello", "--json", env=env).stdout)
    assert record["model"] == str(tiny["llama"]) and record["max_new_tokens"] == 5  # env beats the file
    record = json.loads(
        aigc("text", "hello", "--json", "-m", str(tiny["gpt2"]), "--max-tokens", "3", env=env).stdout
    )
    assert record["model"] == str(tiny["gpt2"]) and record["max_new_tokens"] == 3  # flags beat both
    config.write_text("")
    record = (
        json.loads(aigc("text", "hello", "--json", "-m", "smollm2", "--max-tokens", "2").stdout)
        if False
        else None
    )
    doctor = json.loads(aigc("doctor", "--json", env=env).stdout)["settings"]
    assert doctor["text.model"] == {"value": str(tiny["llama"]), "source": "environment (AIGC_TEXT_MODEL)"}


def test_image_and_speech_settings_from_the_file(aigc, isolated):
    config = isolated / "aigc-home" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[image]\nsteps = 4\nwidth = 100\n")
    result = aigc("image", "a fox", "-o", "x.png")
    assert (
        result.returncode == 2
        and f"[image] width in {config} must be a positive multiple of 8 (got 100)" in result.stderr.decode()
    )
    # A bad line in the file is found even where a flag overrides it; a good one is overridden.
    assert aigc("image", "a fox", "--width", "64", "-o", "x.png").returncode == 2
    config.write_text("[image]\nsteps = 4\nwidth = 96\n")
    assert aigc("image", "a fox", "--width", "64", "-o", "x.png").returncode == 3  # no model: exit 3


def test_default_command_and_malformed_file(aigc, isolated, tiny):
    assert aigc("models", "default", "text", str(tiny["llama"])).returncode == 0
    shown = aigc("models", "default", "text").stdout.decode()
    assert shown.startswith(f"{tiny['llama']}  (config file (")
    wrong = aigc("models", "default", "image", "gpt2")
    assert wrong.returncode == 3 and "'gpt2' is a text model, not an image model" in wrong.stderr.decode()
    config = isolated / "aigc-home" / "config.toml"
    config.write_text(config.read_text() + "[text\n")
    broken = aigc("text", "hi")
    assert broken.returncode == 2
    assert (
        broken.stderr.decode().startswith(f"aigc: error: {config}: ") and "line 3" in broken.stderr.decode()
    )
    config.write_text("[text]\nwarmth = 3\n")
    unknown = aigc("text", "hi")
    assert unknown.returncode == 2 and "unknown setting 'warmth' in [text]" in unknown.stderr.decode()
