"""The README's screenshots of the web page: `.venv/bin/python tests/web_screenshots.py [OUT]` (default docs/).

A real `aigc serve` in a temporary AIGC_HOME, offline, with the embedded SmolLM2 and Piper voice (so the
chat and speech panels show what people will see) and the tests' tiny Stable Diffusion (no image model is
embedded: its images are noise), driven by Debian's chromium as tests/test_web_page.py drives it. Each
panel is saved as OUT/web-PANEL.png, light at 1100 px wide; the image panel also dark at phone width.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from server_helpers import server_env, start_server
from tiny_pipelines import build_sd

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aigc-shots-") as folder:
        home = Path(folder)
        sd = build_sd(home / "tiny-sd")
        preload = ["smollm2", "piper-joe", str(sd)]
        server = start_server(
            home, "--keep-alive", "-1", *(a for p in preload for a in ("--preload", p)), env=server_env(home)
        )
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1100, "height": 760})
                page.set_default_timeout(120_000)
                page.goto(server.url + "/")
                page.wait_for_selector("#chat-model option", state="attached")
                shoot_all(page, out)
                phone = browser.new_page(viewport={"width": 390, "height": 844}, color_scheme="dark")
                phone.goto(server.url + "/")
                phone.wait_for_selector("#image-model option", state="attached")
                make_image(phone, "a lighthouse at dusk", 7)
                phone.screenshot(path=str(out / "web-image-phone-dark.png"), full_page=True)
                browser.close()
        finally:
            server.stop()


def make_image(page, prompt: str, seed: int) -> None:
    page.click("#tab-image")
    page.select_option("#image-model", index=0)
    page.fill("#image-prompt", prompt)
    for name, value in (("width", "64"), ("height", "64"), ("steps", "8"), ("seed", str(seed))):
        page.fill(f"#image-{name}", value)
    page.click("#image-go")
    page.wait_for_selector("#image-results figure")


def shoot_all(page, out: Path) -> None:
    page.select_option("#chat-model", "smollm2")
    page.fill("#chat-system", "You are a helpful assistant. Answer in two sentences.")
    page.fill("#chat-prompt", "What is a lighthouse for?")
    page.press("#chat-prompt", "Enter")
    page.wait_for_selector("#chat-log li.assistant details", state="attached")
    page.click("#chat-log li.assistant details summary")
    page.screenshot(path=str(out / "web-chat.png"), full_page=True)

    make_image(page, "a lighthouse at dusk, oil painting", 7)
    page.screenshot(path=str(out / "web-image.png"), full_page=True)

    page.click("#tab-speech")
    page.select_option("#speech-model", "piper-joe")
    page.fill("#speech-text", "A lighthouse guides ships home through the dark.")
    page.click("#speech-go")
    page.wait_for_selector("#speech-result audio")
    page.screenshot(path=str(out / "web-speech.png"), full_page=True)

    page.click("#tab-history")
    page.wait_for_selector("#history-rows tr", state="attached")
    page.click("#history-rows tr:nth-child(2) button")
    page.click("#history-detail details summary")
    page.screenshot(path=str(out / "web-history.png"), full_page=True)

    page.click("#tab-file")
    png = page.eval_on_selector(
        "#image-results figure a.download",
        """async (node) => {
            const bytes = new Uint8Array(await (await fetch(node.href)).arrayBuffer());
            let text = ''; for (const b of bytes) text += String.fromCharCode(b); return btoa(text);
        }""",
    )
    import base64

    shot = Path(tempfile.mkdtemp()) / "lighthouse.png"
    shot.write_bytes(base64.b64decode(png))
    page.set_input_files("#file-input", str(shot))
    page.wait_for_selector("#file-result dl")
    page.screenshot(path=str(out / "web-file.png"), full_page=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
