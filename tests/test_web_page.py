"""The web page on `aigc serve`, in a real headless browser (Debian's chromium driven by Playwright) against a
real server with tiny models and an API key: what the page shows equals what the API answers for the same
settings and seed; the log's History and "What is this file?"; the key, errors, the page's weight, and that
it reaches no other host.

Set AIGC_SCREENSHOTS=docs to write each panel's screenshot there (the README shows them).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import run_aigc
from server_helpers import http, server_env, start_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "no chromium: apt-get install chromium (.ci/run installs it; Playwright's own download is not used)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")

KEY = "sekrit"
AUTH = {"Authorization": f"Bearer {KEY}"}
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
ARGS += ["--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"]
SHOTS = os.environ.get("AIGC_SCREENSHOTS")


@pytest.fixture(scope="module")
def served(tiny, pipes, vits, tmp_path_factory):
    """One `aigc serve --api-key` holding a tiny chat Llama, a tiny SD and a tiny VITS."""
    home = tmp_path_factory.mktemp("web")
    preload = [tiny["llama"], pipes["sd"], vits]
    args = ["--keep-alive", "-1", "--api-key", KEY, *(a for p in preload for a in ("--preload", str(p)))]
    server = start_server(home, *args, env=server_env(home))
    server.models = {"text": str(tiny["llama"]), "image": str(pipes["sd"]), "speech": str(vits)}
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def open_page(browser, served, **context):
    """A new tab on the page with the key given once (the page asks for it at the first 401), its models
    listed. Requests to any host but the server's are recorded in page.foreign."""
    tab = browser.new_context(**context).new_page()
    tab.set_default_timeout(20_000)
    tab.foreign, tab.errors = [], []
    tab.on(
        "request",
        lambda r: None if r.url.startswith((served.url, "data:", "blob:")) else tab.foreign.append(r.url),
    )
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.goto(served.url + "/")
    tab.wait_for_selector("#key-form:not([hidden])")
    tab.fill("#key", KEY)
    tab.press("#key", "Enter")
    tab.wait_for_selector("#image-scheduler option[value='euler']", state="attached")
    return tab


@pytest.fixture
def page(browser, served):
    tab = open_page(browser, served)
    yield tab
    assert tab.foreign == [] and tab.errors == []
    tab.context.close()


def api(served, path, body):
    status, headers, raw = http(served.url + path, "POST", body, headers=AUTH)
    assert status == 200, raw[:300]
    return headers, raw


def blob_bytes(page, selector: str, attribute: str) -> bytes:
    """The bytes behind an element's blob: URL, as a download would save them."""
    b64 = page.eval_on_selector(
        selector,
        f"""async (node) => {{
            const bytes = new Uint8Array(await (await fetch(node.{attribute})).arrayBuffer());
            let text = ''; for (const b of bytes) text += String.fromCharCode(b); return btoa(text);
        }}""",
    )
    return base64.b64decode(b64)


def rows(served, where: str = "1", params: tuple = ()) -> list[sqlite3.Row]:
    if not (served.home / "logs.db").exists():
        return []
    db = sqlite3.connect(f"file:{served.home / 'logs.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(f"SELECT * FROM generations WHERE {where} ORDER BY id", params).fetchall()
    finally:
        db.close()


def shot(page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"web-{name}.png"), full_page=True)


# --- the page itself ------------------------------------------------------------------------------------------


