"""AUTOMATIC1111's web API on `aigc serve` (/sdapi/v1/*), as its clients call it: raw HTTP against the session
server (tiny models preloaded). txt2img and img2img equal `aigc image` with the same seed and settings."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

from inproc import run_cli
from PIL import Image
from server_helpers import http, server_env, start_server


def post(server, route: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    status, _, raw = http(f"{server.url}/sdapi/v1/{route}", "POST", body, headers)
    return status, json.loads(raw)


def local(*args: str) -> None:
    result = run_cli(*args, "--local")
    assert result.returncode == 0, result.stderr.decode()


def png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def b64_file(path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def test_txt2img_equals_aigc_image_bytes_pixels_and_parameters_chunk(server, pipes, tmp_path):
    sd = str(pipes["sd"])
    body = {
        "prompt": "a lighthouse",
        "negative_prompt": "fog",
        "seed": 3,
        "steps": 2,
        "cfg_scale": 6.5,
        "width": 64,
        "height": 64,
        "batch_size": 2,
        "n_iter": 1,
        "sampler_name": "Euler a",
        "override_settings": {"sd_model_checkpoint": sd},
        # what A1111 clients send by default: accepted
        "restore_faces": False,
        "enable_hr": False,
        "denoising_strength": 0.7,
        "do_not_save_samples": True,
        "save_images": False,
        "send_images": True,
    }
    status, answer = post(server, "txt2img", body)
    assert status == 200, answer
    args = ["image", "a lighthouse", "-m", sd, "--negative", "fog", "--seed", "3", "--steps", "2"]
    args += ["--guidance", "6.5", "--width", "64", "--height", "64", "--scheduler", "euler-a", "-n", "2"]
    local(*args, "-o", "here.png")
    info = json.loads(answer["info"])
    assert answer["parameters"] == body
    assert len(answer["images"]) == 2
    for index, b64 in enumerate(answer["images"]):
        here = tmp_path / f"here-{index + 1}.png"
        assert base64.b64decode(b64) == here.read_bytes()
        served, expected = png(b64), Image.open(here)
        assert served.tobytes() == expected.tobytes()
        assert served.text["parameters"] == expected.text["parameters"] == info["infotexts"][index]
    assert info["seed"] == 3 and info["all_seeds"] == [3, 4]
    assert info["all_prompts"] == ["a lighthouse"] * 2 and info["negative_prompt"] == "fog"
    assert (info["steps"], info["cfg_scale"], info["width"], info["height"]) == (2, 6.5, 64, 64)
    assert info["sampler_name"] == "Euler a"
    assert "Sampler: Euler a" in info["infotexts"][0] and "Seed: 4" in info["infotexts"][1]


def test_txt2img_seed_minus_one_is_random_and_send_images_false_sends_none(server, pipes):
    body = {"prompt": "a fox", "seed": -1, "steps": 1, "width": 64, "height": 64, "send_images": False}
    body["override_settings"] = {"sd_model_checkpoint": str(pipes["sd"])}
    status, answer = post(server, "txt2img", body)
    assert status == 200, answer
    assert answer["images"] == []
    info = json.loads(answer["info"])
    assert isinstance(info["seed"], int) and info["seed"] >= 0
    assert len(info["infotexts"]) == 1 and f"Seed: {info['seed']}" in info["infotexts"][0]


def _start_and_mask(tmp_path) -> None:
    Image.new("RGB", (64, 64), (200, 40, 40)).save(tmp_path / "start.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    mask.save(tmp_path / "mask.png")


def test_img2img_with_and_without_mask_equals_aigc_image_init_image(server, pipes, tmp_path):
    _start_and_mask(tmp_path)
    sd = str(pipes["sd"])
    base = {"prompt": "a cat", "seed": 5, "steps": 4, "override_settings": {"sd_model_checkpoint": sd}}
    args = ["image", "a cat", "-m", sd, "--seed", "5", "--steps", "4", "--init-image", "start.png"]
    cases = [
        ({"denoising_strength": 0.6}, ["--strength", "0.6"], "plain.png"),
        ({"mask": b64_file(tmp_path / "mask.png")}, ["--mask", "mask.png"], "masked.png"),
    ]
    for extra, flags, name in cases:
        body = {**base, "init_images": [b64_file(tmp_path / "start.png")], **extra}
        status, answer = post(server, "img2img", body)
        assert status == 200, answer
        local(*args, *flags, "-o", name)
        (b64,) = answer["images"]
        served, expected = png(b64), Image.open(tmp_path / name)
        assert served.size == expected.size == (64, 64)
        assert served.tobytes() == expected.tobytes(), name
        # the parameters chunk is the same; the aigc one names the init image as it came (a file, a body)
        assert served.text["parameters"] == expected.text["parameters"]
        assert json.loads(served.text["aigc"])["init_image"] == "request body"
        assert answer["parameters"]["init_images"] is None


def test_img2img_inverted_mask_and_a1111_inpainting_knobs(server, pipes, tmp_path):
    _start_and_mask(tmp_path)
    inverted = Image.eval(Image.open(tmp_path / "mask.png"), lambda v: 255 - v)
    inverted.save(tmp_path / "inverted.png")
    sd = str(pipes["sd"])
    body = {
        "prompt": "a cat",
        "seed": 5,
        "steps": 2,
        "override_settings": {"sd_model_checkpoint": sd},
        "init_images": ["data:image/png;base64," + b64_file(tmp_path / "start.png")],
        "mask": b64_file(tmp_path / "inverted.png"),
        "inpainting_mask_invert": 1,
        "mask_blur": 4,
        "inpainting_fill": 1,
    }
    status, answer = post(server, "img2img", body)
    assert status == 200, answer
    local("image", "a cat", "-m", sd, "--seed", "5", "--steps", "2", "--init-image", "start.png",
          "--mask", "mask.png", "-o", "here.png")  # fmt: skip
    assert png(answer["images"][0]).tobytes() == Image.open(tmp_path / "here.png").tobytes()
    notices = json.loads(answer["info"])["aigc"]["notices"]
    assert any(
        "mask_blur, inpainting_fill" in n["message"] and "not applied" in n["message"] for n in notices
    )


def test_sd_models_samplers_progress(server, pipes):
    status, _, raw = http(f"{server.url}/sdapi/v1/sd-models")
    assert status == 200
    models = json.loads(raw)
    row = next(m for m in models if m["filename"] == str(pipes["sd"]))
    assert row["title"] == str(pipes["sd"]) and row["hash"] is None and row["model_name"] == pipes["sd"].name
    status, _, raw = http(f"{server.url}/sdapi/v1/samplers")
    samplers = {s["name"]: s for s in json.loads(raw)}
    assert samplers["Euler a"]["aliases"] == ["euler-a"]
    assert samplers["DPM++ 2M Karras"]["options"] == {
        "scheduler": "DPMSolverMultistepScheduler",
        "use_karras_sigmas": True,
    }
    status, _, raw = http(f"{server.url}/sdapi/v1/progress")
    progress = json.loads(raw)
    assert status == 200 and progress["progress"] == 0 and progress["current_image"] is None
    assert progress["state"]["job"] == "" and progress["state"]["job_count"] == 0
    assert http(f"{server.url}/sdapi/v1/sd-vae")[2] == b"[]"
    assert http(f"{server.url}/sdapi/v1/upscalers")[2] == b"[]"
    rows = json.loads(http(f"{server.url}/sdapi/v1/schedulers")[2])
    assert [(r["name"], r["label"]) for r in rows] == [("automatic", "Automatic"), ("karras", "Karras")]
    assert all(set(r) == {"name", "label", "aliases", "default_rho", "need_inner_model"} for r in rows)


def test_sd_models_lists_no_text_or_speech_model(server, tiny, vits):
    models = json.loads(http(f"{server.url}/sdapi/v1/sd-models")[2])
    titles = {m["title"] for m in models}
    assert str(tiny["llama"]) not in titles and str(vits) not in titles


def test_png_info_reads_back_what_txt2img_wrote(server, pipes):
    body = {"prompt": "a red fox", "seed": 7, "steps": 1, "width": 64, "height": 64, "cfg_scale": 5}
    body["override_settings"] = {"sd_model_checkpoint": str(pipes["sd"])}
    status, made = post(server, "txt2img", body)
    assert status == 200, made
    status, answer = post(server, "png-info", {"image": "data:image/png;base64," + made["images"][0]})
    assert status == 200, answer
    assert answer["info"] == json.loads(made["info"])["infotexts"][0]
    assert json.loads(answer["items"]["aigc"])["seed"] == 7
    fields = answer["parameters"]
    assert fields["Prompt"] == "a red fox" and fields["Seed"] == 7 and fields["Steps"] == 1
    assert fields["CFG scale"] == 5.0 and (fields["Size-1"], fields["Size-2"]) == ("64", "64")
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, format="PNG")
    status, answer = post(server, "png-info", {"image": base64.b64encode(plain.getvalue()).decode()})
    assert status == 200 and answer["info"] == "" and answer["items"] == {}
    assert post(server, "png-info", {"image": ""}) == (200, {"info": "", "items": {}, "parameters": {}})
    status, answer = post(server, "png-info", {"image": "bm90IGFuIGltYWdl"})
    assert status == 400 and answer["error"]["param"] == "image"


def test_bad_input_is_one_clear_error_naming_the_field(server, pipes):
    base = {"prompt": "a fox", "steps": 1, "width": 64, "height": 64}
    cases = [
        ({"sampler_name": "DPM2 a"}, "sampler_name", "Euler a"),
        ({"sampler_name": "Euler", "scheduler": "Exponential"}, "scheduler", "Karras"),
        ({"sampler_name": "Euler", "scheduler": "Karras"}, "sampler_name", "DPM++ 2M Karras"),
        ({"enable_hr": True}, "enable_hr", "not supported"),
        ({"batch_size": 4, "n_iter": 5}, "batch_size", "at most 16"),
        ({"steps": 0}, "steps", "steps"),
        ({"no_such_field": 1}, "no_such_field", "Unknown field"),
        ({"override_settings": {"sd_model_checkpoint": "no-such/model-here"}}, "model", "no-such/model-here"),
    ]
    for extra, param, words in cases:
        status, answer = post(server, "txt2img", {**base, **extra})
        assert 400 <= status < 500, (extra, answer)
        assert answer["error"]["param"] == param, (extra, answer)
        assert words in answer["error"]["message"], (extra, answer)
        assert answer["detail"] == answer["error"]["message"]
    status, answer = post(
        server, "img2img", {**base, "override_settings": {"sd_model_checkpoint": str(pipes["sd"])}}
    )
    assert status == 400 and answer["error"]["param"] == "init_images"
    model = {"override_settings": {"sd_model_checkpoint": str(pipes["sd"])}}
    status, answer = post(server, "img2img", {**base, **model, "init_images": ["bm90IGFuIGltYWdl"]})
    assert status == 400 and answer["error"]["param"] == "init_images", answer


def test_the_guard_holds_on_sdapi_routes(server, tmp_path):
    """The Host check here; the API key on every /sdapi route (each one /openapi.json lists) in
    tests/test_server_security.py::test_every_route_but_health_needs_the_key."""
    status, _, raw = http(f"{server.url}/sdapi/v1/sd-models", headers={"Host": "evil.example"})
    assert status == 403 and "Host" in json.loads(raw)["error"]["message"]


def in_thread(call) -> tuple[threading.Thread, dict]:
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(answer=call()), daemon=True)
    thread.start()
    return thread, box


def progress_until(server, done, query: str = "", timeout: float = 120) -> dict:
    """/sdapi/v1/progress, polled until done(answer)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = json.loads(http(f"{server.url}/sdapi/v1/progress{query}")[2])
        if done(answer):
            return answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.02)


