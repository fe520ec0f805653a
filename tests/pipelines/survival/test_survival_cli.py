"""`mewm train survival` (cox and a 2-step deep run) and `mewm eval survival` on a tiny virtual cohort, with the
world model's embedded segmenter labelling the post-treatment crops (the default training data); CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.survival.data import load_survival_data
from pipelines.survival.model import load_survival_model

from survival_helpers import tiny_cohort

SEGMENTER = Path(__file__).resolve().parents[3] / "models" / "weights" / "segmentation"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return tiny_cohort(tmp_path_factory)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _eval(capsys, cohort, weights: Path) -> dict:
    rc, out, err = _run(capsys, "eval", "survival", "--cohort", cohort, "--weights", weights, "--quiet")
    assert rc == 0, err
    printed = json.loads(out)
    report = json.loads((weights / "evaluation.json").read_text())
    assert printed["n"] == report["n"] == 6 and report["n_events"] == 2
    c = report["metrics"]["c_index"]
    assert 0.0 <= c["value"] <= 1.0 and c["target"] == ">= 0.70"
    assert report["metrics"]["integrated_brier_score"]["baseline"] is not None
    assert report["metrics"]["oracle_c_index"]["value"] is not None  # the virtual cohort has its oracle
    assert (weights / "km_risk_groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(g["n"] for g in report["risk_groups"]["groups"]) == 6
    card = (weights / "MODEL_CARD.md").read_text()
    assert "## Evaluation" in card and "| c_index |" in card and "Research use only" in card
    return report


def test_train_and_eval_cox(cohort, tmp_path, capsys):
    out = tmp_path / "cox"
    rc, text, err = _run(capsys, "train", "survival", "--kind", "cox", "--manifest", cohort, "--out", out,
                         "--segmenter", SEGMENTER, "--quiet")
    assert rc == 0, err
    assert "Trained survival cox on 6 cases (2 deaths)" in text
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "survival_cox" and config["config"]["post_labels"] == "segmented"
    assert config["extra"]["data"]["segmenter"]["weights_sha256"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "mewm train survival --kind cox" in card and "synthetic" in card
    report = _eval(capsys, cohort, out)
    assert report["post_labels"] == "segmented" and report["kind"] == "cox"
    # held-out crops must be labelled by the segmenter the model was trained with
    config["extra"]["data"]["segmenter"]["weights_sha256"] = "0" * 64
    (out / "config.json").write_text(json.dumps(config))
    rc, _, err = _run(capsys, "eval", "survival", "--cohort", cohort, "--weights", out, "--quiet")
    assert rc == 2 and "--segmenter DIR" in err


def test_segmented_post_labels_follow_the_segmenter_inside_the_change_region(cohort):
    seg = load_survival_data(cohort, segmenter_dir=SEGMENTER, progress=False)
    true = load_survival_data(cohort, post_labels="true", progress=False)
    assert seg.post_labels.shape == true.post_labels.shape and seg.post_source == "segmented"
    assert not np.array_equal(seg.post_labels, true.post_labels)  # the segmenter's labels, not the truth
    # ...yet close to the truth where it matters: most true tumour voxels are tumour in the segmented labels
    tumour_true, tumour_seg = np.isin(true.post_labels, (2, 3, 4)), np.isin(seg.post_labels, (2, 3, 4))
    assert (tumour_true & tumour_seg).sum() > 0.5 * tumour_true.sum()


def test_decoded_post_labels_are_the_simulation_chain_on_the_true_post_crop(cohort, tmp_path, capsys):
    """``--post-labels decoded``: each true post crop through the world model's autoencoder and segmenter exactly
    as `decode_and_segment` labels a simulated crop (checked on one case by hand), not the sharp-crop labels;
    recorded with both networks' sha256, and a held-out evaluation checks the autoencoder too."""
    import torch

    from pipelines.survival.cli import POST_LABELS
    from pipelines.survival.data import POST_LABEL_SOURCES
    from pipelines.worldmodel.regions import DEFAULT_CHANGE_MARGIN_MM, change_region
    from pipelines.worldmodel.simulate import decode_and_segment
    from pipelines.worldmodel.weights import load_world_model

    assert POST_LABELS == POST_LABEL_SOURCES  # the CLI's light copy of the choices
    decoded = load_survival_data(cohort, post_labels="decoded", segmenter_dir=SEGMENTER, progress=False)
    sharp = load_survival_data(cohort, segmenter_dir=SEGMENTER, progress=False)
    assert decoded.post_source == "decoded" and decoded.segmenter["autoencoder_sha256"]
    assert decoded.post_labels.shape == sharp.post_labels.shape
    assert not np.array_equal(decoded.post_labels, sharp.post_labels)
    world, d = load_world_model(SEGMENTER.parent), decoded.crops(2)
    with torch.no_grad():
        latent = world.autoencoder.encode(torch.from_numpy(d["post"])[None, None])
        region = change_region(d["pre_labels"], DEFAULT_CHANGE_MARGIN_MM, world.crop.spacing)
        _, labels = decode_and_segment(world, latent, torch.from_numpy(d["pre"])[None, None], d["pre_labels"], region)
    np.testing.assert_array_equal(decoded.post_labels[2], labels[0].numpy())

    out = tmp_path / "cox_decoded"
    rc, text, err = _run(capsys, "train", "survival", "--kind", "cox", "--manifest", cohort, "--out", out,
                         "--segmenter", SEGMENTER, "--post-labels", "decoded", "--quiet")
    assert rc == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["post_labels"] == "decoded"
    assert "autoencoder has encoded and decoded it" in (out / "MODEL_CARD.md").read_text()
    assert _eval(capsys, cohort, out)["post_labels"] == "decoded"
    rc, _, err = _run(capsys, "eval", "survival", "--cohort", cohort, "--weights", out, "--plan-ranking", "1",
                      "--out", tmp_path / "ranked.json", "--quiet")  # counterfactual crops through the same chain
    assert rc == 0, err
    ranking = json.loads((tmp_path / "ranked.json").read_text())["plan_ranking"]
    assert ranking["post_labels"] == "decoded" and len(ranking["rows"]) == 1
    config["extra"]["data"]["segmenter"]["autoencoder_sha256"] = "0" * 64  # another autoencoder than the training one
    (out / "config.json").write_text(json.dumps(config))
    rc, _, err = _run(capsys, "eval", "survival", "--cohort", cohort, "--weights", out, "--quiet")
    assert rc == 2 and "decoded by the autoencoder" in err


