"""AppTest of the Treatment Planning page: no case, a missing survival model, and a full run (guideline proposal →
beam search with tiny world weights and the embedded Cox model → ranked table, curves, slices, downloads)."""

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines" / "worldmodel"))
from simulate_helpers import write_tiny_weights  # noqa: E402

ENTRY = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
TIMEOUT = 120  # a hang guard on the shared 2-core machine, not a timing assertion


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("weights"))


def _page(case_id: str | None) -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()
    if case_id is not None:
        at.switch_page("views/case_viewer.py").run()
        at.selectbox(key="viewer.sample").select(case_id).run()
    at.switch_page("views/treatment_planning.py").run()
    assert not at.exception, at.exception
    return at


def test_without_a_case_it_says_so(app_env, tiny_weights, monkeypatch):
    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(tiny_weights))
    at = _page(None)
    assert at.title[0].value == "Treatment Planning"
    assert any("not for clinical use" in w.value for w in at.warning)
    assert any("No case is open" in i.value for i in at.info)


def test_missing_survival_model_names_the_command(app_env, tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("MEWM_PLANNING__SURVIVAL_DIR", str(tmp_path / "none"))
    at = _page("liver01")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "mewm train survival" in errors[0] and "Traceback" not in errors[0]
    assert not at.button


def test_proposal_search_and_result(app_env, tiny_weights, monkeypatch):
    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(tiny_weights))
    at = _page("liver01")
    at.button(key="planning.propose").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("guideline rules" in i.value for i in at.info)  # the rationale is shown
    at.number_input(key="planning.samples").set_value(2)
    at.number_input(key="planning.steps").set_value(2)
    at.number_input(key="planning.beams").set_value(2)
    at.button(key="planning.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    source, result = at.session_state["mewm.planning"]
    assert "child_pugh_score" in result.imputed  # the phantom case has no Child-Pugh score: said, not hidden
    assert any("training means" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert list(table["Plan"]) == [s.plan.canonical() for s in result.ranked]
    assert list(table["Log-risk (mean)"]) == sorted(table["Log-risk (mean)"])
    assert len(at.image) == 2  # before and after the chosen plan, same slice and window
    assert result.settings["samples"] == 2 and result.case_id == "liver01"
    second = at.selectbox(key="planning.show_plan").options[1]
    at.selectbox(key="planning.show_plan").select(second).run()
    assert not at.exception and len(at.image) == 2
