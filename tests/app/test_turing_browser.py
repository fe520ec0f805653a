"""End-to-end reader studies in Debian's chromium against the real Streamlit server.

1. A reader completes a short study (2 real + 2 synthetic items from a tiny cohort and tiny world model) while the
   test records everything the browser receives: every HTTP response body, every websocket frame, and the page's
   DOM after each item. Blinding: none of it holds an item's source (case id, paths, plan, file names) or its opaque
   token, the images are PNGs of one length with no metadata chunks, and the page is the same for every item apart
   from the image and its position.
2. The server is killed (SIGKILL) mid-session and restarted: the submitted answers are in the database and the reader
   resumes at the next item.
"""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_browser import CHROMIUM, CHROMIUM_ARGS, LIMIT_MS, REPO, _free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines" / "turing"))
from turing_helpers import write_tiny_cohort, write_tiny_weights  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian's chromium is not installed at {CHROMIUM} "
                       "(scripts/setup.sh --test installs it)"),
]

SECRET_PREFIX = "ZQSECRETCASE"
CONFIDENCE = {1: "1 · guessing", 2: "2", 3: "3", 4: "4", 5: "5 · certain"}


@pytest.fixture
def study_env(tmp_path):
    """A study of 2 real + 2 synthetic items (tiny cohort, tiny weights) in a fresh database; the server's env."""
    import torch

    from pipelines.config import load_config
    from pipelines.turing.render import ViewSettings
    from pipelines.turing.sources import cohort_sources
    from pipelines.turing.store import StudyStore
    from pipelines.worldmodel.weights import load_world_model

    torch.set_num_threads(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEWM_")}
    env.update(HF_HUB_OFFLINE="1", MEWM_APP__DATA_DIR=str(tmp_path / "data"),
               MEWM_STUDY__STUDIES_DIR=str(tmp_path / "studies"), MEWM_STUDY__ADMIN_PASSCODE="not-used-here")
    config = load_config(env=env)
    cohort = write_tiny_cohort(tmp_path / "cohort", prefix=SECRET_PREFIX)
    weights = write_tiny_weights(tmp_path / "weights")
    sources = cohort_sources(cohort, load_world_model(weights), n_real=2, n_synthetic=2, seed=3, steps=2)
    store = StudyStore.from_config(config)
    study = store.create_study("browser study", sources, ViewSettings(slices=3, slice_gap_mm=5.0), seed=3,
                               context=True)
    reader = store.add_reader(study.id, "Dr Browser", "radiologist")
    return {"env": env, "store": store, "study": study, "code": reader.code, "reader_id": reader.id,
            "secrets": [str(cohort), str(weights), str(tmp_path / "studies"), SECRET_PREFIX, "Epirubicin",
                        "Gelatin Sponge", "Lobaplatin", "post_ct", "simulated after", "nii.gz"]}


class Server:
    """``streamlit run`` of the app in a subprocess (as `make app` serves it), restartable."""

    def __init__(self, env: dict, log: Path) -> None:
        self.env, self.log_path, self.proc, self.url = env, log, None, None

    def start(self) -> str:
        port = _free_port()
        self.log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "streamlit_app.py"), "--server.headless",
             "true", "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats",
             "false"], cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + LIMIT_MS / 1000
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, as in a crash or a power cut."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()


@pytest.fixture
def server(study_env, tmp_path):
    s = Server(study_env["env"], tmp_path / "server.log")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def _sign_in(page, url: str, code: str) -> None:
    page.goto(url)  # through the app's router (its frame), as a reader arrives
    page.get_by_text("Research use only — not for clinical use").first.wait_for()
    page.get_by_role("link", name="Turing Test").click()
    page.get_by_label("Access code").fill(code)
    page.get_by_role("button", name="Start reading").click()


def _wait_item(page, position: int, total: int) -> None:
    page.get_by_text(f"Image {position} of {total}").wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")]"
        ".filter(i => i.complete && i.naturalWidth > 100).length === 2")


def _answer(page, position: int, call: str, confidence: int) -> None:
    # Scope to this position's widgets (their keys carry the position): while Streamlit finishes a rerun, the
    # previous item's form can still be in the DOM, and a click on it would be lost on a busy machine.
    call_radio = page.locator(f".st-key-turing-call-{position}")
    confidence_radio = page.locator(f".st-key-turing-confidence-{position}")
    call_radio.get_by_text(call, exact=True).click()
    confidence_radio.get_by_text(CONFIDENCE[confidence], exact=True).click()
    call_radio.get_by_role("radio", name=call, exact=True).wait_for()
    page.wait_for_function(
        f"() => document.querySelector('.st-key-turing-call-{position} input:checked') !== null && "
        f"document.querySelector('.st-key-turing-confidence-{position} input:checked') !== null")
    page.get_by_role("button", name="Submit and next").last.click()
    page.get_by_text(f"Image {position} of").wait_for(state="detached")


