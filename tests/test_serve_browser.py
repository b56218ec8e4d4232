"""The web page, for real: headless Chromium (Debian package) driven by Playwright."""

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from serve_helpers import LiveServer, TonePipeline

from unisono.serve import create_app
from unisono.serve.catalog import GUIDE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (./setup.sh)")


@contextlib.contextmanager
def open_page(base_url: str):
    """``(page, errors)``: the web page loaded with its tasks in headless Chromium; ``errors``: uncaught page errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base_url + "/")
            page.wait_for_function("document.querySelectorAll('#task option').length > 0")
            yield page, errors
        finally:
            browser.close()


def run_page(base_url: str, task: str, fill: dict, screenshot: Path) -> dict:
    with open_page(base_url) as (page, errors):
        page.select_option("#task", task)
        for name, value in fill.items():
            page.fill(f"#in-{name}", value)
        page.click("#go")
        page.wait_for_function("document.getElementById('player').duration > 0", timeout=30000)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        return {
            "duration": page.evaluate("document.getElementById('player').duration"),
            "playable": page.evaluate("document.getElementById('player').readyState >= 1"),
            "download": page.get_attribute("#download", "href"),
            "status": page.text_content("#status"),
            "errors": errors,
        }


def test_page_generates_playable_audio(tmp_path):
    out_dir = Path(os.environ.get("UNISONO_ARTIFACTS", tmp_path))
    with LiveServer(create_app(TonePipeline())) as url:
        result = run_page(url, "tts", {"text": "x" * 60}, out_dir / "web_page_tone.png")
    assert result["errors"] == []
    assert result["playable"] and abs(result["duration"] - 0.7) < 0.05
    assert result["download"].startswith("blob:") and result["status"].startswith("done in")
    assert (out_dir / "web_page_tone.png").stat().st_size > 10_000


def test_page_with_a_real_checkpoint(tiny_checkpoint, tmp_path):
    from unisono.inference import Pipeline
    from unisono.serve import ServerLimits

    out_dir = Path(os.environ.get("UNISONO_ARTIFACTS", tmp_path))
    app = create_app(Pipeline.from_pretrained(tiny_checkpoint), ServerLimits(max_output_seconds=2.0))
    with LiveServer(app) as url:
        result = run_page(url, "text_to_sound", {"caption": "A dog barks at 0.5 s, then a bell rings."},
                          out_dir / "web_page.png")
    assert result["errors"] == [] and result["playable"]
    assert 0 < result["duration"] <= 2.0 + 0.05
    assert (out_dir / "web_page.png").stat().st_size > 10_000


def test_tasks_have_plain_names_and_a_text_answer_hides_the_previous_audio(tmp_path):
    """Tasks are listed by a plain name, each input is explained, an example fills the text inputs; after an
    audio result, a text result leaves no waveform, spectrogram or player of the old audio on the page."""
    speech = tmp_path / "speech.wav"
    sf.write(speech, np.full(8000, 0.01, np.float32), 16000)
    out_dir = Path(os.environ.get("UNISONO_ARTIFACTS", tmp_path))
    with LiveServer(create_app(TonePipeline())) as url, open_page(url) as (page, errors):
        names = page.eval_on_selector_all("#task option", "os => os.map(o => o.textContent)")
        assert "Text to speech (tts)" in names and "Speech to text (asr)" in names
        page.select_option("#task", "tts")
        assert page.text_content("#help-prompt") == GUIDE["tts"]["inputs"]["prompt"]
        assert "default" in page.text_content("label[for=in-prompt]")  # optional: the model's default voice
        page.click("#example")
        assert page.input_value("#in-text") == GUIDE["tts"]["example"]["text"]
        page.click("#go")
        page.wait_for_function("document.getElementById('player').duration > 0", timeout=30000)
        assert all(page.is_visible(s) for s in ("#wave", "#spec", "#player"))
        page.select_option("#task", "asr")
        assert page.is_hidden("#example")  # asr has no text input to fill
        page.set_input_files("#in-audio", str(speech))
        page.click("#go")
        page.wait_for_selector("#text-out", state="visible", timeout=30000)
        assert page.text_content("#text-out") == "0.50 seconds"
        assert [s for s in ("#wave", "#spec", "#player", "#download") if page.is_visible(s)] == []
        page.screenshot(path=str(out_dir / "web_page_text_answer.png"), full_page=True)
        assert errors == []
