"""AppTest of the Simulate page: no case, missing weights, plan validation, and a simulation with tiny weights."""

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

# the tiny-checkpoint helpers are shared with tests/pipelines/worldmodel/test_simulate.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines" / "worldmodel"))
from simulate_helpers import write_tiny_weights  # noqa: E402

ENTRY = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
TIMEOUT = 60  # a hang guard on the shared 2-core machine, not a timing assertion


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("weights"))


def _simulate_page(case_id: str | None) -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()
    if case_id is not None:
        at.switch_page("views/case_viewer.py").run()
        at.selectbox(key="viewer.sample").select(case_id).run()
    at.switch_page("views/simulate.py").run()
    assert not at.exception, at.exception
    return at


def _simulate_one_plan(plan: str, samples: int) -> AppTest:
    """The Simulate page of liver01 after simulating only ``plan`` (2 steps); no error shown."""
    at = _simulate_page("liver01")
    at.multiselect(key="simulate.suggested").set_value([])
    at.text_input(key="simulate.plan_text").input(plan)
    at.number_input(key="simulate.samples").set_value(samples)
    at.number_input(key="simulate.steps").set_value(2)
    at.button(key="simulate.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def test_without_a_case_it_says_so(app_env, tiny_weights, monkeypatch):
    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(tiny_weights))
    at = _simulate_page(None)
    assert at.title[0].value == "Simulate"
    assert any("No case is open" in i.value for i in at.info)
    assert not at.button


def test_missing_weights_show_the_command_not_a_traceback(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(tmp_path / "no-weights"))
    at = _simulate_page("liver01")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "mewm train autoencoder" in errors[0]
    assert "Traceback" not in errors[0]
    assert not at.button


def test_plan_text_is_validated_as_typed(app_env, tiny_weights, monkeypatch):
    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(tiny_weights))
    at = _simulate_page("liver01")
    at.text_input(key="simulate.plan_text").input("cisplatin; lobaplatin; lipiodol").run()
    assert any("Rule 1" in e.value for e in at.error)
    at.text_input(key="simulate.plan_text").input("epirubicin 30 mg, lipiodol 10 ml").run()
    assert any("Epirubicin 30 mg; Lipiodol 10 ml" in s.value for s in at.success)
    assert not at.error


def test_simulation_renders_slices_chart_and_table(app_env, tiny_weights, monkeypatch):
    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(tiny_weights))
    at = _simulate_one_plan("Epirubicin; Lipiodol", samples=2)
    assert len(at.image) == 2  # before and after, same slice and window
    assert at.slider(key="simulate.sample").max == 2
    table = at.dataframe[0].value
    assert list(table["Plan"]) == ["Epirubicin; Lipiodol"]
    assert "±" in table["Viable tumour change (ml)"][0]
    source, result = at.session_state["mewm.simulation"]
    assert result.samples == 2 and result.steps == 2 and result.case_id == "liver01"
    at.slider(key="simulate.sample").set_value(2).run()
    assert not at.exception and len(at.image) == 2


def test_a_response_token_model_shows_the_predicted_response(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(write_tiny_weights(tmp_path, response_token=True)))
    at = _simulate_one_plan("Epirubicin; Lipiodol", samples=1)
    table = at.dataframe[0].value
    _, result = at.session_state["mewm.simulation"]
    response = result.plans[0].response
    for target, label in (("viable", "viable"), ("necrosis", "necrosis"), ("lipiodol", "Lipiodol")):
        assert table[f"Predicted {label} (% of lesion)"][0] == pytest.approx(100 * response[target], abs=0.05)
