"""Batch scoring in this process (one worker) on a tiny cohort: every case scored, tables consistent with the
per-case JSON, bad cases recorded with their reason, resume and settings checks, the output folder's guards."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from models.errors import BatchError, CheckpointNotFoundError, ConfigError, PlanValidationError
from pipelines.planning.batch import _locked, case_file_name, read_case_records, score_manifest

from batch_helpers import FAST, LOADS, TINY_LOADER, write_cohort, write_tiny_weights


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"), n=3, corrupt=True, no_tumour=True, missing=True)


def settings(weights, **kw):
    return {**FAST, "weights_dir": str(weights), **kw}


def score(cohort, out, weights, **kw):
    opts = {k: kw.pop(k) for k in ("limit", "retry_failed", "overwrite", "progress") if k in kw}
    return score_manifest(cohort, out, settings=settings(weights, **kw), loader=TINY_LOADER, **opts)


def test_every_case_scored_bad_ones_recorded_and_tables_match_the_json(cohort, weights, tmp_path):
    seen, loads = [], len(LOADS)
    report = score(cohort, tmp_path / "out", weights, progress=lambda d, t, m: seen.append((d, t, m)))
    assert len(LOADS) == loads + 1  # the models were loaded once for the six cases
    out = tmp_path / "out"
    assert (report.total, report.ok, report.failed, report.pending, report.scored) == (6, 3, 3, 0, 6)
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["c0.json", "c1.json", "c2.json"]
    failed = {p.stem: json.loads(p.read_text()) for p in (out / "failed").iterdir()}
    assert failed["bad_ct"]["error_type"] == "UnreadableFileError" and "bad_ct.nii.gz" in failed["bad_ct"]["message"]
    assert failed["no_tumour"]["error_type"] == "EmptyMaskError" and "tumour" in failed["no_tumour"]["message"]
    assert failed["missing"]["error_type"] == "UnreadableFileError" and "does not exist" in failed["missing"]["message"]
    assert seen[-1][:2] == (6, 6) and [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)

    table = pd.read_csv(out / "results.csv")
    assert list(table["case_id"]) == ["c0", "bad_ct", "c1", "c2", "missing", "no_tumour"]  # manifest order
    plain = lambda df: df.astype(object).where(df.notna(), None)  # noqa: E731 - CSV reads None as NaN
    pd.testing.assert_frame_equal(plain(table), plain(pd.read_parquet(out / "results.parquet")), check_dtype=False)
    for row in table.itertuples():
        if row.status == "failed":
            assert row.error_type == failed[row.case_id]["error_type"] and pd.isna(row.best_plan)
            continue
        ranked = json.loads((out / "cases" / f"{row.case_id}.json").read_text())["result"]["ranked"]
        assert [row.best_plan, row.plan_2_plan, row.plan_3_plan] == [r["plan"] for r in ranked]
        assert set(r["plan"] for r in ranked) == set(FAST["candidates"]) and row.n_plans == 3
        np.testing.assert_allclose([row.best_risk_mean, row.best_risk_sd, row.plan_3_risk_mean],
                                   [ranked[0]["risk_mean"], ranked[0]["risk_sd"], ranked[2]["risk_mean"]])
        assert row.best_risk_mean <= row.plan_2_risk_mean <= row.plan_3_risk_mean
        assert row.best_median_months == pytest.approx(ranked[0]["median_months"]) and row.seconds > 0
    # the cases differ (tumour radius), and so do their risks
    assert table.loc[table.status == "ok", "best_risk_mean"].nunique() == 3

    batch = json.loads((out / "batch.json").read_text())
    assert batch["counts"] == {"cases": 6, "ok": 3, "failed": 3, "pending": 0, "scored_this_run": 6,
                               "skipped_already_done": 0}
    assert batch["settings"]["samples"] == 2 and batch["settings"]["loader"] == TINY_LOADER
    assert batch["machine"]["cpu_count"] >= 1 and batch["timing"]["cases_per_hour"] > 0
    assert "Research use only" in batch["notice"] and "bad_ct" in report.summary()


def test_rerun_resumes_and_other_settings_are_refused(cohort, weights, tmp_path):
    out = tmp_path / "out"
    score(cohort, out, weights, limit=2)  # an "interrupted" batch: c0 and bad_ct only
    first = (out / "cases" / "c0.json").read_text()
    again = score(cohort, out, weights)
    assert (again.scored, again.skipped, again.ok, again.failed) == (4, 2, 3, 3)
    assert (out / "cases" / "c0.json").read_text() == first  # never scored twice
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["case_id"]) == sorted(set(table["case_id"])) and len(table) == 6

    idle = score(cohort, out, weights)
    assert (idle.scored, idle.skipped) == (0, 6) and np.isnan(idle.cases_per_hour)
    retried = score(cohort, out, weights, retry_failed=True)
    assert (retried.scored, retried.failed) == (3, 3)  # the bad cases are tried again (and fail again)

    with pytest.raises(BatchError, match=r"other settings \(samples: 2 then, 3 now\).*--overwrite"):
        score(cohort, out, weights, samples=3)
    fresh = score(cohort, out, weights, samples=3, overwrite=True)
    assert fresh.scored == 6 and json.loads((out / "settings.json").read_text())["samples"] == 3


def test_a_retried_failure_that_now_succeeds_leaves_one_record(cohort, weights, tmp_path):
    out = tmp_path / "out"
    score(cohort, out, weights, limit=1)
    # as if c0 had failed in an earlier run (e.g. a file was missing then)
    (out / "cases" / "c0.json").unlink()
    (out / "failed" / "c0.json").write_text(json.dumps({"case_id": "c0", "status": "failed",
                                                        "error_type": "ManifestError", "message": "missing"}))
    assert score(cohort, out, weights, limit=1).failed == 1  # without --retry-failed it stays failed
    report = score(cohort, out, weights, limit=1, retry_failed=True)
    assert report.ok == 1 and not (out / "failed" / "c0.json").exists()
    assert list(read_case_records(out)) == ["c0"]


def test_folder_guards_and_bad_settings(cohort, weights, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("someone else's")
    with pytest.raises(BatchError, match="holds no batch"):
        score(cohort, tmp_path / "busy", weights)
    (tmp_path / "locked").mkdir()
    with _locked(tmp_path / "locked"), pytest.raises(BatchError, match="Another `mewm score`"):
        score(cohort, tmp_path / "locked", weights)
    with pytest.raises(ConfigError, match="Unknown batch setting"):
        score(cohort, tmp_path / "o1", weights, sampels=2)
    with pytest.raises(ConfigError, match="backend"):
        score_manifest(cohort, tmp_path / "o2", backend="dask", settings=settings(weights), loader=TINY_LOADER)
    with pytest.raises(PlanValidationError):
        score(cohort, tmp_path / "o3", weights, candidates=["Cisplatin; Lobaplatin; Lipiodol"])  # two platinums
    with pytest.raises(CheckpointNotFoundError, match="mewm train"):  # models that cannot load stop the batch
        score(cohort, tmp_path / "o4", tmp_path / "no-weights")
    assert not list((tmp_path / "o4" / "cases").iterdir()) and not list((tmp_path / "o4" / "failed").iterdir())


def test_case_file_names_are_safe_and_distinct():
    names = [case_file_name(c) for c in ("VC00001", "a/b", "../x", ".hidden", "a%2Fb")]
    assert names[0] == "VC00001.json" and len(set(names)) == len(names)
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_without_fixed_plans_the_configured_policy_proposes_and_beam_search_ranks(cohort, weights, tmp_path):
    out = tmp_path / "out"
    report = score_manifest(cohort, out, settings={"samples": 2, "steps": 2, "beams": 2, "weights_dir": str(weights)},
                            loader=TINY_LOADER, limit=1)
    assert report.ok == 1 and report.settings["candidates"] is None and report.settings["mode"] == "beam"
    result = json.loads((out / "cases" / "c0.json").read_text())["result"]
    assert result["proposal"]["backend"] == "guideline" and result["proposal"]["rationale"]
    assert result["settings"]["mode"] == "beam" and len(result["ranked"]) >= 2
    assert report.results.loc[0, "proposal_backend"] == "guideline"


def test_an_uploaded_manifest_and_zip_are_staged_and_scored(cohort, weights, tmp_path):
    import io
    import zipfile

    from models.errors import ManifestError, UnsafeArchiveError
    from pipelines.planning.batch import stage_uploaded_manifest

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name in ("c0_ct.nii.gz", "c0_labels.nii.gz"):
            z.write(cohort.parent / name, name)
    csv = b"case_id,ct,labels\nc0,c0_ct.nii.gz,c0_labels.nii.gz\n"
    staged = stage_uploaded_manifest(csv, buffer.getvalue(), tmp_path / "uploads")
    assert staged.parent.parent == tmp_path / "uploads" and (staged.parent / "c0_ct.nii.gz").is_file()
    assert stage_uploaded_manifest(csv, buffer.getvalue(), tmp_path / "uploads") == staged  # same upload, same place
    assert score(staged, tmp_path / "out", weights).ok == 1

    with pytest.raises(ManifestError, match="c1_ct.nii.gz does not exist"):
        stage_uploaded_manifest(csv + b"c1,c1_ct.nii.gz,\n", buffer.getvalue(), tmp_path / "uploads")
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escape.txt", "x")
    with pytest.raises(UnsafeArchiveError):
        stage_uploaded_manifest(csv, evil.getvalue(), tmp_path / "uploads")
    assert not (tmp_path / "escape.txt").exists()


def test_bench_batch_report(cohort, weights, tmp_path):
    from pipelines.planning.batch_bench import bench_batch

    report = bench_batch(cohort, cases=2, settings=settings(weights), out=tmp_path / "bench.json",
                         backends=("process",), workers=(1,), loader=TINY_LOADER, progress=False)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["runs"]["process_1"]["cases"] == 2 and saved["runs"]["process_1"]["ok"] == 1  # c0, bad_ct
    assert saved["cases_per_hour"]["process_1"] > 0 and saved["same_rankings_across_runs"] is True
    assert saved["steady_state_cases_per_hour"]["process_1"] > saved["cases_per_hour"]["process_1"]
    assert report["settings"]["samples"] == 2 and saved["machine"]["cpu_count"] >= 1
    assert saved["max_best_risk_difference_across_runs"] == 0.0