def test_the_page_is_small_reaches_only_its_server_and_asks_for_the_key_once(browser, served):
    tab = browser.new_context().new_page()
    tab.set_default_timeout(20_000)
    loaded, foreign = [], []
    tab.on(
        "request", lambda r: foreign.append(r.url) if not r.url.startswith((served.url, "data:")) else None
    )
    tab.on("response", lambda r: loaded.append(r))
    answer = tab.goto(served.url + "/")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert "access-control-allow-origin" not in answer.headers
    tab.wait_for_selector("#key-form:not([hidden])")
    # the page's own files need no key; every API call does, and a wrong key is the API's one line
    assert "needs an API key" in tab.text_content("#key-error")
    tab.fill("#key", "wrong")
    tab.press("#key", "Enter")
    tab.wait_for_function("() => document.querySelector('#key-error').textContent.includes('Bearer')")
    assert tab.is_visible("#key-form")
    tab.fill("#key", KEY)
    tab.press("#key", "Enter")
    tab.wait_for_selector("#chat-model option", state="attached")
    assert tab.is_hidden("#key-form")
    assert tab.evaluate("sessionStorage.getItem('aigc.apiKey')") == KEY
    assert foreign == []
    sizes = {r.url.removeprefix(served.url): len(r.body()) for r in loaded if r.status == 200}
    assert {"/", "/ui/page.css", "/ui/page.js", "/v1/models"} <= set(sizes)
    assert sum(sizes.values()) < 60_000, sizes  # the page, its style and script, the first API answers
    assert tab.evaluate("document.documentElement.outerHTML").count("<script") == 1
    tab.context.close()
    # the Host check guards the page as the API
    assert http(served.url + "/", headers={"Host": "evil.example"})[0] == 403
    assert http(served.url + "/api/logs")[0] == 401


def test_every_control_has_a_label_tabs_follow_the_keyboard_and_it_fits_a_phone(browser, served):
    tab = open_page(browser, served, viewport={"width": 375, "height": 740}, color_scheme="dark")
    unlabelled = tab.evaluate(
        """[...document.querySelectorAll('input, select, textarea')]
            .filter((n) => n.labels.length === 0 && !n.getAttribute('aria-label')).map((n) => n.id)"""
    )
    assert unlabelled == []
    tab.focus("#tab-chat")
    tab.keyboard.press("ArrowRight")
    assert tab.evaluate("document.activeElement.id") == "tab-image"
    assert tab.is_visible("#image-prompt") and tab.is_hidden("#chat-prompt")
    for name in ("image", "speech", "history", "file", "chat"):
        tab.click(f"#tab-{name}")
        assert tab.evaluate("document.documentElement.scrollWidth") <= 375, name
    background = tab.evaluate("getComputedStyle(document.body).backgroundColor")
    assert sum(int(c) for c in background[4:-1].split(",")[:3]) < 150, background  # dark by the system
    assert tab.get_attribute("#chat-log", "aria-live") == "polite"
    tab.context.close()


# --- chat -----------------------------------------------------------------------------------------------------


