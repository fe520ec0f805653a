"""The app opens an imported (and registered) HCC-TACE-Seg cohort: `[app] sample_data_dir` pointed at the cohort
folder lists its cases in the Case Viewer (and Treatment Planning), which open with masks and the post-TACE CT."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ENTRY = str(Path(__file__).resolve().parents[3] / "app" / "streamlit_app.py")
TIMEOUT = 90  # a hang guard on the shared 2-core machine, not a timing assertion


def test_case_viewer_opens_an_imported_case(registered, monkeypatch):
    cohort, _ = registered
    monkeypatch.setenv("MEWM_APP__SAMPLE_DATA_DIR", str(cohort))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()
    at.switch_page("views/case_viewer.py").run()
    picker = at.selectbox(key="viewer.sample")
    assert [o.split(" · ")[0] for o in picker.options] == ["HCC_001", "HCC_002", "HCC_003", "HCC_009", "HCC_010"]
    assert all("with post-TACE CT" in o for o in picker.options)
    picker.select("HCC_001").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    case = at.session_state["mewm.case"]
    assert case.case_id == "HCC_001" and case.post_ct is not None
    assert case.plan.canonical() == "Cisplatin; Doxorubicin; Mitomycin; Lipiodol"
    assert len(at.image) == 3
    assert {m.label: m.value for m in at.metric}["Tumours"] == "1"
