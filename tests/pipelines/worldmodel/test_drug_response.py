"""The drug probe (`mewm eval drugs`): plans that differ only in the drug, figures on hand-made rows with known
answers, and the report end to end on a tiny cohort with tiny weights."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from models.errors import ConfigError, UnknownAgentError
from pipelines.cli import build_parser
from pipelines.worldmodel.drug_probe import PROBE_DRUGS, PROBE_EMBOLICS, probe_plans

TINY_GRID = (64, 56, 32)


def test_probe_plans_share_the_embolics_and_differ_in_one_drug():
    plans = probe_plans()
    assert len(plans) == 1 + len(PROBE_DRUGS)
    assert [p.canonical() for p in plans[:2]] == ["Lipiodol; Gelatin Sponge", "Raltitrexed; Lipiodol; Gelatin Sponge"]
    assert not plans[0].drugs and str(plans[0].protocol) == "bland"
    for plan, drug in zip(plans[1:], PROBE_DRUGS):
        assert list(plan.drugs) == [drug] and str(plan.protocol) == "cTACE"
        assert sorted(plan.embolics) == sorted(PROBE_EMBOLICS)
    with pytest.raises(ConfigError, match="at least two drugs"):
        probe_plans(("Epirubicin",))
    with pytest.raises(UnknownAgentError):
        probe_plans(("Epirubicin", "Aspirin"))


def _rows(true: list[list[float]], pred: list[list[float]]) -> list[list[dict]]:
    """Per patient: the no-drug row then one row per drug; both ceilings equal the truth."""
    return [[{"case_id": f"P{i}", "true_viable_change_ml": t, "pred_viable_change_ml": p,
              "ceiling_viable_change_ml": t, "segmenter_ceiling_viable_change_ml": t}
             for t, p in zip(ts, ps)] for i, (ts, ps) in enumerate(zip(true, pred))]


TRUE = [[-2.0, -10.0, -4.0, -7.0], [5.0, 1.0, -6.0, 3.0], [-1.0, -3.0, -8.0, -20.0]]
DRUGS = ("A", "B", "C")


def test_drug_figures_known_answers():
    from pipelines.worldmodel.drug_response import drug_figures

    perfect = drug_figures(_rows(TRUE, TRUE), DRUGS)["metrics"]
    for name in ("within_patient_spearman", "drug_contrast_spearman", "best_drug_agreement"):
        assert perfect[name]["value"] == pytest.approx(1.0), name
        assert perfect[name]["ceiling"] == perfect[name]["segmenter_ceiling"] == pytest.approx(1.0)
        lo, hi = perfect[name]["interval_95"]
        assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    assert perfect["best_drug_agreement"]["chance"] == pytest.approx(1 / 3)

    # the patient's level shifted and every drug moved alike: no drug information at all
    flat = [[t[0] + 8.0] + [t[0] - 5.0] * 3 for t in TRUE]
    m = drug_figures(_rows(TRUE, flat), DRUGS)["metrics"]
    assert m["drug_contrast_spearman"]["value"] is None or np.isnan(m["drug_contrast_spearman"]["value"])
    # drugs reversed against the truth (the no-drug plan kept worst): contrasts anti-correlated, best drug missed
    reversed_ = [[t[0]] + [-x for x in t[1:]] for t in TRUE]
    m = drug_figures(_rows(TRUE, reversed_), DRUGS)["metrics"]
    assert m["drug_contrast_spearman"]["value"] == pytest.approx(-1.0)
    assert m["best_drug_agreement"]["value"] == 0.0


def test_drug_effect_is_the_change_relative_to_no_drug():
    from pipelines.worldmodel.drug_response import drug_figures

    pred = [[t[0]] + [x + 1.0 for x in t[1:]] for t in TRUE]  # every drug simulated 1 ml weaker than the truth
    effects = drug_figures(_rows(TRUE, pred), DRUGS)["drug_effect_ml"]
    assert [r["drug"] for r in effects] == list(DRUGS)
    expected = np.mean([[t[k] - t[0] for k in (1, 2, 3)] for t in TRUE], axis=0)
    for r, e in zip(effects, expected):
        assert r["true"] == pytest.approx(e) and r["segmenter_ceiling"] == pytest.approx(e)
        assert r["simulated"] == pytest.approx(e + 1.0)
    # the best drug per patient (argmin of the true change over the drug rows): A for P0, B for P1, C for P2
    assert [r["best_share_true"] for r in effects] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    with pytest.raises(ConfigError, match="at least two patients"):
        drug_figures(_rows(TRUE[:1], TRUE[:1]), DRUGS)


def test_response_token_figures_tell_the_predictor_from_the_renderer():
    from pipelines.worldmodel.drug_response import card_text, drug_figures

    # the predictor knows the drugs perfectly (token = truth), the renderer draws them reversed
    reversed_ = [[t[0]] + [-x for x in t[1:]] for t in TRUE]
    rows = _rows(TRUE, reversed_)
    for patient, ts in zip(rows, TRUE):
        for r, t in zip(patient, ts):
            r["token_viable_change_ml"] = t + 2.0  # one offset: the order and contrasts are the truth's
    figures = drug_figures(rows, DRUGS)
    m = figures["metrics"]
    assert m["drug_contrast_spearman"]["response_token"] == pytest.approx(1.0)
    assert m["best_drug_agreement"]["response_token"] == pytest.approx(1.0)
    assert m["drug_contrast_spearman"]["value"] == pytest.approx(-1.0)
    assert m["response_token_following"]["value"] < 0  # the renderer does not follow the token
    expected = np.mean([[t[k] - t[0] for k in (1, 2, 3)] for t in TRUE], axis=0)
    assert [r["response_token"] for r in figures["drug_effect_ml"]] == pytest.approx(list(expected))
    report = {"metrics": m, "drug_effect_ml": figures["drug_effect_ml"], "config": {"plans": ["a", "b"],
              "patients_evaluated": 3, "patients": 3}, "skipped": [], "command": "mewm eval drugs",
              "machine": {"platform": "x", "cpu_count": 2, "torch": "t"}, "timing_s": {"total": 1.0}}
    from pathlib import Path
    text = card_text(report, Path("drug_response.json"))
    assert "response token |" in text and "Token following" in text
    # without token rows: no token figures at all
    assert "response_token_following" not in drug_figures(_rows(TRUE, TRUE), DRUGS)["metrics"]


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    from pipelines.cohort.generate import generate_cohort

    out = tmp_path_factory.mktemp("heldout") / "seed5"
    generate_cohort(n=3, seed=5, out=out, size=TINY_GRID, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from simulate_helpers import write_tiny_weights

    return write_tiny_weights(tmp_path_factory.mktemp("weights"))


def test_drug_report_end_to_end(tiny_cohort, tiny_weights, tmp_path):
    from pipelines.cli import main

    assert main(["eval", "drugs", "--cohort", str(tiny_cohort), "--weights", str(tiny_weights), "--patients", "3",
                 "--samples", "1", "--steps", "2", "--drugs", "Epirubicin,Mitomycin", "--quiet"]) == 0
    report = json.loads((tiny_weights / "dynamics" / "drug_response.json").read_text())
    evaluated = report["config"]["patients_evaluated"]
    assert evaluated + len(report["skipped"]) == 3 and evaluated >= 2
    assert report["config"]["plans"] == ["Lipiodol; Gelatin Sponge", "Epirubicin; Lipiodol; Gelatin Sponge",
                                         "Mitomycin; Lipiodol; Gelatin Sponge"]
    assert len(report["pairs"]) == 3 * evaluated
    assert set(report["metrics"]) == {"within_patient_spearman", "drug_contrast_spearman", "best_drug_agreement"}
    assert [r["drug"] for r in report["drug_effect_ml"]] == ["Epirubicin", "Mitomycin"]
    # the truth differs between the drugs of one patient (the simulator's drug classes), whatever the model does
    for i in range(0, len(report["pairs"]), 3):
        rows = report["pairs"][i:i + 3]
        assert len({r["case_id"] for r in rows}) == 1
        assert rows[1]["true_viable_change_ml"] != rows[2]["true_viable_change_ml"]
    args = build_parser().parse_args(shlex.split(report["command"])[1:])  # the recorded command runs
    assert args.drugs == "Epirubicin,Mitomycin" and args.patients == 3
    assert (tiny_weights / "dynamics" / "drug_response.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (tiny_weights / "dynamics" / "MODEL_CARD.md").read_text()
    assert "drug_response.png" in card
    assert card.count("## Drug response") == 1 and "| drug_contrast_spearman |" in card and "| Mitomycin |" in card
    assert main(["eval", "drugs", "--cohort", str(tiny_cohort), "--weights", str(tiny_weights), "--patients", "9",
                 "--quiet"]) == 2  # more patients than the cohort: a plain error


def test_drug_report_refuses_an_unknown_drug(tiny_cohort, tiny_weights, capsys):
    from pipelines.cli import main

    assert main(["eval", "drugs", "--cohort", str(tiny_cohort), "--weights", str(tiny_weights), "--drugs",
                 "Epirubicin,Aspirin", "--quiet"]) == 2
    assert "Aspirin" in capsys.readouterr().err


def test_drug_report_of_a_response_token_model(tiny_cohort, tmp_path):
    from simulate_helpers import write_tiny_weights

    from pipelines.cli import main

    weights = write_tiny_weights(tmp_path / "weights", response_token=True)
    assert main(["eval", "drugs", "--cohort", str(tiny_cohort), "--weights", str(weights), "--patients", "3",
                 "--samples", "1", "--steps", "2", "--drugs", "Epirubicin,Mitomycin", "--quiet"]) == 0
    report = json.loads((weights / "dynamics" / "drug_response.json").read_text())
    assert all(np.isfinite(r["token_viable_change_ml"]) for r in report["pairs"])
    # each drug's token effect is the mean over patients of its token change minus the no-drug plan's
    patients = [report["pairs"][i:i + 3] for i in range(0, len(report["pairs"]), 3)]
    for k, effect in enumerate(report["drug_effect_ml"], start=1):
        assert effect["response_token"] == pytest.approx(np.mean(
            [rows[k]["token_viable_change_ml"] - rows[0]["token_viable_change_ml"] for rows in patients]))
    assert "response_token_following" in report["metrics"]
    assert "response_token" in report["metrics"]["drug_contrast_spearman"]
    assert "Token following" in (weights / "dynamics" / "MODEL_CARD.md").read_text()