def test_a_streamed_reply_equals_the_api_answer_and_the_conversation_goes_on(page, served):
    page.click("#chat-form summary")
    page.fill("#chat-max-tokens", "12")
    page.fill("#chat-system", "Be brief.")
    said = []
    for prompt in ("Tell me a story", "And then?"):
        page.fill("#chat-prompt", prompt)
        page.press("#chat-prompt", "Enter")
        page.wait_for_selector(
            f"#chat-log li.assistant:nth-of-type({2 * len(said) + 2}) details", state="attached"
        )
        said.append(page.eval_on_selector_all("#chat-log li.assistant .content", "n => n.at(-1).textContent"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story"}]
    body = {"model": served.models["text"], "max_tokens": 12}
    first = json.loads(api(served, "/v1/chat/completions", {**body, "messages": messages})[1])
    assert said[0] == first["choices"][0]["message"]["content"]
    messages += [{"role": "assistant", "content": said[0]}, {"role": "user", "content": "And then?"}]
    second = json.loads(api(served, "/v1/chat/completions", {**body, "messages": messages})[1])
    assert said[1] == second["choices"][0]["message"]["content"]
    shot(page, "chat")
    # each turn a row, both in one conversation, the second with the first turn's history
    turns = rows(served, "command = 'serve' AND system = 'Be brief.' AND conversation IS NOT NULL")[:2]
    assert [t["prompt"] for t in turns] == ["Tell me a story", "And then?"]
    assert turns[0]["conversation"] == turns[1]["conversation"] and [t["turn"] for t in turns] == [1, 2]
    assert json.loads(turns[1]["messages"])[1] == ["assistant", said[0]]


def test_an_api_error_is_its_one_line(page):
    page.click("#chat-form summary")
    page.fill("#chat-seed", "100000000000000000000")
    page.fill("#chat-prompt", "hi")
    page.press("#chat-prompt", "Enter")
    page.wait_for_selector("#chat-error:not(:empty)")
    assert page.text_content("#chat-error").startswith("field 'seed' must be at most 4294967295")
    assert page.input_value("#chat-prompt") == "hi"  # kept, to send again


# --- images ---------------------------------------------------------------------------------------------------


def make_image(page, prompt: str, seed: int, steps: int = 4) -> None:
    page.click("#tab-image")
    page.fill("#image-prompt", prompt)
    for name, value in (("width", "64"), ("height", "64"), ("steps", str(steps)), ("seed", str(seed))):
        page.fill(f"#image-{name}", value)
    page.click("#image-go")
    page.wait_for_selector("#image-results figure")


def test_an_image_shows_previews_then_the_api_bytes_with_its_record(page, served):
    make_image(page, "a red fox", 7)
    assert int(page.get_attribute("#image-preview", "data-previews")) >= 1
    assert page.text_content("#image-progress-text") == "Done: 1 image"
    png = blob_bytes(page, "#image-results figure a.download", "href")
    body = {"model": served.models["image"], "prompt": "a red fox", "size": "64x64", "steps": 4, "seed": 7}
    answer = json.loads(api(served, "/v1/images/generations", body)[1])
    assert png == base64.b64decode(answer["data"][0]["b64_json"])  # the PNG with its record chunks
    logged = rows(served, "prompt = 'a red fox'")  # the page's and the API's: one row each, the PNG's hash
    assert [r["sha256"] for r in logged] == [hashlib.sha256(png).hexdigest()] * 2
    assert [r["command"] for r in logged] == ["serve", "serve"] and logged[0]["size"] == len(png)
    assert page.get_attribute("#image-results figure a.download", "download") == "aigc-7.png"
    record = page.text_content("#image-results figure dl")
    assert "a red fox" in record and "seed7" in record.replace(" ", "") and "steps4" in record
    shot(page, "image")
    # again with a change: the form holds the record
    page.click("#image-results figure button")
    assert page.input_value("#image-prompt") == "a red fox" and page.input_value("#image-seed") == "7"
    assert not page.is_checked("#image-random")


def test_stop_ends_an_image_at_its_step_on_the_server(page, served):
    before = len(served.log)
    page.click("#tab-image")
    page.fill("#image-prompt", "a long wait")
    for name, value in (("width", "64"), ("height", "64"), ("steps", "400")):
        page.fill(f"#image-{name}", value)
    page.click("#image-go")
    page.wait_for_function(
        "() => document.querySelector('#image-progress-text').textContent.includes('step 2 of')"
    )
    page.click("#image-stop")
    page.wait_for_function("() => document.querySelector('#image-progress-text').textContent === 'Stopped'")
    assert page.is_enabled("#image-go") and page.text_content("#image-error") == ""
    served.wait_for_line("the client went away: stopped", since=before)
    assert rows(served, "prompt = 'a long wait'") == []  # nothing made, nothing logged


def test_inpainting_from_an_uploaded_image_and_mask_equals_the_api(page, served, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 40, 40)).save(tmp_path / "start.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(tmp_path / "mask.png")
    page.click("#tab-image")
    page.set_input_files("#image-init", str(tmp_path / "start.png"))
    page.set_input_files("#image-mask", str(tmp_path / "mask.png"))
    make_image(page, "a blue square", 3, steps=2)
    png = blob_bytes(page, "#image-results figure a.download", "href")
    body = {
        "model": served.models["image"],
        "prompt": "a blue square",
        **{"size": "64x64", "steps": 2, "seed": 3},
        "init_image": base64.b64encode((tmp_path / "start.png").read_bytes()).decode(),
        "mask": base64.b64encode((tmp_path / "mask.png").read_bytes()).decode(),
    }
    answer = json.loads(api(served, "/v1/images/generations", body)[1])
    assert png == base64.b64decode(answer["data"][0]["b64_json"])


def test_a_painted_mask_is_sent(page, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (40, 200, 40)).save(tmp_path / "start.png")
    page.click("#tab-image")
    page.set_input_files("#image-init", str(tmp_path / "start.png"))
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] / 2)
    page.mouse.up()
    assert page.is_visible("#mask-clear")
    make_image(page, "a green field", 4, steps=2)
    assert "mask" in page.text_content("#image-results figure dl")


