"""The settings schema, its resolver and the output planner, through real `aigc` processes where a user
would meet them: a flag equal to its default still beats config.toml, every value is checked whatever its
source, a model folder without weights is exit 3 naming the model, and results go where they are reported."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import soundfile
from conftest import AIGC
from ptys import run_in_pty

from aigc_cli.errors import OutputError, UsageError
from aigc_cli.settings import TextSettings, knobs, resolve_settings

SMALL = ["--steps", "1", "--width", "64", "--height", "64"]


def write_config(isolated, text: str):
    path = isolated / "aigc-home" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def one_error(result, code: int) -> str:
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert err.count("\n") == 1 and err.startswith("aigc: error: ") and "Error:" not in err, err
    assert result.stdout == b""
    return err.removeprefix("aigc: error: ").rstrip("\n")


# --- 1. A flag equal to its default is still a flag -----------------------------------------------------


def test_flags_equal_to_their_default_beat_config(aigc, isolated, vits, tmp_path):
    write_config(isolated, "[speech]\nspeed = 1.5\nsentence_silence = 0.5\n")
    configured = json.loads(
        aigc("speak", "Hi.", "-m", str(vits), "--seed", "1", "--json", "-o", "a.wav").stdout
    )
    assert (configured["speed"], configured["sentence_silence"]) == (1.5, 0.5)
    flagged = aigc(
        "speak", "Hi.", "-m", str(vits), "--seed", "1", "--json", "-o", "b.wav",
        "--speed", "1.0", "--sentence-silence", "0",
    )  # fmt: skip
    record = json.loads(flagged.stdout)
    assert (record["speed"], record["sentence_silence"]) == (1.0, 0.0)
    assert len(soundfile.read(tmp_path / "b.wav")[0]) < len(soundfile.read(tmp_path / "a.wav")[0])


def test_device_auto_flag_beats_config_and_low_memory_can_be_turned_off(aigc, isolated, tiny, pipes):
    write_config(isolated, '[text]\ndevice = "cuda:7"\n[image]\nlow_memory = true\n')
    refused = aigc("text", "hi", "-m", str(tiny["gpt2"]), "--max-tokens", "2")
    assert "Device 'cuda:7' is not available here" in one_error(refused, 2)
    assert (
        aigc("text", "hi", "-m", str(tiny["gpt2"]), "--max-tokens", "2", "--device", "auto").returncode == 0
    )
    image = ["image", "a fox", "-m", str(pipes["sd"]), *SMALL, "--seed", "1", "--json"]
    assert json.loads(aigc(*image).stdout)["low_memory"] is True
    assert json.loads(aigc(*image, "--no-low-memory").stdout)["low_memory"] is False


def test_environment_sits_between_flag_and_file(isolated, monkeypatch):
    path = write_config(isolated, '[text]\nbackend = "onnx"\nmax_tokens = 7\n')
    monkeypatch.setenv("AIGC_TEXT_BACKEND", "torch")
    resolved = resolve_settings("text", {"max_tokens": None, "temperature": 0.0})
    assert (
        resolved.values.backend == "torch"
        and resolved.sources["backend"] == "environment (AIGC_TEXT_BACKEND)"
    )
    assert resolved.values.max_tokens == 7 and resolved.sources["max_tokens"] == f"config file ({path})"
    assert resolved.sources["temperature"] == "flag --temperature"
    # The alias's defaults come last, and a flag of 0 is a value, not "unset".
    assert resolved.values.temperature == 0.0 and resolved.values.top_p == 0.9
    assert resolved.sources["top_p"] == "alias smollm2"


# --- 2. Every value is checked, whatever its source -------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "line", "problem"),
    [
        ("text", "max_tokens = -5", "[text] max_tokens in {path} must be at least 1 (got -5)"),
        ("text", "max_tokens = 0", "[text] max_tokens in {path} must be at least 1 (got 0)"),
        ("text", "top_p = 5.0", "[text] top_p in {path} must be at most 1 (got 5)"),
        ("text", "temperature = -1.0", "[text] temperature in {path} must be at least 0 (got -1)"),
        (
            "text",
            'backend = "gpu"',
            "Unknown backend 'gpu' ([text] backend in {path}): use one of auto, torch, onnx",
        ),
        ("text", 'max_tokens = "many"', "[text] max_tokens in {path} must be an integer (got 'many')"),
        ("image", "steps = 0", "[image] steps in {path} must be at least 1 (got 0)"),
        ("image", "width = 100", "[image] width in {path} must be a positive multiple of 8 (got 100)"),
        (
            "speech",
            "sentence_silence = -2",
            "[speech] sentence_silence in {path} must be at least 0 (got -2)",
        ),
        ("speech", "speed = 0", "[speech] speed in {path} must be at least 0.25 (got 0)"),
    ],
)
def test_bad_config_values_are_exit_2_naming_file_and_key(
    aigc, isolated, tiny, pipes, vits, section, line, problem
):
    path = write_config(isolated, f"[{section}]\n{line}\n")
    model = {"text": tiny["gpt2"], "image": pipes["sd"], "speech": vits}[section]
    command = {"text": "text", "image": "image", "speech": "speak"}[section]
    out = [] if section == "text" else ["-o", "x.png" if section == "image" else "x.wav"]
    result = aigc(command, "hello", "-m", str(model), *out)
    message = one_error(result, 2)
    assert message == problem.format(path=path)
    assert "--" not in message.split(" in ")[0]  # never a flag nobody gave


def test_bad_environment_value_names_the_variable(aigc, tiny):
    result = aigc("text", "hi", "-m", str(tiny["gpt2"]), env={"AIGC_TEXT_BACKEND": "tpu"})
    assert one_error(result, 2) == "Unknown backend 'tpu' (AIGC_TEXT_BACKEND): use one of auto, torch, onnx"


def test_every_setting_has_help_and_a_flag_or_a_reason():
    for name, knob in knobs(TextSettings).items():
        assert knob.help.strip().endswith(".") and " ." not in knob.help, name
        assert knob.flag == "--" + name.replace("_", "-") or name == "count", name


def test_doctor_runs_with_a_broken_config_and_shows_the_problem(aigc, isolated):
    path = write_config(isolated, "[speech]\nspeed = 0\n")
    doctor = aigc("doctor", "--json")
    assert doctor.returncode == 0, doctor.stderr
    assert json.loads(doctor.stdout)["problems"] == [
        f"[speech] speed in {path} must be at least 0.25 (got 0)"
    ]
    path.write_text("[text\n")
    shown = aigc("doctor")
    assert shown.returncode == 0 and f"PROBLEM     {path}: " in shown.stdout.decode()


# --- 4. Library errors by type; files checked before loading ---------------------------------------------


def test_model_folder_without_weights_is_exit_3_naming_the_model(aigc, tiny, tmp_path):
    folder = tmp_path / "half-downloaded"
    shutil.copytree(tiny["gpt2"], folder)
    (folder / "model.safetensors").unlink()
    message = one_error(aigc("text", "hi", "-m", str(folder)), 3)
    assert message == (
        f"'{folder}' has no weights in {folder} (a copy or download that did not finish?): "
        "copy the model's weights there again"
    )  # a local folder: nothing to pull


def test_image_pipeline_missing_a_component_s_weights_is_exit_3(aigc, pipes, tmp_path):
    folder = tmp_path / "sd-no-unet"
    shutil.copytree(pipes["sd"], folder)
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.unlink()
    message = one_error(aigc("image", "a fox", "-m", str(folder), *SMALL, "-o", "x.png"), 3)
    assert message.startswith(f"'{folder}' has no weights in unet")


# --- 5. One output planner ---------------------------------------------------------------------------------


def test_speak_json_reports_the_file_it_wrote(aigc, vits, tmp_path):
    named = json.loads(aigc("speak", "Hello there.", "-m", str(vits), "--json", "-o", "j.wav").stdout)
    assert named["path"] == "j.wav" and (tmp_path / "j.wav").is_file()
    assert named["source"] == str(vits)  # the model's folder has its own key
    auto = json.loads(aigc("speak", "Hello there.", "-m", str(vits), "--json", "--seed", "4").stdout)
    assert auto["path"] == str(tmp_path / "hello-there-4.wav") and (tmp_path / "hello-there-4.wav").is_file()


def test_format_that_contradicts_the_extension_is_exit_2(aigc, vits, tmp_path):
    message = one_error(aigc("speak", "Hello.", "-m", str(vits), "--format", "flac", "-o", "out.wav"), 2)
    assert (
        message == "--format flac contradicts the file name out.wav: name it out.flac or leave --format out"
    )
    assert list(tmp_path.glob("out*")) == []
    assert aigc("speak", "Hello.", "-m", str(vits), "--format", "flac", "-o", "out.flac").returncode == 0
    assert soundfile.info(str(tmp_path / "out.flac")).format == "FLAC"


def test_paths_on_a_terminal_never_share_a_line_with_the_bar(pipes, tmp_path):
    shown = run_in_pty([AIGC, "image", "a red fox", "-m", str(pipes["sd"]), *SMALL, "-n", "3", "--seed", "2"])
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    lines = [line.strip() for line in re.split(r"[\r\n]", plain)]
    for index in (1, 2, 3):
        path = str(tmp_path / f"a-red-fox-{index + 1}.png")
        assert path in lines, plain
        assert (tmp_path / f"a-red-fox-{index + 1}.png").is_file()


def test_planner_rules():
    from aigc_cli.output import plan_output

    with pytest.raises(UsageError, match="contradicts"):
        plan_output("audio", "x.ogg", fmt="wav")
    with pytest.raises(UsageError, match="--json prints JSON on stdout"):
        plan_output("image", "-", json=True)
    with pytest.raises(OutputError, match="No such file or directory"):
        plan_output("image", "/no/such/folder/x.png")
    plan = plan_output("image", "cat.jpg", count=3)
    assert plan.format == "JPEG" and [plan.path(i, "p", 1).name for i in range(3)] == [
        "cat-1.jpg", "cat-2.jpg", "cat-3.jpg"
    ]  # fmt: skip
    raw = plan_output("audio", "speech.pcm", fmt="raw")
    assert raw.format == "raw" and raw.path(0, "p", 1).name == "speech.pcm"


# --- Values valid alone but not together -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["text", "image"])
def test_seeds_past_the_range_are_refused_before_anything_runs(aigc, tiny, pipes, command):
    model = str(tiny["gpt2"] if command == "text" else pipes["sd"])
    extra = ["--max-tokens", "2"] if command == "text" else [*SMALL, "-o", "x.png"]
    refused = aigc(command, "hi", "-m", model, "--seed", "4294967295", "-n", "2", *extra)
    assert one_error(refused, 2) == (
        "--seed 4294967295 with -n 2 needs seeds up to 4294967296, past the largest (4294967295): "
        "use --seed 4294967294 or lower"
    )
    assert aigc(command, "hi", "-m", model, "--seed", "4294967294", "-n", "2", *extra).returncode == 0


# --- What a new user tried ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "problem"),
    [
        ("speak", ["--sentence-silence", "inf"], "--sentence-silence must be a finite number (got inf)"),
        ("speak", ["--sentence-silence", "1e9"], "--sentence-silence must be at most 60 (got 1e+09)"),
        ("speak", ["--speed", "1e300"], "--speed must be at most 4 (got 1e+300)"),
        ("text", ["--temperature", "inf"], "--temperature must be a finite number (got inf)"),
        ("image", ["--width", "800000"], "--width must be at most 8192 (got 800000)"),
    ],
)
def test_values_that_would_exhaust_the_machine_are_refused(aigc, tiny, pipes, vits, command, args, problem):
    model = {"text": tiny["gpt2"], "image": pipes["sd"], "speak": vits}[command]
    out = [] if command == "text" else ["-o", "x.png" if command == "image" else "x.wav"]
    assert one_error(aigc(command, "hello", "-m", str(model), *args, *out), 2) == problem


def test_config_values_keep_their_toml_types(aigc, isolated, tiny):
    path = write_config(isolated, '[text]\nmax_tokens = "5"\n')
    message = one_error(aigc("text", "hi", "-m", str(tiny["gpt2"])), 2)
    assert message == f"[text] max_tokens in {path} must be an integer (got '5')"
    path.write_text('[text]\nraw = "yes"\n')
    message = one_error(aigc("text", "hi", "-m", str(tiny["gpt2"])), 2)
    assert message == f"[text] raw in {path} must be true or false (got 'yes')"
    path.write_text("text = 5\n")
    assert one_error(aigc("text", "hi"), 2) == f"{path}: text must be a table, [text], with settings under it"


def test_a_configured_system_message_skips_models_without_a_template(aigc, isolated, tiny):
    write_config(isolated, '[text]\nsystem = "Be brief."\n')
    base = aigc("text", "hi", "-m", str(tiny["gpt2"]), "--max-tokens", "3", "--temperature", "0")
    plain = aigc("text", "hi", "-m", str(tiny["gpt2"]), "--max-tokens", "3", "--temperature", "0", "--no-raw")
    assert base.returncode == 0 and base.stdout == plain.stdout and base.stderr == b""
    flagged = aigc("text", "hi", "-m", str(tiny["gpt2"]), "--system", "Be brief.")
    assert one_error(flagged, 2) == "--system needs the chat template (this model has no chat template)"


def test_a_model_from_the_environment_or_the_file_says_so(aigc, isolated):
    path = write_config(isolated, '[speech]\nmodel = "smollm2"\n')
    message = one_error(aigc("speak", "hi", "-o", "x.wav"), 3)
    assert message.endswith(f"[the model comes from the config file ({path})]")
    message = one_error(aigc("text", "hi", env={"AIGC_TEXT_MODEL": "nosuch"}), 3)
    assert message.startswith("Unknown model: nosuch")
    assert message.endswith("[the model comes from the environment (AIGC_TEXT_MODEL)]")


def test_aigc_home_that_is_a_file(aigc, tiny, tmp_path):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    problem = f"AIGC_HOME ({home}) is not a folder: {home} is a file; point AIGC_HOME at a folder"
    assert one_error(aigc("models", "default", "text", "gpt2", env={"AIGC_HOME": str(home)}), 2) == problem
    doctor = aigc("doctor", "--json", env={"AIGC_HOME": str(home)})
    assert doctor.returncode == 0 and problem in json.loads(doctor.stdout)["problems"]


def test_doctor_refuses_a_bad_device_flag(aigc):
    assert one_error(aigc("doctor", "--device", "tpu"), 2) == (
        "Unknown device 'tpu': use auto, cpu, cuda, cuda:N, mps or xpu"
    )
