"""HCC-TACE-Seg import on the synthetic download: phases, SEG masks, clinical data, every problem case, resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest

from models.errors import CaseIOError
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.realdata.clinical import mrecist_majority, regimen_plan, weeks_to_months
from pipelines.realdata.report import IMPORTED, SKIPPED, WARNED
from pipelines.realdata.synthetic_download import FIXTURE_PATIENTS, PHASE_HU

EXPECTED = {  # patient -> (status, reason code when skipped)
    "HCC_001": (IMPORTED, None), "HCC_002": (IMPORTED, None), "HCC_003": (WARNED, None),
    "HCC_004": (SKIPPED, "no-seg"), "HCC_005": (SKIPPED, "missing-referenced-ct"),
    "HCC_006": (SKIPPED, "empty-tumour"), "HCC_007": (SKIPPED, "tiny-liver"),
    "HCC_008": (SKIPPED, "tumour-larger-than-liver"), "HCC_009": (WARNED, None), "HCC_010": (WARNED, None),
}


def _patients(out):
    return {p["patient"]: p for p in json.loads((out / "import_report.json").read_text())["patients"]}


def test_every_patient_gets_its_status_and_reason(imported):
    out, summary = imported
    patients = _patients(out)
    assert {k: (v["status"], v["reason_code"]) for k, v in patients.items()} == EXPECTED
    assert summary["counts"] == {IMPORTED: 2, WARNED: 3, SKIPPED: 5}
    assert summary["spreadsheet_rows_without_images"] == ["HCC_099"]
    report_md = (out / "import_report.md").read_text()
    assert "not for clinical use" in report_md and "**tiny-liver**" in report_md
    assert "Spreadsheet rows without images: HCC_099" in report_md


def test_problem_cases_carry_specific_warnings(imported):
    patients = _patients(imported[0])
    assert any("SEG's grid differs" in w for w in patients["HCC_003"]["warnings"])
    assert any("different slice grids" in w for w in patients["HCC_009"]["warnings"])
    assert any("no regimen" in w for w in patients["HCC_009"]["warnings"])
    missing = patients["HCC_010"]["warnings"]
    assert any("non-uniform slice gaps" in w and "used the arterial acquisition" in w for w in missing)
    assert patients["HCC_010"]["baseline"]["phase"] == "arterial"
    assert patients["HCC_010"]["followup"]["phase"] == "arterial"  # the follow-up matches the baseline's phase


def test_stacked_phases_are_told_apart_by_aorta_and_portal_vein(imported):
    p = _patients(imported[0])["HCC_001"]
    calls = {c["acquisition"]: c for c in p["baseline"]["acquisitions"]}
    assert calls["acq 1"]["phase"] == "arterial" and calls["acq 2"]["phase"] == "portal-venous"
    assert calls["acq 1"]["aorta_hu"] == pytest.approx(PHASE_HU["arterial"]["aorta"], abs=15)
    assert p["baseline"]["phase"] == "portal-venous" and p["baseline"]["acquisition"] == "acq 2"
    follow = {c["series"]: c["phase"] for c in p["followup"]["acquisitions"]}
    assert follow == {2: "arterial", 4: "portal-venous"}
    assert p["followup"]["phase"] == "portal-venous" and p["followup"]["interval_days"] == 62


def test_manifest_cases_load_with_masks_plan_and_outcome(imported):
    out, _ = imported
    records = {r.case_id: r for r in read_manifest(out)}
    assert sorted(records) == ["HCC_001", "HCC_002", "HCC_003", "HCC_009", "HCC_010"]
    case = load_manifest_case(records["HCC_001"])
    assert case.plan.canonical() == "Cisplatin; Doxorubicin; Mitomycin; Lipiodol"
    assert case.outcome.time_months == pytest.approx(60 / (365.25 / 12 / 7), abs=1e-3) and case.outcome.event
    # the portal-venous CT: liver ~115 HU inside the SEG's liver, tumour ~80 HU
    liver = case.labels.array == 1
    assert abs(np.median(case.ct.array[liver]) - PHASE_HU["portal-venous"]["liver"]) < 15
    assert abs(np.median(case.ct.array[case.tumour_mask()]) - PHASE_HU["portal-venous"]["tumour"]) < 15
    assert case.covariates.child_pugh == "A" and case.covariates.n_lesions == 1
    deb = load_manifest_case(records["HCC_002"])
    assert deb.plan.canonical() == "Doxorubicin; Drug-eluting Beads" and deb.outcome.event is False
    misspelt = json.loads((out / "cases" / "HCC_003" / "clinical.json").read_text())
    assert misspelt["plan"] == "Cisplatin; Doxorubicin; Mitomycin; Lipiodol"
    assert misspelt["response"]["mrecist"] == "PD" and misspelt["ttp"]["event"] is True
    assert (out / "cases" / "HCC_001" / "followup_ct.nii.gz").is_file()
    assert "CC BY 4.0" in (out / "DATA_CARD.md").read_text()


def test_outputs_hold_no_dates_or_dicom_identifiers(imported, download):
    out, _ = imported
    text = "".join(p.read_text() for p in out.rglob("*.json"))
    assert "2001" not in text and "19500101" not in text
    ds = pydicom.dcmread(next(download[0].rglob("*.dcm")), stop_before_pixels=True)
    assert str(ds.StudyInstanceUID) not in text and str(ds.SOPInstanceUID) not in text


def test_rerun_resumes_and_retry_redoes_skipped(imported, download, rd_config, tmp_path):
    from pipelines.realdata.hcc_tace_seg import import_hcc_tace_seg

    out = tmp_path / "copy"
    shutil.copytree(imported[0], out)
    (out / "records" / "HCC_002.json").unlink()  # as if the first run had been killed before HCC_002
    again = import_hcc_tace_seg(download[0], download[1], out, config=rd_config, progress=False)
    assert again["resumed"] == 9 and again["counts"] == imported[1]["counts"]
    assert json.loads((out / "records" / "HCC_002.json").read_text())["status"] == IMPORTED
    retried = import_hcc_tace_seg(download[0], download[1], out, config=rd_config, progress=False,
                                  retry_skipped=True)
    assert retried["resumed"] == 5 and retried["counts"] == imported[1]["counts"]


def test_bad_inputs_are_one_typed_error(download, rd_config, tmp_path):
    from pipelines.realdata.hcc_tace_seg import import_hcc_tace_seg

    with pytest.raises(CaseIOError, match="is not a folder"):
        import_hcc_tace_seg(tmp_path / "nope", download[1], tmp_path / "o", config=rd_config, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaseIOError, match="No DICOM"):
        import_hcc_tace_seg(tmp_path / "empty", download[1], tmp_path / "o", config=rd_config, progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,age\n1,50\n")
    with pytest.raises(CaseIOError, match="no TCIA_ID"):
        import_hcc_tace_seg(download[0], bad, tmp_path / "o", config=rd_config, progress=False)


@pytest.mark.parametrize("text, plan, inferred", [
    ("Cisplatin, doxorubicin, Mitomycin-C", "Cisplatin; Doxorubicin; Mitomycin; Lipiodol", True),
    ("Cisplastin, doxorubicin, Mitomycin-C", "Cisplatin; Doxorubicin; Mitomycin; Lipiodol", True),
    ("doxorubicin LC beads", "Doxorubicin; Drug-eluting Beads", False),
    ("Cisplatin + Lipiodol", "Cisplatin; Lipiodol", False),
    ("Mitomycin-C", "Mitomycin; Lipiodol", True),
])
def test_regimen_to_plan(text, plan, inferred):
    got, notes, problems = regimen_plan(text)
    assert got.canonical() == plan and bool(notes) == inferred and not problems
    assert got.doses == {}


def test_regimen_problems_are_reported_not_guessed():
    assert regimen_plan(None)[0] is None and "unknown" in regimen_plan(None)[2][0]
    plan, _, problems = regimen_plan("Sorafenib")
    assert plan is None and "Sorafenib" in problems[0]


def test_mrecist_majority_and_units():
    assert mrecist_majority([2, 2, 3])[0] == "PR"
    assert mrecist_majority(["PD", "pd", "SD"])[0] == "PD"
    majority, readers, notes = mrecist_majority([1, 2, 3])
    assert majority is None and readers == ["CR", "PR", "SD"] and "without a majority" in notes[0]
    assert mrecist_majority([None, None, "x"])[0] is None
    assert weeks_to_months(4.348125) == pytest.approx(1.0, abs=1e-4)
    assert len(FIXTURE_PATIENTS) == 10


def test_clinical_cells_that_do_not_fit_are_warnings(tmp_path):
    from pipelines.realdata.clinical import read_clinical_table

    path = tmp_path / "clinical.csv"
    path.write_text("TCIA_ID,Sex,age,CPS,BCLC,PS,OS,Death_1_StillAliveorLostToFU_0,TTP,Censored_0_progressed_1,"
                    "chemotherapy,1_mRECIST,2_mRECIST,3_mRECIST\n"
                    "HCC_050,3,sixty,Z,Stage-E,1,52,2,,,doxorubicin LC beads,PR,PR,SD\n")
    row = read_clinical_table(path)["HCC_050"]
    joined = " | ".join(row.warnings)
    for problem in ("Sex '3'", "age 'sixty'", "CPS 'Z'", "BCLC 'Stage-E'", "Death_1_StillAliveorLostToFU_0 '2'",
                    "no overall survival"):
        assert problem in joined
    assert row.covariates.sex is None and row.covariates.ecog == 1 and row.os_event is None
    assert row.plan.canonical() == "Doxorubicin; Drug-eluting Beads" and row.mrecist == "PR"
    assert "outcome" not in row.clinical_json()
