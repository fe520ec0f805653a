"""`generate_cohort` end to end on three small cases, the manifest round trip, and `mewm cohort generate`."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from models.errors import CaseIOError, ManifestError
from pipelines.cohort.generate import generate_cohort
from pipelines.manifest import load_manifest_case, read_manifest

SMALL = (64, 56, 32)
CASE_FILES = ("ct.nii.gz", "labels.nii.gz", "post_ct.nii.gz", "post_labels.nii.gz", "clinical.json")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_report(small_cohort):
    out, report = small_cohort
    for name in ("manifest.csv", "manifest.json", "plan_space.json", "DATA_CARD.md", "oracle/oracle.csv",
                 "oracle/README.md", "oracle/truth.csv"):
        assert (out / name).is_file(), name
    for cid in ("VC00000", "VC00001", "VC00002"):
        for f in CASE_FILES:
            assert (out / "cases" / cid / f).is_file()
    assert (out / "dicom" / "VC00000").is_dir() and not (out / "dicom" / "VC00001").exists()
    assert "synthetic" in (out / "DATA_CARD.md").read_text().lower()
    meta = json.loads((out / "manifest.json").read_text())
    assert meta["seed"] == 7 and meta["n"] == 3 and meta["grid"]["size"] == list(SMALL) and meta["synthetic"]
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temp folder left
    text = report.summary()
    assert "cases/second" in text and "3 cases" in text


def test_oracle_file_scores_every_plan_and_flags_one_best(small_cohort):
    out, _ = small_cohort
    n_plans = json.loads((out / "plan_space.json").read_text())["n_plans"]
    with (out / "oracle" / "oracle.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * n_plans
    for cid in ("VC00000", "VC00001", "VC00002"):
        mine = [r for r in rows if r["case_id"] == cid]
        best = [r for r in mine if r["is_best"] == "1"]
        assert len(best) == 1
        assert float(best[0]["expected_survival_months"]) == max(float(r["expected_survival_months"]) for r in mine)
    # the manifest and the clinical files carry no hidden truth
    header = (out / "manifest.csv").read_text().splitlines()[0]
    assert "expected_survival" not in header and "sensitivity" not in header
    assert "sensitivity" not in (out / "cases" / "VC00000" / "clinical.json").read_text()


def test_manifest_reads_back_and_loads_cases(small_cohort):
    from models.plan import Plan

    out, _ = small_cohort
    records = read_manifest(out)
    assert [r.case_id for r in records] == ["VC00000", "VC00001", "VC00002"]
    case = load_manifest_case(records[0])
    assert case.case_id == "VC00000"
    assert case.ct.shape == SMALL and case.post_labels is not None
    assert case.has_tumour_mask
    assert isinstance(case.plan, Plan) and case.plan == Plan.parse(records[0].plan)
    assert case.outcome.time_months == pytest.approx(records[0].time_months)
    assert case.covariates.child_pugh in ("A", "B")
    ct = case.ct.array
    assert -1025 <= ct.min() and ct.max() <= 3071
    # without the clinical JSON, the manifest's own columns give the same covariates and outcome
    bare = replace(records[1], clinical=None)
    case1 = load_manifest_case(bare)
    assert case1.covariates == load_manifest_case(records[1]).covariates
    assert case1.outcome.event == records[1].event and case1.plan == Plan.parse(records[1].plan)


def test_same_seed_same_bytes_other_seed_differs(small_cohort, tmp_path):
    out, _ = small_cohort
    again = generate_cohort(n=3, seed=7, out=tmp_path / "again", size=SMALL, progress=False, dicom=1, workers=2)
    assert again.n == 3
    a, b = _files(out), _files(tmp_path / "again")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    other = generate_cohort(n=3, seed=8, out=tmp_path / "other", size=SMALL, progress=False)
    c = _files(tmp_path / "other")
    assert c["cases/VC00000/ct.nii.gz"] != a["cases/VC00000/ct.nii.gz"]
    assert c["manifest.csv"] != a["manifest.csv"]
    assert other.seed == 8


def test_refuses_non_empty_out_without_overwrite(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(CaseIOError, match="overwrite"):
        generate_cohort(n=1, seed=0, out=out, size=(16, 16, 16), progress=False)
    assert (out / "keep.txt").exists()
    generate_cohort(n=1, seed=0, out=out, size=(16, 16, 16), progress=False, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.csv").exists()


def test_manifest_errors_name_row_and_column(small_cohort, tmp_path):
    out, _ = small_cohort
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    text = (out / "manifest.csv").read_text().replace("cases/VC00001/post_ct.nii.gz", "cases/missing.nii.gz")
    (bad / "manifest.csv").write_text(text)
    with pytest.raises(ManifestError, match=r"row 3 .*'post_ct'"):
        read_manifest(bad)
    (bad / "manifest.csv").write_text("case_id,labels\nA,x.nii.gz\n")
    with pytest.raises(ManifestError, match="required column"):
        read_manifest(bad)
    with pytest.raises(ManifestError, match="No manifest"):
        read_manifest(tmp_path / "nowhere")


def test_cli_cohort_generate(tmp_path, capsys):
    from pipelines.cli import main

    out = tmp_path / "cli"
    rc = main(["cohort", "generate", "--n", "2", "--seed", "1", "--out", str(out), "--size", "16", "16", "16",
               "--quiet"])
    assert rc == 0
    assert "cases/second" in capsys.readouterr().out
    assert len(read_manifest(out)) == 2
    rc = main(["cohort", "generate", "--n", "2", "--seed", "1", "--out", str(out), "--quiet"])
    assert rc == 2 and "overwrite" in capsys.readouterr().err
