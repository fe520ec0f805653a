"""AppTest of the Reasoning Chat page: an answer with per-step scores, bad input, missing model dir, dead server."""

import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines" / "reasoning"))
from reasoning_helpers import BARE, GOOD, start_fake_openai, write_tiny_encoder, write_tiny_prm  # noqa: E402

ENTRY = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
TIMEOUT = 60  # a hang guard on the shared machine, not a timing assertion


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory) -> Path:
    enc = write_tiny_encoder(tmp_path_factory.mktemp("enc"))
    return write_tiny_prm(tmp_path_factory.mktemp("prm"), enc)


@pytest.fixture
def openai_env(app_env, prm_dir, monkeypatch):
    url, srv = start_fake_openai([BARE, GOOD])
    for key, value in {"BACKEND": "openai", "OPENAI_BASE_URL": url, "OPENAI_MODEL": "tiny-served",
                       "PRM_DIR": str(prm_dir), "TIMEOUT_S": "2"}.items():
        monkeypatch.setenv(f"MEWM_REASONING__{key}", value)
    yield url
    srv.shutdown()


def _page() -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()
    at.switch_page("views/reasoning_chat.py").run()
    assert not at.exception, at.exception
    return at


def _ask(at: AppTest, question: str, options: str = "", n: int = 2) -> AppTest:
    at.text_area(key="reasoning.question").input(question)
    at.text_area(key="reasoning.options").input(options)
    at.slider(key="reasoning.n").set_value(n)
    at.button(key="reasoning.ask").click().run()
    assert not at.exception, at.exception
    return at


def test_answer_with_steps_scores_and_candidates(openai_env):
    at = _page()
    assert at.title[0].value == "Reasoning Chat"
    assert any("Research use only" in w.value for w in at.warning)
    _ask(at, "Which vitamin deficiency causes scurvy?", "Vitamin A\nVitamin C\nVitamin D", n=4)
    assert not at.error
    assert at.subheader[0].value == "Answer: B. Vitamin C"
    assert any("tiny-served" in c.value for c in at.caption)  # backend and model names shown
    assert len(at.expander) == 4
    shown = "\n".join(m.value for m in at.markdown)
    assert "Step 1:" in shown and "not scored" in shown and "background:" in shown  # coloured step scores
    assert any("not eligible" in c.value for c in at.caption)  # the bare answers are shown as ineligible


def test_empty_question_is_a_plain_error(openai_env):
    at = _ask(_page(), "   ")
    assert len(at.error) == 1 and "empty" in at.error[0].value and "Traceback" not in at.error[0].value


def test_over_long_question_shows_the_truncation(openai_env):
    at = _ask(_page(), "why " * 2000, "yes\nno")
    assert any("only the first" in w.value for w in at.warning)
    assert not at.error


def test_missing_model_directory_is_a_plain_error(app_env, prm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MEWM_REASONING__BACKEND", "hf")
    monkeypatch.setenv("MEWM_REASONING__HF_MODEL_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("MEWM_REASONING__PRM_DIR", str(prm_dir))
    at = _ask(_page(), "Which vitamin deficiency causes scurvy?")
    assert len(at.error) == 1 and "No Hugging Face model directory" in at.error[0].value


def test_unreachable_server_is_a_plain_error_not_a_hang(app_env, prm_dir, monkeypatch):
    for key, value in {"BACKEND": "openai", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_MODEL": "x",
                       "PRM_DIR": str(prm_dir), "TIMEOUT_S": "2"}.items():
        monkeypatch.setenv(f"MEWM_REASONING__{key}", value)
    t0 = time.monotonic()
    at = _ask(_page(), "Which vitamin deficiency causes scurvy?")
    assert len(at.error) == 1 and "Cannot reach the server" in at.error[0].value
    assert time.monotonic() - t0 < TIMEOUT
