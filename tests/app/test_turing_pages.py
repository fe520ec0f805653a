"""AppTests of the Turing pages: the locked admin view, the passcode, setting up a study from a tiny cohort with
tiny world-model weights, adding a reader, reading a whole study, and the results with CSV downloads."""

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines" / "turing"))
from turing_helpers import write_crop_folders, write_tiny_cohort, write_tiny_weights  # noqa: E402

ENTRY = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
TIMEOUT = 90  # a hang guard on the shared 2-core machine, not a timing assertion
PASSCODE = "correct horse"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("turing_app")
    return {"weights": write_tiny_weights(root / "weights"), "cohort": write_tiny_cohort(root / "cohort")}


@pytest.fixture
def turing_env(app_env, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("MEWM_APP__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEWM_APP__DATABASE_URL", "")
    monkeypatch.setenv("MEWM_STUDY__STUDIES_DIR", str(tmp_path / "studies"))
    monkeypatch.setenv("MEWM_STUDY__ADMIN_PASSCODE", PASSCODE)
    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(tiny["weights"]))
    monkeypatch.setenv("MEWM_APP__SAMPLE_DATA_DIR", str(tiny["cohort"]))
    return tmp_path


def _page(name: str) -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, at.exception
    return at


def _unlock(at: AppTest, passcode: str = PASSCODE) -> AppTest:
    at.text_input(key="turing.admin_passcode").input(passcode)
    at.button[0].click().run()  # the form's only button: Unlock
    assert not at.exception, at.exception
    return at


def test_admin_is_locked_without_a_passcode(turing_env, monkeypatch):
    monkeypatch.setenv("MEWM_STUDY__ADMIN_PASSCODE", "")
    for name in ("turing_admin", "turing_results"):
        at = _page(name)
        assert any("locked" in e.value and "admin_passcode" in e.value for e in at.error)
        assert not at.text_input and not at.tabs


def test_wrong_passcode_is_refused(turing_env):
    at = _unlock(_page("turing_admin"), "guess")
    assert any("Wrong admin passcode" in e.value for e in at.error)
    assert not at.tabs


def test_admin_sets_up_a_study_a_reader_reads_it_and_results_show(turing_env):
    # 1. the admin creates a study from the (tiny) sample cohort and adds a reader
    at = _unlock(_page("turing_admin"))
    assert at.session_state["turing.admin"]
    at.number_input(key="turing.admin.n_real").set_value(2)
    at.number_input(key="turing.admin.n_synthetic").set_value(2)
    at.number_input(key="turing.admin.steps").set_value(2)
    at.button(key="turing.admin.create").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("2 real and 2 synthetic" in s.value for s in at.success)
    at.text_input(key="turing.admin.reader_name").input("Dr Reader")
    at.text_input(key="turing.admin.reader_role").input("radiologist")
    at.button[[b.label for b in at.button].index("Add reader")].click().run()
    code = at.session_state["turing.new_code"].code
    assert any(code in s.value for s in at.success)

    # 2. the reader signs in (in another session) and answers every item
    reader = _page("turing_read")
    reader.text_input(key="turing.code").input(code)
    reader.button[0].click().run()
    for position in range(1, 5):
        assert not reader.exception, reader.exception
        assert len(reader.image) == 1  # no context image in this study
        assert any(f"Image {position} of 4" in str(p.proto) for p in reader.get("progress"))
        reader.radio(key=f"turing.call.{position}").set_value("Synthetic")
        reader.radio(key=f"turing.confidence.{position}").set_value(4)
        reader.button[[b.label for b in reader.button].index("Submit and next")].click().run()
    assert any("answered all 4 images" in s.value for s in reader.success)

    # 3. the results page shows the figures
    res = _unlock(_page("turing_results"))
    assert not res.exception and not res.error, [e.value for e in res.error]
    metrics = {m.label: m.value for m in res.metric}
    assert metrics["Sensitivity (synthetic called synthetic)"] == "100%"
    assert metrics["Specificity (real called real)"] == "0%"
    assert len(res.get("download_button")) == 2


def test_reader_sign_in_errors_and_missing_answer(turing_env):
    from pipelines.turing.render import ViewSettings
    from pipelines.turing.sources import folder_sources
    from pipelines.turing.store import StudyStore

    real, synth = write_crop_folders(turing_env / "crops", 2, 2)
    store = StudyStore.from_config()
    study = store.create_study("folders", folder_sources(real, synth, 2, 2), ViewSettings())
    code = store.add_reader(study.id, "Dr R").code
    at = _page("turing_read")
    at.text_input(key="turing.code").input("abcdef-wrong")
    at.button[0].click().run()
    assert any("not valid" in e.value for e in at.error)
    at.text_input(key="turing.code").input(code)
    at.button[0].click().run()
    at.button[[b.label for b in at.button].index("Submit and next")].click().run()
    assert any("Choose real or synthetic" in e.value for e in at.error)
    assert store.progress(store.login(code).reader_id) == (0, 4)
    store.set_status(study.id, "closed")
    at.run()
    assert any("closed" in i.value for i in at.info)


def test_admin_manages_readers_status_and_sees_the_audit_log(turing_env):
    from pipelines.turing.render import ViewSettings
    from pipelines.turing.sources import folder_sources
    from pipelines.turing.store import StudyStore

    real, synth = write_crop_folders(turing_env / "crops", 2, 2)
    store = StudyStore.from_config()
    study = store.create_study("folders", folder_sources(real, synth, 2, 2), ViewSettings())
    first = store.add_reader(study.id, "Dr One")
    at = _unlock(_page("turing_admin"))
    assert at.selectbox(key="turing.admin.study").value == study.id
    at.button(key="turing.admin.toggle").click().run()
    assert store.study(study.id).status == "closed"
    assert at.button(key="turing.admin.toggle").label == "Reopen the study"
    at.button(key="turing.admin.reset").click().run()  # a new code for the only reader
    new = at.session_state["turing.new_code"]
    assert new.id == first.id and new.code != first.code
    assert store.login(new.code).reader_id == first.id
    at.button(key="turing.admin.hide_code").click().run()
    assert at.session_state["turing.new_code"] is None
    audit = at.dataframe[-1].value
    assert list(audit["What"])[:3] == ["reader code reset", "study closed", "reader added"]
    assert set(audit["Who"]) >= {"admin (app)", "admin"}
