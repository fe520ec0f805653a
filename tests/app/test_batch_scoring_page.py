"""AppTest of the Batch Scoring page: the sample manifest scored with tiny models (results table, download, the
CT-only case listed as failed with its reason), a rerun that resumes, and a bad server-side path."""

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines" / "planning"))
from batch_helpers import TINY_LOADER, write_tiny_weights  # noqa: E402

ENTRY = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
TIMEOUT = 120  # a hang guard on the shared 2-core machine, not a timing assertion
PLANS = ["Epirubicin; Lipiodol", "PVA"]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture
def batch_env(app_env, tiny_weights, tmp_path, monkeypatch):
    """Tiny world model, the test survival model (as the batch's model loader), a fresh app data folder."""
    from pipelines.planning import batch

    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("MEWM_APP__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(batch, "DEFAULT_LOADER", TINY_LOADER)
    return tmp_path / "data"


def _page() -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()
    at.switch_page("views/batch_scoring.py").run()
    assert not at.exception, at.exception
    return at


def _run(at: AppTest) -> AppTest:
    at.number_input(key="batch.samples").set_value(2)
    at.number_input(key="batch.steps").set_value(2)
    at.multiselect(key="batch.plans").set_value(PLANS)
    at.button(key="batch.run").click().run()
    assert not at.exception, at.exception
    return at


def test_sample_manifest_is_scored_and_failures_listed(batch_env):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        at = _page()
        assert at.title[0].value == "Batch Scoring"
        assert any("Research use only" in w.value for w in at.warning)
        assert any("2 cases" in c.value for c in at.caption)
        _run(at)
        assert not at.error, [e.value for e in at.error]
        table = at.dataframe[0].value
        assert list(table["Case"]) == ["liver01", "ctonly"] and list(table["Status"]) == ["ok", "failed"]
        assert table["Best plan"][0] in PLANS and table["2nd plan"][0] in PLANS
        failures = [w.value for w in at.warning if w.value.startswith("ctonly")]
        assert len(failures) == 1 and "tumour" in failures[0]
        assert "Traceback" not in failures[0]
        report = at.session_state["batch.report"]
        assert report.out.parent == batch_env / "batches" and (report.out / "results.csv").is_file()
        assert at.get("download_button")  # the results CSV

        _run(at)  # same manifest, same settings: resumed, nothing planned again
        again = at.session_state["batch.report"]
        assert again.out == report.out and (again.scored, again.skipped) == (0, 2)
        assert list(at.dataframe[0].value["Status"]) == ["ok", "failed"]
    finally:
        torch.set_num_threads(previous)


def test_a_missing_server_manifest_is_a_plain_error(batch_env, tmp_path):
    at = _page()
    at.radio(key="batch.source").set_value("Manifest on the server").run()
    at.text_input(key="batch.path").input(str(tmp_path / "nowhere")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "No manifest at" in errors[0] and "Traceback" not in errors[0]
    assert not at.button
