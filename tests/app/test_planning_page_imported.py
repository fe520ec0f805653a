"""AppTest: Treatment Planning on an imported HCC-TACE-Seg case. Two patients of the synthetic download are written
with highdicom/pydicom and imported (`pipelines.realdata`); `[app] sample_data_dir` points at the imported cohort; the
Case Viewer opens an imported case and the planning page ranks plans for it with tiny world-model weights and the
embedded Cox survival model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines" / "worldmodel"))
from simulate_helpers import write_tiny_weights  # noqa: E402

ENTRY = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
TIMEOUT = 120  # a hang guard on the shared 2-core machine, not a timing assertion


@pytest.fixture(scope="module")
def imported_cohort(tmp_path_factory) -> Path:
    """HCC_001 (cTACE) and HCC_002 (DEB-TACE) of the synthetic download, imported."""
    from pipelines.config import Config
    from pipelines.realdata.hcc_tace_seg import import_hcc_tace_seg
    from pipelines.realdata.synthetic_download import FIXTURE_PATIENTS, write_synthetic_download

    config = Config()
    config.app.data_dir = str(tmp_path_factory.mktemp("mewm-data"))  # the de-identification key stays private
    src = tmp_path_factory.mktemp("download")
    clinical = write_synthetic_download(src, FIXTURE_PATIENTS[:2])
    out = tmp_path_factory.mktemp("imported") / "cohort"
    summary = import_hcc_tace_seg(src, clinical, out, config=config, progress=False)
    assert summary["counts"] == {"imported": 2, "imported with warnings": 0, "skipped": 0}
    return out


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("weights"))


def test_planning_page_ranks_plans_for_an_imported_case(imported_cohort, tiny_weights, monkeypatch):
    monkeypatch.setenv("MEWM_APP__SAMPLE_DATA_DIR", str(imported_cohort))
    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT).run()

    # the Case Viewer lists the imported cases and opens one, with its expert masks and the administered regimen
    at.switch_page("views/case_viewer.py").run()
    picker = at.selectbox(key="viewer.sample")
    assert [o.split(" · ")[0] for o in picker.options] == ["HCC_001", "HCC_002"]
    picker.select("HCC_002").run()
    assert not at.exception, at.exception
    case = at.session_state["mewm.case"]
    assert case.case_id == "HCC_002" and case.plan.canonical() == "Doxorubicin; Drug-eluting Beads"

    # Treatment Planning: the guideline proposal, then a tiny beam search
    at.switch_page("views/treatment_planning.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("not for clinical use" in w.value for w in at.warning)
    at.button(key="planning.propose").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.number_input(key="planning.samples").set_value(1)
    at.number_input(key="planning.steps").set_value(2)
    at.number_input(key="planning.beams").set_value(2)
    at.button(key="planning.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]

    source, result = at.session_state["mewm.planning"]
    assert result.case_id == "HCC_002" and len(result.ranked) >= 2
    assert result.settings["samples"] == 1 and result.settings["steps"] == 2
    table = at.dataframe[0].value
    assert list(table["Plan"]) == [s.plan.canonical() for s in result.ranked]
    assert list(table["Log-risk (mean)"]) == sorted(table["Log-risk (mean)"])
    # the spreadsheet has no Child-Pugh score, albumin or bilirubin: the survival model imputes them and says so
    assert result.imputed and any("training means" in w.value for w in at.warning)
    assert len(at.image) == 2  # before and after the chosen plan
