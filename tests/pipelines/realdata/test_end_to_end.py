"""The whole real-data chain on the synthetic download with tiny models: import → register → train (smoke) →
plan → score → eval realdata, through the same functions and `mewm` commands a user runs (docs/real_data.md)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.worldmodel.crops import CropConfig

CTACE = "Cisplatin; Doxorubicin; Mitomycin; Lipiodol"
DEB = "Doxorubicin; Drug-eluting Beads"


@pytest.fixture(scope="module")
def trained(registered, tmp_path_factory):
    """``(cohort, weights)``: the registered cohort, a world model trained on it for one step per network (tiny
    configs of the world-model tests, 5 mm 16³ crops: a smoke run, not a model) and a Cox survival model in
    ``cohort.parent / "survival"``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worldmodel"))
    from simulate_helpers import AUTOENCODER, DYNAMICS, SEGMENTER

    from pipelines.worldmodel.train import train_autoencoder, train_dynamics, train_segmentation

    cohort = tmp_path_factory.mktemp("e2e") / "cohort"
    shutil.copytree(registered[0], cohort)
    weights = cohort.parent / "weights"
    crop = CropConfig((5.0, 5.0, 5.0), (16, 16, 16))
    common = dict(steps=1, batch_size=1, progress=False)
    train_autoencoder(cohort, weights / "autoencoder", model_config=AUTOENCODER, crop=crop, **common)
    train_segmentation(cohort, weights / "segmentation", model_config=SEGMENTER, crop=crop, **common)
    train_dynamics(cohort / "manifest_with_plan.csv", weights / "autoencoder", weights / "dynamics",
                   model_config={"latent_channels": AUTOENCODER["latent_channels"], **DYNAMICS}, **common)
    # survival on OS with the registered follow-ups' labels (the covariates the spreadsheet lacks are left out)
    assert main(["train", "survival", "--kind", "cox", "--manifest", str(cohort), "--out",
                 str(cohort.parent / "survival"), "--post-labels", "true", "--quiet"]) == 0
    return cohort, weights


def test_plan_and_score_an_imported_cohort(trained, tmp_path, capsys):
    cohort, weights = trained
    fast = ["--samples", "1", "--steps", "1", "--weights", str(weights)]
    survival = str(cohort.parent / "survival")
    card = (cohort.parent / "survival" / "MODEL_CARD.md").read_text()
    assert "albumin" in card  # named as left out: no imported case has it
    assert main(["plan", "--case", f"{cohort}#HCC_001", "--candidate", CTACE, "--candidate", DEB,
                 "--out", str(tmp_path / "plan"), "--survival-dir", survival, "--quiet", *fast]) == 0
    ranked = json.loads((tmp_path / "plan" / "planning.json").read_text())
    assert {p["plan"] for p in ranked["ranked"]} == {CTACE, DEB}
    assert main(["score", "--manifest", str(cohort), "--out", str(tmp_path / "scores"), "--plan", CTACE,
                 "--plan", DEB, "--survival", survival, "--quiet", *fast]) == 0
    with (tmp_path / "scores" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["case_id"] for r in rows} == {"HCC_001", "HCC_002", "HCC_003", "HCC_009", "HCC_010"}
    assert "not for clinical use" in capsys.readouterr().out


def test_eval_realdata_reports_what_can_and_cannot_be_judged(trained, tmp_path):
    cohort, weights = trained
    out = tmp_path / "eval.json"
    assert main(["eval", "realdata", "--cohort", str(cohort), "--weights", str(weights), "--steps", "1",
                 "--folds", "2", "--out", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 4 and [e["case_id"] for e in report["excluded"]] == ["HCC_009"]  # no regimen
    for source in ("none", "simulated", "observed"):
        c = report["survival"][source]
        assert 0.0 <= c["value"] <= 1.0 and c["kind"].startswith("apparent")
    assert "log_viable_ratio" in report["survival"]["simulated"]["features"]
    assert "log_viable_ratio" not in report["survival"]["none"]["features"]  # no post image: no change measured
    assert report["response"]["observed"]["n"] == 3  # HCC_010's readers have no majority
    assert report["plan_choice"]["evaluable"] is False and "counterfactual" in report["plan_choice"]["statement"]


def test_cli_errors_are_one_line(download, tmp_path, capsys):
    assert main(["import", "hcc-tace-seg", "--src", str(tmp_path / "missing"), "--clinical", str(download[1]),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mewm: error:") and "is not a folder" in err and len(err.splitlines()) == 1
    assert main(["register", "--manifest", str(tmp_path), "--quiet"]) == 2
    assert "no import records" in capsys.readouterr().err


def test_synthetic_download_command(tmp_path, capsys):
    assert main(["import", "synthetic-download", "--out", str(tmp_path / "dl")]) == 0
    assert (tmp_path / "dl" / "HCC-TACE-Seg_clinical_data-V2.xlsx").is_file()
    assert len(list((tmp_path / "dl").rglob("*.dcm"))) > 500
    assert "not patient data" in capsys.readouterr().out
