"""`aigc mcp` as agents use it, through the official `mcp` client SDK: the tools and their schemas, each tool's
result equal to the CLI's (same text, PNG and WAV bytes for a seed), progress, a cancelled call, bad arguments
as tool errors naming the field, and nothing read or written outside the output folder. The features run
in-process (the SDK's client on the same Server object `aigc mcp` serves); the stdio process and `/mcp` on a
real `aigc serve` (tests/test_server_security.py) are the contract points with real processes."""

from __future__ import annotations

import base64
import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
from conftest import AIGC
from inproc import run_cli
from server_helpers import server_env

mcp = pytest.importorskip("mcp")
anyio = pytest.importorskip("anyio")

SMALL = {"steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def state(tiny, pipes, vits):
    """What `aigc mcp --preload ... --keep-alive -1` holds: a tiny Llama, a tiny SD and a tiny VITS."""
    from aigc_cli.console import LogConsole
    from aigc_cli.server.state import ServerState, check_preload

    names = [str(tiny["llama"]), str(pipes["sd"]), str(vits)]
    held = ServerState(None, names, LogConsole())
    check_preload(held, names)
    return held


@pytest.fixture
def toolbox(state, tmp_path):
    from aigc_cli.mcp.tools import Toolbox

    return Toolbox(state, tmp_path / "out")


def session(toolbox, work):
    """Run `work(client)` with the SDK's client connected in-process to the server `aigc mcp` builds."""
    from aigc_cli.mcp.server import build_server

    async def main():
        async with mcp.Client(build_server(toolbox)) as client:
            return await work(client)

    return anyio.run(main)


def call(toolbox, name, arguments, progress=None):
    return session(toolbox, lambda client: client.call_tool(name, arguments, progress_callback=progress))


def cli(aigc, *args: str):
    result = aigc(*args, "--local")
    assert result.returncode == 0, result.stderr.decode()
    return result


def logged(modality: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(Path(os.environ["AIGC_HOME"]) / "logs.db")
    db.row_factory = sqlite3.Row
    return db.execute("SELECT * FROM generations WHERE modality = ?", (modality,)).fetchall()


# --- tools and schemas --------------------------------------------------------------------------------------


def test_the_tools_and_their_schemas_come_from_the_settings(toolbox):
    from aigc_cli.settings import SCHEMAS, knobs

    tools = {tool.name: tool for tool in session(toolbox, lambda c: c.list_tools()).tools}
    assert set(tools) == {"generate_text", "generate_image", "speak", "list_models", "describe_file"}
    text = tools["generate_text"].input_schema
    assert text["required"] == ["prompt"] and text["additionalProperties"] is False
    assert {"prompt", "system", "model", "max_tokens", "temperature", "top_p", "seed", "stop"} <= set(
        text["properties"]
    )
    assert text["properties"]["max_tokens"]["minimum"] == knobs(SCHEMAS["text"])["max_tokens"].low
    assert text["properties"]["stop"]["type"] == "array"
    image = tools["generate_image"].input_schema["properties"]
    assert {"negative_prompt", "width", "height", "steps", "guidance", "scheduler", "seed", "count"} <= set(
        image
    )
    assert image["scheduler"]["enum"] == list(knobs(SCHEMAS["image"])["scheduler"].choices)
    assert image["width"]["multipleOf"] == 8
    speak = tools["speak"].input_schema["properties"]
    assert speak["format"]["enum"] == ["wav", "flac", "ogg", "mp3"]
    assert speak["speed"]["maximum"] == knobs(SCHEMAS["speech"])["speed"].high
    for tool in tools.values():
        assert tool.output_schema["type"] == "object"
    assert tools["describe_file"].annotations.read_only_hint is True


# --- each tool equals the CLI ---------------------------------------------------------------------------------


def test_generate_text_equals_the_cli_and_is_logged(aigc, toolbox, tiny):
    llama = str(tiny["llama"])
    result = call(
        toolbox,
        "generate_text",
        {"prompt": "Hello", "model": llama, "seed": 3, "max_tokens": 8, "temperature": 0.8},
    )
    assert not result.is_error, result.content
    expected = cli(
        aigc, "text", "Hello", "-m", llama, "--seed", "3", "--max-tokens", "8", "--temperature", "0.8"
    )
    expected = expected.stdout.decode()
    assert result.content[0].text == expected.removesuffix("\n")
    record = result.structured_content
    assert record["seed"] == 3 and record["text"] == result.content[0].text
    assert record["completion_tokens"] <= 8 and record["notices"] == []
    commands = [row["command"] for row in logged("text")]
    assert commands.count("mcp") == 1


def test_a_capped_max_tokens_reaches_the_agent_as_a_notice(toolbox, tiny):
    result = call(
        toolbox, "generate_text", {"prompt": "Hello", "model": str(tiny["llama"]), "max_tokens": 10**6}
    )
    assert not result.is_error, result.content
    codes = [n["code"] for n in result.structured_content["notices"]]
    assert "max_tokens_capped" in codes
    assert any(c.type == "text" and c.text.startswith("aigc warning: ") for c in result.content[1:])


def test_generate_image_equals_the_cli_png_with_progress(aigc, toolbox, pipes, tmp_path):
    sd = str(pipes["sd"])
    steps: list[tuple[float, float | None, str | None]] = []

    async def progress(done, total, message):
        steps.append((done, total, message))

    arguments = {
        "prompt": "a red fox",
        "model": sd,
        "seed": 7,
        "negative_prompt": "blurry",
        "count": 2,
        **SMALL,
    }
    result = call(toolbox, "generate_image", arguments, progress)
    assert not result.is_error, result.content
    images = [c for c in result.content if c.type == "image"]
    links = [c for c in result.content if c.type == "resource_link"]
    assert len(images) == 2 and len(links) == 2
    denoising = [s for s in steps if s[1] is not None]  # (a first call also says "Loading ...")
    assert [s[:2] for s in denoising] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert denoising[0][2] == "image 1 of 2, step 1 of 2"
    args = ["image", "a red fox", "-m", sd, "--seed", "7", "--negative", "blurry", "-n", "2", "-o", "fox.png"]
    cli(aigc, *args, "--steps", "2", "--width", "64", "--height", "64")
    for index, (image, link) in enumerate(zip(images, links, strict=True)):
        written = (tmp_path / f"fox-{index + 1}.png").read_bytes()
        assert image.mime_type == "image/png"
        assert base64.b64decode(image.data) == written  # same pixels, same records
        saved = Path(link.uri.removeprefix("file://"))
        assert saved.parent == toolbox.out_dir.resolve() and saved.read_bytes() == written
    records = result.structured_content["images"]
    assert [r["seed"] for r in records] == [7, 8] and records[0]["negative"] == "blurry"
    assert len([row for row in logged("image") if row["command"] == "mcp"]) == 2


def test_speak_equals_the_cli_wav(aigc, toolbox, vits, tmp_path):
    result = call(toolbox, "speak", {"text": "Hello there. How are you?", "model": str(vits), "seed": 3})
    assert not result.is_error, result.content
    (audio,) = [c for c in result.content if c.type == "audio"]
    assert audio.mime_type == "audio/wav"
    cli(aigc, "speak", "Hello there. How are you?", "-m", str(vits), "--seed", "3", "-o", "hi.wav")
    assert base64.b64decode(audio.data) == (tmp_path / "hi.wav").read_bytes()
    assert result.structured_content["seed"] == 3 and result.structured_content["path"].endswith(".wav")
    flac = call(toolbox, "speak", {"text": "Hello.", "model": str(vits), "format": "flac"})
    assert [c.mime_type for c in flac.content if c.type == "audio"] == ["audio/flac"]


def test_loading_a_model_is_told_as_progress(vits, tmp_path):
    """A model's first call loads it (seconds; a one-time conversion or export, minutes): the client hears
    what is happening, not silence."""
    from aigc_cli.console import LogConsole
    from aigc_cli.mcp.tools import Toolbox
    from aigc_cli.server.state import ServerState, check_preload

    fresh = ServerState(None, [str(vits)], LogConsole())
    check_preload(fresh, [str(vits)])
    told: list[str | None] = []

    async def progress(done, total, message):
        told.append(message)

    result = call(Toolbox(fresh, tmp_path / "out"), "speak", {"text": "Hi.", "model": str(vits)}, progress)
    assert not result.is_error, result.content
    assert told[0] == f"Loading {vits}" and told[-1] == "sentence 1 of 1"


def test_list_models_and_describe_file_and_resources(toolbox, pipes, vits):
    listed = call(toolbox, "list_models", {"modality": "speech"}).structured_content["models"]
    assert str(vits) in [row["id"] for row in listed]
    assert all(row["modality"] in ("speech", None) for row in listed)
    made = call(toolbox, "generate_image", {"prompt": "a cat", "model": str(pipes["sd"]), "seed": 2, **SMALL})
    path = Path(made.structured_content["images"][0]["path"])
    described = call(toolbox, "describe_file", {"path": path.name})
    assert not described.is_error, described.content
    assert described.structured_content["record"]["seed"] == 2
    assert described.structured_content["record"]["prompt"] == "a cat"

    async def resources(client):
        listing = await client.list_resources()
        read = await client.read_resource(path.as_uri())
        return listing, read

    listing, read = session(toolbox, resources)
    assert [r.uri for r in listing.resources] == [path.as_uri()]
    assert listing.resources[0].mime_type == "image/png"
    assert base64.b64decode(read.contents[0].blob) == path.read_bytes()


# --- bad arguments, paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments", "words"),
    [
        (
            "generate_text",
            {"prompt": "hi", "max_tokens": 0},
            "argument 'max_tokens' must be at least 1 (got 0)",
        ),
        ("generate_text", {"prompt": "hi", "temperature": "hot"}, "argument 'temperature' must be a number"),
        ("generate_text", {"prompt": "hi", "colour": "red"}, "Unknown argument 'colour' for generate_text"),
        ("generate_text", {}, "argument 'prompt' is required"),
        ("generate_text", {"prompt": "  "}, "argument 'prompt' is empty"),
        ("generate_text", {"prompt": "hi", "model": "no-such-model"}, "Unknown model: no-such-model"),
        (
            "generate_image",
            {"prompt": "a", "width": 65},
            "argument 'width' must be a positive multiple of 8 (got 65)",
        ),
        ("generate_image", {"prompt": "a", "count": 9}, "argument 'count' must be at most 8"),
        ("generate_image", {"prompt": "a", "scheduler": "x"}, "Unknown scheduler 'x' (argument 'scheduler')"),
        ("speak", {"text": "hi", "format": "aiff"}, "argument 'format' must be one of wav, flac, ogg, mp3"),
        ("speak", {"text": "hi", "voice": "/tmp/v.npy"}, "argument 'voice' (/tmp/v.npy) names a file"),
        ("speak", {"text": "hi", "model": "smollm2"}, "is a text model"),
        ("list_models", {"modality": "video"}, "argument 'modality' must be one of text, image, speech"),
        ("no_such_tool", {}, "No tool 'no_such_tool'"),
    ],
)
def test_a_bad_argument_is_a_tool_error_naming_it(toolbox, tool, arguments, words):
    result = call(toolbox, tool, arguments)
    assert result.is_error
    (line,) = [c.text for c in result.content]
    assert words in line, line
    assert "Traceback" not in line and "\n" not in line


def test_a_local_folder_not_preloaded_is_refused(toolbox, tiny):
    result = call(toolbox, "generate_text", {"prompt": "hi", "model": str(tiny["gpt2"])})
    assert result.is_error
    assert "is a local path: this server loads only the folders it was started with" in result.content[0].text


def test_nothing_outside_the_output_folder_is_read(toolbox, pipes, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "outside.png")
    toolbox.out_dir.mkdir()
    (toolbox.out_dir / "link.png").symlink_to(tmp_path / "outside.png")
    for arguments in (
        {"path": "../outside.png"},
        {"path": str(tmp_path / "outside.png")},
        {"path": "link.png"},
    ):
        result = call(toolbox, "describe_file", arguments)
        assert result.is_error and "is outside the output folder" in result.content[0].text, arguments
    image = {"prompt": "a", "model": str(pipes["sd"]), "init_image": "../outside.png", **SMALL}
    result = call(toolbox, "generate_image", image)
    assert result.is_error and "argument 'init_image' (../outside.png) is outside the output folder" in (
        result.content[0].text
    )
    listed = session(toolbox, lambda client: client.list_resources())
    assert listed.resources == []  # the link leads outside: not listed, as it is not read
    for bad, words in (("", "argument 'path' is empty"), ("a.png\x00b", "argument 'path' holds a NUL")):
        result = call(toolbox, "describe_file", {"path": bad})
        assert result.is_error and words in result.content[0].text, result.content
    missing = call(toolbox, "describe_file", {"path": "nothing.png"})
    assert "no file nothing.png in the output folder" in missing.content[0].text

    async def read(client):
        try:
            await client.read_resource((tmp_path / "outside.png").as_uri())
        except mcp.MCPError as exc:
            return exc
        return None

    refused = session(toolbox, read)
    assert refused is not None and "is outside the output folder" in refused.message


def test_image_to_image_from_a_file_in_the_output_folder(aigc, toolbox, pipes, tmp_path):
    from PIL import Image

    toolbox.out_dir.mkdir()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(toolbox.out_dir / "start.png")
    arguments = {
        "prompt": "a cat",
        "model": str(pipes["sd"]),
        "seed": 5,
        "steps": 4,
        "init_image": "start.png",
    }
    result = call(toolbox, "generate_image", arguments)
    assert not result.is_error, result.content
    cli(aigc, "image", "a cat", "-m", str(pipes["sd"]), "--seed", "5", "--steps", "4",
        "--init-image", str(toolbox.out_dir / "start.png"), "-o", "here.png")  # fmt: skip
    (image,) = [c for c in result.content if c.type == "image"]
    assert base64.b64decode(image.data) == (tmp_path / "here.png").read_bytes()


# --- the real process over stdio ------------------------------------------------------------------------------


def test_aigc_mcp_over_stdio_answers_and_a_cancelled_call_stops(tiny, pipes, tmp_path):
    from mcp.client.stdio import StdioServerParameters, stdio_client

    out = tmp_path / "made"
    env = server_env(tmp_path)
    args = ["mcp", "--out-dir", str(out), "--keep-alive", "-1", "--preload", str(tiny["llama"])]
    params = StdioServerParameters(
        command=AIGC, args=[*args, "--preload", str(pipes["sd"])], env=env, cwd=tmp_path
    )
    errlog = tempfile.TemporaryFile("w+")  # noqa: SIM115 (the server's stderr, read at the end)

    async def main():
        async with mcp.Client(stdio_client(params, errlog=errlog)) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            text = await client.call_tool("generate_text", {"prompt": "Hello", "seed": 3, "max_tokens": 6,
                                                            "model": str(tiny["llama"])})  # fmt: skip
            started = anyio.Event()

            async def progress(done, total, message):
                started.set()

            async def long_image():
                await client.call_tool("generate_image", {"prompt": "a fox", "model": str(pipes["sd"]),
                                       "steps": 400, "width": 64, "height": 64}, progress_callback=progress)  # fmt: skip

            async with anyio.create_task_group() as group:
                group.start_soon(long_image)
                await started.wait()
                group.cancel_scope.cancel()
            # The engine was given back: a new image on it is answered.
            after = await client.call_tool("generate_image", {"prompt": "a fox", "model": str(pipes["sd"]),
                                                              "seed": 1, **SMALL})  # fmt: skip
            return names, text, after

    names, text, after = anyio.run(main)
    errlog.seek(0)
    log = errlog.read()
    assert "generate_text" in names
    expected = run_cli(
        "text", "Hello", "-m", str(tiny["llama"]), "--seed", "3", "--max-tokens", "6", "--local"
    )
    assert text.content[0].text == expected.stdout.decode().removesuffix("\n")
    assert "aigc: generate_image: cancelled by the client" in log, log
    assert not after.is_error, after.content
    saved = [Path(image["path"]).name for image in after.structured_content["images"]]
    assert sorted(p.name for p in out.glob("*.png")) == saved  # the cancelled image was not saved
    assert "Traceback" not in log, log


def test_a_bad_setting_or_output_folder_stops_aigc_mcp_before_it_answers(aigc, tmp_path):
    """As `aigc serve` does: a bad config.toml value is exit 2 naming the key, an output folder that cannot be
    made exit 4, before any client is told the tools are ready."""
    home = Path(os.environ["AIGC_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[speech]\nspeed = 0\n")
    bad = aigc("mcp")
    assert bad.returncode == 2 and b"[speech] speed in " in bad.stderr and b"at least 0.25" in bad.stderr
    assert bad.stdout == b""
    (home / "config.toml").unlink()
    (tmp_path / "taken").write_text("")
    taken = aigc("mcp", "--out-dir", str(tmp_path / "taken"))
    assert taken.returncode == 4 and b"is a file: give --out-dir a folder" in taken.stderr, taken.stderr
