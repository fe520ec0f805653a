"""End-to-end: the real Streamlit server in Debian's chromium opens a sample case and renders the viewer."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-quic", "--disable-sync"]
LIMIT_MS = int(os.environ.get("MEWM_TEST_BROWSER_LIMIT_MS", "120000"))  # hang guard for a shared 2-core machine, not a timing assertion

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian's chromium is not installed at {CHROMIUM} "
                       "(scripts/setup.sh --test installs it)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path, extra_env: dict[str, str] | None = None):
    """Run the app as `make app` serves it (the shipped sample cases, the default configuration plus
    ``extra_env``) until the generator is closed; yields its URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEWM_")}
    env.update(HF_HUB_OFFLINE="1", MEWM_APP__DATA_DIR=str(tmp_path / "data"), **(extra_env or {}))
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "streamlit_app.py"),
         "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
         "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + LIMIT_MS / 1000
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def server(tmp_path):
    """The app as `make app` serves it: the shipped sample cases, the default configuration."""
    yield from _serve(tmp_path)


@pytest.fixture
def planning_server(tmp_path):
    """The app with tiny world-model weights and a fast search (the embedded Cox model, guideline policy)."""
    sys.path.insert(0, str(REPO / "tests" / "pipelines" / "worldmodel"))
    from simulate_helpers import write_tiny_weights

    weights = write_tiny_weights(tmp_path / "weights")
    yield from _serve(tmp_path, {"MEWM_WORLDMODEL__WEIGHTS_DIR": str(weights), "MEWM_PLANNING__SAMPLES": "1",
                                 "MEWM_PLANNING__STEPS": "2", "MEWM_PLANNING__BEAMS": "2"})


def _open_sample_case(page, server: str, title: str) -> None:
    page.goto(server)
    # The health check answers before the script runs: wait for the page's own text.
    page.get_by_text("Research use only — not for clinical use").first.wait_for()
    page.get_by_role("link", name="Case Viewer").click()
    page.get_by_role("heading", name="Case Viewer").wait_for()
    page.locator("[data-testid='stSelectbox']").filter(has_text="Sample case").click()
    page.get_by_role("option", name=title).click()
    page.get_by_text("Case summary").wait_for()


def test_open_sample_case_renders_viewer_image(server, tmp_path):
    from playwright.sync_api import sync_playwright

    from pipelines.config import SAMPLE_DATA_DIR
    from pipelines.samples import list_sample_cases

    title = list_sample_cases(SAMPLE_DATA_DIR)[0].title

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(LIMIT_MS)
            _open_sample_case(page, server, title)
            images = page.locator("[data-testid='stImage'] img")
            images.nth(2).wait_for()
            page.wait_for_function(
                "() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")]"
                ".filter(i => i.complete && i.naturalWidth > 100).length === 3")
            widths = [images.nth(i).evaluate("img => img.naturalWidth") for i in range(3)]
            assert all(w > 100 for w in widths), widths
            assert page.get_by_text("Traceback").count() == 0
            page.get_by_text(f"Open case: Sample: {title}").wait_for()  # the sidebar frame, drawn after the page
            assert page.get_by_text(f"Open case: Sample: {title}").count() == 1
            # a page's own URL opened directly still goes through the entrypoint: frame, notice, no traceback
            page.goto(f"{server}/treatment_planning")
            page.get_by_role("heading", name="Treatment Planning").wait_for()
            page.get_by_text("Research use only — not for clinical use. MeWM Workbench").wait_for()
            assert page.get_by_text("Traceback").count() == 0 and page.get_by_text("KeyError").count() == 0
            page.goto(server)
            _open_sample_case(page, server, title)
            shot = Path(os.environ.get("MEWM_TEST_SCREENSHOT", tmp_path / "viewer.png"))
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            print(f"screenshot: {shot}")
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"failure screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            browser.close()


def test_treatment_planning_in_the_browser(planning_server, tmp_path):
    """A clinician opens a sample case, asks the guideline policy, runs the search, sees the ranked plans."""
    from playwright.sync_api import sync_playwright

    from pipelines.config import SAMPLE_DATA_DIR
    from pipelines.samples import list_sample_cases

    title = list_sample_cases(SAMPLE_DATA_DIR)[0].title
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.set_default_timeout(LIMIT_MS)
            _open_sample_case(page, planning_server, title)
            page.get_by_role("link", name="Treatment Planning").click()
            page.get_by_role("heading", name="Treatment Planning").wait_for()
            page.get_by_text("not for clinical use").first.wait_for()
            page.get_by_role("button", name="Ask the guideline policy").click()
            page.get_by_text("guideline rules v1").first.wait_for()
            page.get_by_role("button", name="Search plans").click()
            page.get_by_text("Ranked plans (lowest predicted risk first)").wait_for()
            page.get_by_text("Download report (HTML)").wait_for()
            page.wait_for_function(
                "() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")]"
                ".filter(i => i.complete && i.naturalWidth > 100).length >= 2")
            assert page.get_by_text("Traceback").count() == 0
            page.screenshot(path=str(tmp_path / "planning.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"failure screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            browser.close()