def idle(answer: dict) -> bool:
    return answer["progress"] == 0 and answer["state"]["job_count"] == 0 and answer["textinfo"] is None


def test_progress_follows_an_image_job_of_the_openai_route(server, pipes):
    # 2 x 20 steps: a second or more of a job to see mid-way (polled every 20 ms); 2 x 60 took 12-20 s
    body = {"model": str(pipes["sd"]), "prompt": "a cat", "n": 2, "num_inference_steps": 20, "size": "64x64"}
    thread, box = in_thread(lambda: http(f"{server.url}/v1/images/generations", "POST", body))
    seen = progress_until(server, lambda a: 0 < a["progress"] < 1 and a["state"]["sampling_step"] > 0)
    state = seen["state"]
    assert state["job"] == "generations" and state["job_count"] == 2 and state["sampling_steps"] == 20
    assert 0 <= state["job_no"] < 2 and not state["interrupted"]
    assert seen["eta_relative"] >= 0 and "step" in seen["textinfo"]
    assert seen["current_image"] is None  # no previews asked on this route (partial_images 0)
    later = progress_until(server, lambda a: a["progress"] > seen["progress"] or idle(a))
    assert later["progress"] > seen["progress"] or idle(later)
    thread.join(240)  # a loaded machine is slow; a hang still fails
    status, _, raw = box["answer"]
    assert status == 200 and len(json.loads(raw)["data"]) == 2
    assert idle(progress_until(server, idle, timeout=5))


