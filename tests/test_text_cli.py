"""`aigc text` through real processes on tiny models, compared with plain transformers."""

from __future__ import annotations

import json

import pytest
import raw


def text_of(result) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode("utf-8")


def with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def test_greedy_chat_equals_raw_transformers(aigc, tiny):
    result = aigc(
        "text",
        "Write a haiku about rain",
        "-m",
        str(tiny["llama"]),
        "--temperature",
        "0",
        "--max-tokens",
        "24",
    )
    expected = raw.generate(
        tiny["llama"], "Write a haiku about rain", chat=True, do_sample=False, max_new_tokens=24
    )
    assert text_of(result) == with_newline(expected)


def test_greedy_base_model_equals_raw_transformers(aigc, tiny):
    result = aigc(
        "text", "The quick brown fox", "-m", str(tiny["gpt2"]), "--temperature", "0", "--max-tokens", "20"
    )
    expected = raw.generate(
        tiny["gpt2"], "The quick brown fox", chat=False, do_sample=False, max_new_tokens=20
    )
    assert text_of(result) == with_newline(expected)


def test_sampling_with_seed_equals_raw_transformers(aigc, tiny):
    args = [
        "-m",
        str(tiny["llama"]),
        "--seed",
        "5",
        "--temperature",
        "0.9",
        "--top-k",
        "20",
        "--top-p",
        "0.95",
    ]
    result = aigc("text", "A lighthouse at dusk", *args, "--max-tokens", "20", "--repetition-penalty", "1.3")
    expected = raw.generate(
        tiny["llama"],
        "A lighthouse at dusk",
        chat=True,
        seed=5,
        do_sample=True,
        temperature=0.9,
        top_k=20,
        top_p=0.95,
        repetition_penalty=1.3,
        max_new_tokens=20,
    )
    assert text_of(result) == with_newline(expected)


def test_same_seed_same_text_other_seed_other_text(aigc, tiny):
    args = ["text", "Numbers", "-m", str(tiny["gpt2"]), "--temperature", "1.0", "--max-tokens", "20"]
    first = text_of(aigc(*args, "--seed", "11"))
    assert text_of(aigc(*args, "--seed", "11")) == first
    assert text_of(aigc(*args, "--seed", "12")) != first


def test_random_seed_is_reported_and_repeats_the_run(aigc, tiny):
    args = ["text", "Numbers", "-m", str(tiny["gpt2"]), "--temperature", "1.0", "--max-tokens", "16"]
    assert "seed" not in aigc(*args).stderr.decode()  # the drawn seed is a note: in --json, the log, and -v
    first = aigc(*args, "-v")
    line = [ln for ln in first.stderr.decode().splitlines() if "seed" in ln]
    assert len(line) == 1, first.stderr
    seed = line[0].split("--seed ")[1].split()[0]
    again = aigc(*args, "--seed", seed)
    assert text_of(again) == text_of(first)
    assert again.stderr == b""  # a given seed is not reported; nothing else is said off a terminal


def test_count_uses_seed_plus_i(aigc, tiny):
    args = ["text", "Numbers", "-m", str(tiny["llama"]), "--temperature", "1.0", "--max-tokens", "12"]
    records = [
        json.loads(line) for line in text_of(aigc(*args, "-n", "3", "--seed", "7", "--json")).splitlines()
    ]
    assert [r["seed"] for r in records] == [7, 8, 9]
    for record in records:
        single = json.loads(text_of(aigc(*args, "--seed", str(record["seed"]), "--json")))
        assert single["text"] == record["text"]
    streamed = text_of(aigc(*args, "-n", "3", "--seed", "7"))
    assert streamed == "\n".join(with_newline(r["text"]) for r in records)