def test_train_deep_two_steps_resume_load_and_eval(cohort, tmp_path, capsys):
    out = tmp_path / "deep"
    common = ("train", "survival", "--kind", "deep", "--manifest", cohort, "--out", out, "--segmenter", SEGMENTER,
              "--batch-size", "3", "--seed", "1", "--quiet")
    rc, text, err = _run(capsys, *common, "--steps", "2")
    assert rc == 0, err
    assert "Trained survival_deep: 2 steps" in text
    rc, text, err = _run(capsys, *common, "--steps", "3", "--resume")
    assert rc == 0, err
    assert "resumed at step 2" in text
    model = load_survival_model(out)
    assert model.kind == "deep" and len(model.baseline.event_times) >= 1
    data = load_survival_data(cohort, segmenter_dir=SEGMENTER, progress=False)
    d = data.crops(0)
    post = np.stack([d["post"], d["pre"]]) * 387.5 + 212.5  # windowed [-1, 1] back to HU
    pred = model.predict(d["pre"] * 387.5 + 212.5, d["pre_labels"], post,
                         np.stack([d["post_labels"], d["pre_labels"]]), data.covariates[0], data.voxel_ml)
    assert pred.log_risk.shape == (2,) and pred.survival.shape == (2, len(pred.times))
    assert np.isfinite(pred.log_risk).all() and pred.log_risk[0] != pred.log_risk[1]
    assert "mewm train survival --kind deep" in (out / "MODEL_CARD.md").read_text()
    _eval(capsys, cohort, out)


def test_cli_errors_are_one_line_naming_the_fix(cohort, tmp_path, capsys):
    rc, _, err = _run(capsys, "eval", "survival", "--cohort", cohort, "--weights", tmp_path / "none", "--quiet")
    assert rc == 2 and "mewm train survival --kind cox --manifest M --out" in err and "Traceback" not in err
    rc, _, err = _run(capsys, "train", "survival", "--kind", "cox", "--manifest", cohort, "--out", tmp_path / "x",
                      "--steps", "5")
    assert rc == 2 and "--steps are for `--kind deep` only" in err
    rc, _, err = _run(capsys, "train", "survival", "--kind", "deep", "--manifest", cohort, "--out", tmp_path / "x",
                      "--penalizer", "1")
    assert rc == 2 and "--penalizer is for `--kind cox` only" in err