def test_current_image_is_the_latest_preview_of_an_sdapi_job(server, pipes):
    body = {"prompt": "a fox", "seed": 1, "steps": 40, "width": 64, "height": 64, "n_iter": 2}
    body["override_settings"] = {"sd_model_checkpoint": str(pipes["sd"])}
    thread, box = in_thread(lambda: post(server, "txt2img", body))
    seen = progress_until(server, lambda a: a["current_image"] is not None, "?skip_current_image=false")
    assert seen["state"]["job"] == "txt2img" and png(seen["current_image"]).size == (64, 64)
    skipped = json.loads(http(f"{server.url}/sdapi/v1/progress?skip_current_image=true")[2])
    assert skipped["current_image"] is None
    thread.join(240)  # a loaded machine is slow; a hang still fails
    status, answer = box["answer"]
    assert status == 200 and len(answer["images"]) == 2


def test_interrupt_stops_a_long_job_at_a_step_and_answers_the_images_made(server, pipes):
    assert post(server, "interrupt", {}) == (200, {})  # nothing runs: nothing to stop
    before = len(server.log)
    body = {"prompt": "a fox", "seed": 1, "steps": 200, "width": 64, "height": 64, "n_iter": 4}
    body["override_settings"] = {"sd_model_checkpoint": str(pipes["sd"])}
    thread, box = in_thread(lambda: post(server, "txt2img", body))
    progress_until(server, lambda a: a["state"]["sampling_step"] > 0)
    assert post(server, "interrupt", {}) == (200, {})
    thread.join(240)  # a loaded machine is slow; a hang still fails
    status, answer = box["answer"]
    line = server.wait_for_line("interrupted: stopped", since=before)
    image, step = (int(n) for n in line.split(" at image ")[1].split(" step "))
    assert (image - 1) * 200 + step < 4 * 200, line
    assert status == 200 and len(answer["images"]) == image - 1
    notices = json.loads(answer["info"])["aigc"]["notices"]
    assert any(n["code"] == "interrupted" for n in notices), notices
    assert idle(progress_until(server, idle, timeout=5))
    body.update(steps=2, n_iter=1)  # the next job runs whole
    status, answer = post(server, "txt2img", body)
    assert status == 200 and len(answer["images"]) == 1