def test_json_fields(aigc, tiny):
    result = aigc(
        "text",
        "Pipes",
        "-m",
        str(tiny["llama"]),
        "--temperature",
        "0",
        "--max-tokens",
        "9",
        "--json",
        "--seed",
        "3",
    )
    lines = text_of(result).splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    expected_ids = raw.new_token_ids(tiny["llama"], "Pipes", chat=True, do_sample=False, max_new_tokens=9)
    _, tokenizer = raw.load(str(tiny["llama"]))
    prompt_ids = raw.encode(tokenizer, "Pipes", chat=True)["input_ids"]
    assert record["text"] == tokenizer.decode(expected_ids, skip_special_tokens=True)
    assert record["model"] == str(tiny["llama"])
    assert record["seed"] is None  # greedy: no seed played a part, even one given
    assert record["backend"] == "torch"
    assert record["device"] == "cpu" and record["dtype"] == "float32"
    assert record["prompt_tokens"] == prompt_ids.shape[1]
    assert record["completion_tokens"] == len(expected_ids) == 9
    assert record["finish_reason"] == "length"
    assert record["do_sample"] is False
    assert record["time_to_first_token"] > 0 and record["tokens_per_second"] > 0 and record["seconds"] > 0


def test_stop_string_ends_output_before_it(aigc, tiny):
    args = [
        "text",
        "The quick brown fox",
        "-m",
        str(tiny["gpt2"]),
        "--temperature",
        "0",
        "--max-tokens",
        "40",
    ]
    full = text_of(aigc(*args, "--no-stream")).rstrip("\n")
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop and stop in full
    before = full[: full.index(stop)]
    assert text_of(aigc(*args, "--stop", stop)) == with_newline(before)
    record = json.loads(text_of(aigc(*args, "--stop", "no such text", "--stop", stop, "--json")))
    assert record["text"] == before
    assert record["finish_reason"] == "stop"
    assert record["completion_tokens"] < 40


def test_eos_token_ends_with_finish_reason_stop(aigc, tiny, tmp_path):
    import shutil

    ids = raw.new_token_ids(
        tiny["gpt2"], "The quick brown fox", chat=False, do_sample=False, max_new_tokens=10
    )
    model = tmp_path / "eos-model"
    shutil.copytree(tiny["gpt2"], model)
    config = json.loads((model / "generation_config.json").read_text())
    config["eos_token_id"] = ids[4]  # the fifth greedy token now ends the sequence
    (model / "generation_config.json").write_text(json.dumps(config))
    record = json.loads(
        text_of(
            aigc(
                "text",
                "The quick brown fox",
                "-m",
                str(model),
                "--temperature",
                "0",
                "--max-tokens",
                "10",
                "--json",
            )
        )
    )
    assert record["finish_reason"] == "stop"
    assert record["completion_tokens"] == ids.index(ids[4]) + 1


def test_no_stream_prints_the_same(aigc, tiny):
    args = ["text", "Café", "-m", str(tiny["llama"]), "--temperature", "0", "--max-tokens", "20"]
    assert text_of(aigc(*args, "--no-stream")) == text_of(aigc(*args))


def test_stdin_dash_and_both(aigc, tiny):
    args = ["-m", str(tiny["gpt2"]), "--temperature", "0", "--max-tokens", "12"]
    from_arg = text_of(aigc("text", "The lazy dog", *args))
    assert text_of(aigc("text", *args, input="The lazy dog\n")) == from_arg
    assert text_of(aigc("text", "-", *args, input="The lazy dog")) == from_arg
    both = text_of(aigc("text", "explain", *args, input="The lazy dog\n"))
    assert both == with_newline(
        raw.generate(tiny["gpt2"], "The lazy dog\nexplain", chat=False, do_sample=False, max_new_tokens=12)
    )


