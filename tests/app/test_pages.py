"""AppTest tests of the home and Case Viewer pages (no browser; the script runs in-process)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.components.case_summary import NO_TUMOUR_MASK
from app.errors import GENERIC_ERROR

ENTRY = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
TIMEOUT = 60  # generous: the 2-core machine is shared; this is a hang guard, not a timing assertion


def _viewer(app_env) -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()
    at.switch_page("views/case_viewer.py").run()
    assert not at.exception
    return at


def _open_sample(at: AppTest, case_id: str) -> AppTest:
    at.selectbox(key="viewer.sample").select(case_id).run()
    assert not at.exception, at.exception
    return at


def test_home_shows_disclaimer_and_models(app_env):
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "MeWM Workbench"
    warnings = [w.value for w in at.warning]
    assert any("Research use only — not for clinical use" in w for w in warnings)
    assert any("Research use only" in w.value for w in at.sidebar.warning)  # the shared frame
    assert at.sidebar.caption[0].value == "No case open."
    models = at.dataframe[0].value
    assert set(models["Model"]) >= {"dynamics", "segmentation", "survival"}
    assert set(models["Status"]) <= {"installed", "not yet installed"}


def test_viewer_starts_empty_with_sample_list(app_env):
    at = _viewer(app_env)
    assert at.title[0].value == "Case Viewer"
    assert at.selectbox(key="viewer.sample").options == ["Phantom with tumour", "Phantom CT without masks"]
    assert len(at.image) == 0
    assert not at.error


def test_viewer_sample_case_renders_three_planes_and_summary(app_env):
    at = _open_sample(_viewer(app_env), "liver01")
    assert at.session_state["mewm.case"].case_id == "liver01"
    assert len(at.image) == 3
    # Opens at the tumour: the axial slider sits on the slice through the tumour's centre (z = 11, 1-based 12).
    assert at.slider(key="viewer.slice.axial." + at.session_state["mewm.case_source"]).value == 12
    assert not at.error, [e.value for e in at.error]
    assert NO_TUMOUR_MASK not in [i.value for i in at.info]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Tumours"] == "1"
    assert metrics["Liver volume"] != "—"
    assert any("Covariates" in m.value for m in at.markdown)
    # The sidebar shows this label (checked in test_browser.py: AppTest does not keep the entrypoint's sidebar
    # elements after switch_page).
    assert at.session_state["mewm.case_label"] == "Sample: Phantom with tumour"


def test_viewer_controls_rerender_without_error(app_env):
    at = _open_sample(_viewer(app_env), "liver01")
    at.radio(key="viewer.preset").set_value("Manual").run()
    at.slider(key="viewer.width").set_value(1500).run()
    at.toggle(key="viewer.post").set_value(True).run()
    at.toggle(key="viewer.overlay").set_value(False).run()
    assert not at.exception and not at.error
    assert len(at.image) == 3


def test_ct_without_mask_opens_with_plain_note(app_env):
    at = _open_sample(_viewer(app_env), "ctonly")
    assert len(at.image) == 3
    assert NO_TUMOUR_MASK in [i.value for i in at.info]
    assert at.toggle(key="viewer.overlay").disabled
    assert at.toggle(key="viewer.post").disabled
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("name,content", [
    ("scan.nii.gz", b"this is not a NIfTI file"),
    ("series.zip", b"PK\x03\x04 truncated archive"),
])
def test_corrupt_upload_shows_plain_error(app_env, name, content):
    at = _viewer(app_env)
    at.radio(key="viewer.source").set_value("Upload").run()
    at.file_uploader(key="viewer.upload_image").upload(name, content).run()
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert message != GENERIC_ERROR.format(action="opening the upload"), "a corrupt file must be a typed error"
    assert "Traceback" not in message
    assert at.session_state["mewm.case"] is None
    assert len(at.image) == 0


def _two_series_zip(tmp_path: Path) -> bytes:
    """A DICOM .zip holding two CT series of one study (an arterial and a delayed phase)."""
    import io
    import zipfile

    import numpy as np

    from pipelines.caseio import write_dicom_series
    from pipelines.volume import Volume

    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(60, 10, (24, 20, 12)).astype(np.float32), np.diag([1.5, 1.5, 3.0, 1.0]))
    write_dicom_series(vol, tmp_path / "a", series_description="Arterial", series_number=1, study_uid="1.2.3",
                       seed=1)
    write_dicom_series(vol, tmp_path / "b", series_description="Delayed", series_number=2, study_uid="1.2.3", seed=2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted((tmp_path / "a").iterdir()) + sorted((tmp_path / "b").iterdir()):
            z.write(f, f"{f.parent.name}/{f.name}")
    return buf.getvalue()


def test_dicom_zip_with_two_series_lets_the_user_choose(app_env, tmp_path):
    at = _viewer(app_env)
    at.radio(key="viewer.source").set_value("Upload").run()
    at.file_uploader(key="viewer.upload_image").upload("study.zip", _two_series_zip(tmp_path)).run()
    assert not at.exception
    assert at.session_state["mewm.case"] is None
    assert "series" in at.error[0].value.lower()
    chooser = next(s for s in at.selectbox if s.label == "Series to open")
    delayed = next(o for o in chooser.options if o.startswith("Delayed"))
    chooser.select(delayed).run()
    assert not at.exception, at.exception
    case = at.session_state["mewm.case"]
    assert case is not None and case.ct.shape == (24, 20, 12)
    assert case.source.series_description == "Delayed"
    assert len(at.image) == 3 and not at.error