def test_options_read_and_set_the_checkpoint_in_memory(pipes, tmp_path):
    sd, sdxl = str(pipes["sd"]), str(pipes["sdxl"])
    env = server_env(tmp_path, AIGC_IMAGE_MODEL=sd)
    own = start_server(tmp_path, "--preload", sd, "--preload", sdxl, env=env)
    try:
        status, _, raw = http(f"{own.url}/sdapi/v1/options")
        options = json.loads(raw)
        assert status == 200 and options["sd_model_checkpoint"] == sd
        assert (options["sd_vae"], options["CLIP_stop_at_last_layers"], options["samples_format"]) == (
            "Automatic",
            1,
            "png",
        )
        bad = {"sd_model_checkpoint": sdxl, "eta_noise_seed_delta": 31337, "sd_vae": "Automatic"}
        status, answer = post(own, "options", bad)
        assert status == 400 and answer["error"]["param"] == "eta_noise_seed_delta", answer
        assert "'eta_noise_seed_delta'" in answer["detail"] and "sd_vae" not in answer["detail"].split(":")[0]
        status, answer = post(own, "options", {"sd_model_checkpoint": "no/such-model"})
        assert status == 400 and answer["error"]["param"] == "sd_model_checkpoint"
        assert json.loads(http(f"{own.url}/sdapi/v1/options")[2])["sd_model_checkpoint"] == sd
        txt = {"prompt": "a fox", "seed": 1, "steps": 1, "width": 64, "height": 64}
        status, answer = post(own, "txt2img", txt)
        assert status == 200 and json.loads(answer["info"])["sd_model_name"] == sd, answer
        assert post(own, "options", {"sd_model_checkpoint": sdxl, "CLIP_stop_at_last_layers": 1}) == (
            200,
            None,
        )
        assert json.loads(http(f"{own.url}/sdapi/v1/options")[2])["sd_model_checkpoint"] == sdxl
        status, answer = post(own, "txt2img", txt)
        assert status == 200 and json.loads(answer["info"])["sd_model_name"] == sdxl, answer
        override = {**txt, "override_settings": {"sd_model_checkpoint": sd}}  # a request still overrides
        status, answer = post(own, "txt2img", override)
        assert status == 200 and json.loads(answer["info"])["sd_model_name"] == sd, answer
    finally:
        own.stop()