def test_system_message_and_raw(aigc, tiny):
    args = ["-m", str(tiny["llama"]), "--temperature", "0", "--max-tokens", "12"]
    with_system = text_of(aigc("text", "hello", "--system", "You are terse.", *args))
    assert with_system == with_newline(
        raw.generate(
            tiny["llama"], "hello", chat=True, system="You are terse.", do_sample=False, max_new_tokens=12
        )
    )
    raw_prompt = text_of(aigc("text", "hello", "--raw", *args))
    assert raw_prompt == with_newline(
        raw.generate(tiny["llama"], "hello", chat=False, do_sample=False, max_new_tokens=12)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--system", "x", "--raw"], "--system needs the chat template"),
        (["--temperature", "-1"], "--temperature"),
        (["--top-p", "1.5"], "--top-p"),
        (["--max-tokens", "0"], "--max-tokens"),
        (["-n", "0"], "--count"),
        (["--no-such-flag"], "No such option: --no-such-flag"),
        (["--device", "quantum"], "Unknown device 'quantum'"),
        (["--dtype", "int3"], "Unknown dtype 'int3'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(aigc, tiny, args, message):
    result = aigc("text", "hello", "-m", str(tiny["llama"]), *args)
    assert result.returncode == 2, result.stderr
    err = result.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("aigc: error: ") and message in err
    assert result.stdout == b""


def test_system_on_a_model_without_template_is_a_usage_error(aigc, tiny):
    result = aigc("text", "hello", "-m", str(tiny["gpt2"]), "--system", "be brief")
    assert result.returncode == 2
    assert (
        result.stderr.decode()
        == "aigc: error: --system needs the chat template (this model has no chat template)\n"
    )


@pytest.mark.parametrize("stdin", ["", "  \n\n"])
def test_empty_prompt_is_a_usage_error(aigc, tiny, stdin):
    result = aigc("text", "-m", str(tiny["llama"]), input=stdin)
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "aigc: error: The prompt is empty: give it as an argument, or pipe it in on stdin\n"
    )
    assert aigc("text", "", "-m", str(tiny["llama"])).returncode == 2


def test_unknown_model_exit_3(aigc):
    result = aigc("text", "hi", "-m", "smolm2")
    assert result.returncode == 3
    err = result.stderr.decode()
    assert err.count("\n") == 1
    assert err.startswith("aigc: error: Unknown model: smolm2; did you mean smollm2")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("image", "is a diffusers StableDiffusionPipeline, not a causal language model"),
        ("bert", "is a bert model (BertForMaskedLM), not a causal language model"),
        ("empty", "is not a model folder"),
        ("remote", "needs code from its repository to load; pass --trust-remote-code"),
    ],
)
def test_wrong_modality_exit_3_before_loading(aigc, tiny, kind, message):
    result = aigc("text", "hi", "-m", str(tiny[kind]))
    assert result.returncode == 3, result.stderr
    err = result.stderr.decode()
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_uncached_hub_model_offline_exit_3_with_pull_command(aigc):
    for env, flags in (({}, []), ({"HF_HUB_OFFLINE": "0"}, ["--offline"])):
        result = aigc("text", "hi", "-m", "gpt2", *flags, env=env)
        assert result.returncode == 3
        assert result.stderr.decode() == (
            "aigc: error: Model 'gpt2' is not cached and offline mode is on: "
            "run `aigc models pull gpt2` online\n"
        )
        result = aigc("text", "hi", "-m", "someone/some-model", *flags, env=env)
        assert result.returncode == 3
        assert "`aigc models pull someone/some-model`" in result.stderr.decode()


def test_unreachable_hub_fails_fast_with_exit_3(aigc):
    # An endpoint on loopback where nothing listens: connection refused at once, no retry loop.
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = aigc("text", "hi", "-m", "someone/some-model", env=env, timeout=60)
    assert result.returncode == 3
    assert result.stderr.decode() == (
        "aigc: error: Model 'someone/some-model' is not cached and the Hugging Face Hub cannot be reached: "
        "run `aigc models pull someone/some-model` online\n"
    )


def test_pickled_weights_load_through_the_weights_only_loader(aigc, tiny):
    args = ["text", "The quick brown fox", "--temperature", "0", "--max-tokens", "12"]
    assert text_of(aigc(*args, "-m", str(tiny["gpt2_bin"]))) == text_of(aigc(*args, "-m", str(tiny["gpt2"])))


def test_default_model_from_environment(aigc, tiny):
    args = ["text", "hello", "--temperature", "0", "--max-tokens", "8"]
    assert text_of(aigc(*args, env={"AIGC_TEXT_MODEL": str(tiny["llama"])})) == text_of(
        aigc(*args, "-m", str(tiny["llama"]))
    )


def test_debug_shows_the_traceback(aigc, tiny):
    result = aigc("text", "hi", "-m", str(tiny["bert"]), env={"AIGC_DEBUG": "1"})
    assert result.returncode == 3
    assert "Traceback" in result.stderr.decode()
