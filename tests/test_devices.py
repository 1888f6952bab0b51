"""--device, --dtype, -q and -v; GPU checks skip where there is no GPU."""

from __future__ import annotations

import json

import pytest
import raw


def test_bfloat16_on_cpu_equals_raw_in_bfloat16(aigc, tiny):
    result = aigc(
        "text",
        "hello",
        "-m",
        str(tiny["llama"]),
        "--temperature",
        "0",
        "--max-tokens",
        "10",
        "--dtype",
        "bf16",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["dtype"] == "bfloat16" and record["device"] == "cpu"
    expected = raw.generate(
        tiny["llama"], "hello", chat=True, dtype="bfloat16", do_sample=False, max_new_tokens=10
    )
    assert record["text"] == expected


def test_device_cpu_by_flag_and_environment(aigc, tiny):
    args = ["text", "hello", "-m", str(tiny["llama"]), "--temperature", "0", "--max-tokens", "6", "--json"]
    assert json.loads(aigc(*args, "--device", "cpu").stdout)["device"] == "cpu"
    result = aigc(*args, env={"AIGC_DEVICE": "cuda:7"})
    assert result.returncode == 2
    assert "Device 'cuda:7' is not available here" in result.stderr.decode()


def test_quiet_and_verbose(aigc, tiny):
    args = ["text", "hello", "-m", str(tiny["llama"]), "--temperature", "0.7", "--max-tokens", "6"]
    assert aigc(*args, "-q").stderr == b""
    verbose = aigc(*args, "-v").stderr.decode()
    assert "drawn at random" in verbose and "on cpu (float32)" in verbose
    assert "drawn at random" not in aigc(*args).stderr.decode()  # the seed is a note: -v


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="no CUDA device here")
def test_cuda_greedy_equals_raw_on_cuda(aigc, tiny):
    result = aigc(
        "text", "hello", "-m", str(tiny["llama"]), "--temperature", "0", "--max-tokens", "10", "--json"
    )
    record = json.loads(result.stdout)
    assert record["device"] == "cuda" and record["dtype"] in {"bfloat16", "float16"}
    expected = raw.generate(
        tiny["llama"],
        "hello",
        chat=True,
        dtype=record["dtype"],
        device="cuda",
        do_sample=False,
        max_new_tokens=10,
    )
    assert record["text"] == expected