def _normalised_dom(page, position: int) -> str:
    """The main area's HTML with what may differ between items blanked: image URLs (content hashes), the position
    (text, progress bar, form keys) and React's generated element ids. Taken once the rerun has finished: while
    it runs, the previous item's elements linger marked ``data-stale="true"``, and a widget not yet drawn is a
    ``stSkeleton`` placeholder (both seen on a loaded machine)."""
    page.wait_for_function(
        "() => document.querySelectorAll(\"[data-testid='stMain'] [data-stale='true'], "
        "[data-testid='stMain'] [data-testid='stSkeleton']\").length === 0 && "
        f"document.querySelectorAll('.st-key-turing-call-{position} input[type=radio]').length > 0 && "
        f"document.querySelectorAll('.st-key-turing-confidence-{position} input[type=radio]').length > 0")
    html = page.locator("[data-testid='stMain']").inner_html()
    html = re.sub(r"/media/[0-9a-f]+\.png", "/media/IMAGE.png", html)
    html = html.replace(f"Image {position} of", "Image N of")
    html = re.sub(rf"turing[-.](answer|call|confidence|comment)[-.]{position}\b", r"turing-\1-N", html)
    html = re.sub(r'aria-value(now|text)="[^"]*"', r'aria-value\1="X"', html)  # the progress bar
    html = re.sub(r"translateX\(-?[0-9.]+%\)", "translateX(X)", html)
    html = re.sub(r":r[0-9a-z]+:", ":rID:", html)  # React's ids count remounted widgets (one form per position)
    return html


def _dom_difference(first: str, other: str) -> str:
    """The lines that differ between two normalised pages (empty when the same), for the failure message."""
    import difflib

    split = lambda html: re.sub(r">\s*<", ">\n<", html).splitlines()  # noqa: E731 - one tag per line
    return "\n".join(line for line in difflib.unified_diff(split(first), split(other), lineterm="", n=1)
                     if not line.startswith(("---", "+++")))[:3000]


def test_reader_completes_a_blinded_study(server, study_env, tmp_path):
    from playwright.sync_api import sync_playwright

    from pipelines.turing.render import png_chunks
    from pipelines.turing.tables import StudyItem

    store, total = study_env["store"], study_env["study"].items
    bodies: list[tuple[str, bytes]] = []
    frames: list[bytes] = []
    doms: list[str] = []
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.set_default_timeout(LIMIT_MS)

            def on_response(response):
                try:
                    bodies.append((response.url, response.body()))
                except Exception:  # noqa: BLE001 - a redirect or an aborted request has no body
                    pass

            page.on("response", on_response)
            page.on("websocket", lambda ws: ws.on(
                "framereceived", lambda payload: frames.append(payload if isinstance(payload, bytes)
                                                               else payload.encode())))
            _sign_in(page, server.url, study_env["code"])
            calls = ["Synthetic", "Real", "Synthetic", "Real"]
            for position in range(1, total + 1):
                _wait_item(page, position, total)
                doms.append(_normalised_dom(page, position))
                _answer(page, position, calls[position - 1], 5 - position % 2)
            page.get_by_text(f"You have answered all {total} images").wait_for()
            doms.append(page.content())
            assert page.get_by_text("Traceback").count() == 0
            page.screenshot(path=str(tmp_path / "done.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"failure screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            browser.close()

    # every answer is in the database, once, with what was clicked
    rows = store.answer_rows(study_env["study"].id)
    assert [r["call"] for r in rows] == ["synthetic", "real", "synthetic", "real"]
    assert [r["confidence"] for r in rows] == [4, 5, 4, 5]
    assert all(r["reading_ms"] is not None and r["reading_ms"] >= 0 for r in rows)
    assert len({r["item"] for r in rows}) == total

    # blinding 1: nothing received names a source or an item token
    from pipelines.db import session_scope
    from sqlalchemy import select

    with session_scope(store.engine) as s:
        items = list(s.scalars(select(StudyItem)))
    secrets = study_env["secrets"] + [i.token for i in items] + [i.context_token for i in items] \
        + [i.source for i in items]
    received = [("response " + url, body) for url, body in bodies] + [("websocket", f) for f in frames] \
        + [("dom", d.encode()) for d in doms]
    assert len(frames) > 0 and len(bodies) > 0
    for where, data in received:
        for secret in secrets:
            assert secret.encode() not in data, f"{secret!r} found in {where}"

    # blinding 2: the images are PNGs of one length with no metadata chunks
    images = [body for url, body in bodies if "/media/" in url and body[:4] == b"\x89PNG"]
    assert len(set(images)) >= total + 1  # every item, and the context(s) (one per case: the browser caches)
    assert len({len(b) for b in images}) == 1
    for body in images:
        chunks = png_chunks(body)
        assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and set(chunks[1:-1]) == {b"IDAT"}

    # blinding 3: apart from the image and its position, every item's page is the same
    differences = [_dom_difference(doms[0], d) for d in doms[1:total]]
    assert not any(differences), \
        f"the page differs between items beyond the image and its position: {[d for d in differences if d]}"


def test_server_killed_mid_session_reader_resumes_at_next_item(server, study_env):
    from playwright.sync_api import sync_playwright

    store, total, reader_id = study_env["store"], study_env["study"].items, study_env["reader_id"]
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.set_default_timeout(LIMIT_MS)
            _sign_in(page, server.url, study_env["code"])
            for position in (1, 2):
                _wait_item(page, position, total)
                _answer(page, position, "Real", 3)
            _wait_item(page, 3, total)
            before = store.answer_rows(study_env["study"].id)
            assert len(before) == 2

            server.kill()  # mid-session: item 3 is on screen
            url = server.start()
            _sign_in(page, url, study_env["code"])  # a refreshed page asks for the code again
            _wait_item(page, 3, total)
            assert store.progress(reader_id) == (2, total)
            for position in range(3, total + 1):
                _wait_item(page, position, total)
                _answer(page, position, "Synthetic", 2)
            page.get_by_text(f"You have answered all {total} images").wait_for()
        finally:
            browser.close()
    rows = store.answer_rows(study_env["study"].id)
    assert rows[:2] == before  # the answers given before the crash, unchanged
    assert [r["call"] for r in rows] == ["real", "real"] + ["synthetic"] * (total - 2)
    assert len({r["item"] for r in rows}) == total  # never the same item twice