# --- speech ---------------------------------------------------------------------------------------------------


def test_speech_plays_the_api_wav(page, served):
    page.click("#tab-speech")
    page.fill("#speech-text", "Hello there.")
    page.fill("#speech-seed", "5")
    page.click("#speech-go")
    page.wait_for_selector("#speech-result audio")
    page.wait_for_function("() => document.querySelector('#speech-result audio').readyState >= 1")
    assert page.evaluate("document.querySelector('#speech-result audio').duration") > 0  # it plays
    wav = blob_bytes(page, "#speech-result audio", "src")
    body = {"model": served.models["speech"], "input": "Hello there.", "response_format": "wav", "seed": 5}
    assert wav == api(served, "/v1/audio/speech", body)[1]
    assert wav[:4] == b"RIFF"
    assert page.get_attribute("#speech-result a.download", "download") == "aigc-speech-5.wav"
    shot(page, "speech")


# --- history: the log -----------------------------------------------------------------------------------------


def test_history_finds_a_generation_and_runs_it_again(page, served):
    body = {
        "model": served.models["image"],
        "prompt": "a lighthouse at dusk",
        "size": "64x64",
        "steps": 2,
        "seed": 9,
    }
    original = base64.b64decode(
        json.loads(api(served, "/v1/images/generations", body)[1])["data"][0]["b64_json"]
    )
    page.click("#tab-history")
    page.fill("#history-search", "lighthouse")
    page.press("#history-search", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#history-rows tr').length === 1")
    assert "a lighthouse at dusk" in page.text_content("#history-rows")
    page.click("#history-rows tr button")
    assert "serve" in page.text_content("#history-detail")
    shot(page, "history")
    page.click("#history-detail button:text('Run it again')")
    page.wait_for_selector("#image-results figure")
    assert blob_bytes(page, "#image-results figure a.download", "href") == original
    # each generation the server served is one row; the CLI's runs through it are the CLI's rows alone
    assert len(rows(served, "prompt = ?", ("a lighthouse at dusk",))) == 2


def test_history_runs_a_chat_turn_again_with_its_conversation(page, served):
    messages = [
        {"role": "user", "content": "Count the waves"},
        {"role": "assistant", "content": "One, two."},
        {"role": "user", "content": "More waves"},
    ]
    body = {"model": served.models["text"], "max_tokens": 10, "temperature": 0.9, "seed": 21, "top_k": 5}
    reply = json.loads(api(served, "/v1/chat/completions", {**body, "messages": messages})[1])
    page.click("#tab-history")
    page.fill("#history-search", "More waves")
    page.select_option("#history-modality", "text")
    page.press("#history-search", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#history-rows tr').length === 1")
    page.click("#history-rows tr button")
    page.click("#history-detail button:text('Run it again')")
    page.wait_for_selector("#chat-log li:nth-of-type(4) details", state="attached")
    contents = page.eval_on_selector_all("#chat-log li .content", "n => n.map((x) => x.textContent)")
    assert contents == [
        "Count the waves",
        "One, two.",
        "More waves",
        reply["choices"][0]["message"]["content"],
    ]


def test_a_cli_run_through_the_server_is_logged_once(served):
    env = {**served.env, "AIGC_HOST": served.url, "AIGC_API_KEY": KEY}
    args = [
        "image",
        "a cli kite",
        "-m",
        served.models["image"],
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
    ]
    result = run_aigc(*args, "--seed", "2", "-o", str(served.home / "kite.png"), env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert [r["command"] for r in rows(served, "prompt = ?", ("a cli kite",))] == ["image"]
    status, _, raw = http(served.url + "/api/logs?search=kite", headers=AUTH)
    (row,) = json.loads(raw)["data"]
    assert (status, row["file"], row["seed"]) == (200, "kite.png", 2) and "path" not in row


def test_the_log_routes_refuse_bad_queries_in_one_line(served):
    for query, param in (("modality=video", "modality"), ("limit=0", "limit"), ("before=x", "before")):
        status, _, raw = http(served.url + f"/api/logs?{query}", headers=AUTH)
        assert (status, json.loads(raw)["error"]["param"]) == (400, param)
    status, _, raw = http(served.url + "/api/logs/999999", headers=AUTH)
    assert status == 404 and "No generation 999999" in json.loads(raw)["error"]["message"]


# --- what is this file? ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_describe_reads_a_jpeg_or_webp_record(served, fmt):
    from PIL import Image

    from aigc_cli.metadata import image_metadata

    record = {
        "kind": "image",
        "prompt": "a kite",
        "model": "sd-turbo",
        "seed": 5,
        "steps": 1,
        "guidance": 0.0,
    }
    record.update(width=8, height=8, sampler="Euler")
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format=fmt, **image_metadata(fmt, record))
    body = {"file": base64.b64encode(out.getvalue()).decode(), "name": f"kite.{fmt.lower()}"}
    status, _, raw = http(served.url + "/api/describe", "POST", body, headers=AUTH)
    answer = json.loads(raw)
    assert (status, answer["kind"], answer["record"]["prompt"], answer["record"]["seed"]) == (
        200,
        "image",
        "a kite",
        5,
    )


def test_a_file_shows_its_record_and_is_made_again(page, served, tmp_path):
    body = {
        "model": served.models["image"],
        "prompt": "a paper boat",
        "size": "64x64",
        "steps": 2,
        "seed": 11,
    }
    png = base64.b64decode(json.loads(api(served, "/v1/images/generations", body)[1])["data"][0]["b64_json"])
    (tmp_path / "boat.png").write_bytes(png)
    page.click("#tab-file")
    page.set_input_files("#file-input", str(tmp_path / "boat.png"))
    page.wait_for_selector("#file-result dl")
    shown = page.text_content("#file-result")
    assert "boat.png" in shown and "a paper boat" in shown and "11" in shown
    shot(page, "file")
    page.click("#file-result button")
    page.wait_for_selector("#image-results figure")
    assert blob_bytes(page, "#image-results figure a.download", "href") == png

    speech = {"model": served.models["speech"], "input": "Good night.", "response_format": "wav", "seed": 4}
    wav = api(served, "/v1/audio/speech", speech)[1]
    page.click("#tab-file")
    page.evaluate(  # dropped on the page, as from a file manager
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], 'night.wav', { type: 'audio/wav' }));
            const drop = new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true });
            document.querySelector('#drop').dispatchEvent(drop);
        }""",
        base64.b64encode(wav).decode(),
    )
    page.wait_for_function("() => document.querySelector('#file-result').textContent.includes('Good night.')")

    (tmp_path / "plain.png").write_bytes(base64.b64decode(EMPTY_PNG))
    page.set_input_files("#file-input", str(tmp_path / "plain.png"))
    page.wait_for_selector("#file-error:not(:empty)")
    assert page.text_content("#file-error") == "plain.png records no aigc parameters"


EMPTY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
"""A 1x1 PNG that records nothing."""
