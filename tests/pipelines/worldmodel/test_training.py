"""The training loop (`pipelines.training`), the three trainers and `mewm train`, with tiny networks and crops."""

from __future__ import annotations

import json

import pytest
import torch
from wm_training_helpers import FAST, TINY_AE, TINY_CROP, TINY_DYN, TINY_SEG, tiny_autoencoder, tiny_cohort

from models.autoencoder import CropAutoencoder
from models.checkpoint import load_checkpoint
from models.dynamics import TumourDynamicsModel
from models.errors import CheckpointNotFoundError, ConfigError, ManifestError
from models.segmentation import CropSegmenter
from pipelines.cli import main
from pipelines.manifest import read_manifest, write_manifest
from pipelines.training import LOG_FILE, STATE_FILE, split_cases
from pipelines.worldmodel import train as wm_train
from pipelines.worldmodel.crops import AutoencoderCrops, CropConfig, build_crop_cache
from pipelines.worldmodel.train import (build_ddpm_scheduler, train_autoencoder, train_dynamics,
                                        train_segmentation)

BUILD = {"autoencoder": lambda c: CropAutoencoder(**c), "segmentation": lambda c: CropSegmenter(**c),
         "dynamics": lambda c: TumourDynamicsModel(**c)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return tiny_cohort(tmp_path_factory)


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    return tiny_autoencoder(tmp_path_factory)


def _run(kind, cohort, autoencoder, out, **kw):
    """One tiny training run of ``kind``."""
    kw = {"steps": 2, "batch_size": 2, "progress": False, "schedule": FAST, **kw}
    if kind == "autoencoder":
        return train_autoencoder(cohort, out, model_config=TINY_AE, crop=TINY_CROP, **kw)
    if kind == "segmentation":
        return train_segmentation(cohort, out, model_config=TINY_SEG, crop=TINY_CROP, **kw)
    return train_dynamics(cohort, autoencoder, out, model_config=TINY_DYN, **kw)


def _state(directory, kind):
    model, meta = load_checkpoint(directory, kind=kind, build=BUILD[kind], command="test")
    return model.state_dict(), meta


# ------------------------------------------------------------------------------------------------ the split
def test_split_is_fixed_disjoint_and_independent_of_order():
    ids = [f"VC{i:05d}" for i in range(20)]
    split = split_cases(ids)
    assert len(split.val) == 2 and sorted(split.train + split.val) == list(range(20))
    reverse = split_cases(ids[::-1])
    assert sorted(reverse.val_ids) == sorted(split.val_ids), "the held-out cases do not depend on the order"
    assert split_cases(ids, val_fraction=0.3).val_ids != split.val_ids


def test_too_few_usable_cases_is_a_clear_error(cohort, tmp_path):
    with pytest.raises(ManifestError, match=r"2 usable case\(s\).*needs at least 3"):
        split_cases(["a", "b"])
    write_manifest(read_manifest(cohort)[:2], tmp_path / "manifest.csv")
    with pytest.raises(ManifestError, match="usable case"):
        train_autoencoder(tmp_path, tmp_path / "out", steps=1, progress=False, model_config=TINY_AE, crop=TINY_CROP)
    with pytest.raises(ManifestError, match="No manifest"):
        train_segmentation(tmp_path / "nowhere", tmp_path / "out2", steps=1, progress=False)


# ------------------------------------------------------------------------------------------------ the trainers
@pytest.mark.parametrize("kind", ["autoencoder", "segmentation", "dynamics"])
def test_trainer_writes_a_loadable_checkpoint_a_card_and_a_log(kind, cohort, autoencoder, tmp_path):
    report = _run(kind, cohort, autoencoder, tmp_path / kind, steps=3)
    assert (report.kind, report.steps, report.start_step, report.n_train, report.n_val) == (kind, 3, 0, 3, 1)
    assert report.final_train_loss > 0 and report.final_val_loss > 0 and report.seconds_per_step > 0
    _, meta = _state(report.out, kind)
    assert meta.extra["data"]["synthetic"] is True and len(meta.extra["data"]["val_ids"]) == 1
    log = [json.loads(line) for line in (report.out / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in log if "val_loss" in r] == [2, 3]
    card = (report.out / "MODEL_CARD.md").read_text()
    assert f"mewm train {kind} --manifest {cohort / 'manifest.csv'}" in card
    assert "Trained on the synthetic virtual cohort only; not validated on real CT; research use only" in card
    assert "3 for training, 1 held out" in card and f"{report.final_val_loss:.5f}" in card


def test_autoencoder_latents_are_scaled_to_unit_variance(autoencoder, cohort):
    model, meta = load_checkpoint(autoencoder, kind="autoencoder", build=BUILD["autoencoder"], command="test")
    assert meta.extra["scale_factor"] == pytest.approx(float(model.scale_factor)) and model.scale_factor != 1
    assert meta.extra["crop"] == {"spacing": [5.0, 5.0, 5.0], "size": [16, 16, 16]}
    cache = build_crop_cache(cohort, spacing=TINY_CROP.spacing, crop_size=TINY_CROP.crop_size, progress=False)
    train_ids = meta.extra["data"]["train_ids"]
    crops = AutoencoderCrops(cache, [cache.case_ids.index(c) for c in train_ids])
    with torch.no_grad():
        z = model.encode(crops.images)
    assert z.shape == (6, 2, 8, 8, 8) and float(z.std()) == pytest.approx(1.0, abs=1e-4)


def test_dynamics_checkpoint_records_what_sampling_needs(cohort, autoencoder, tmp_path):
    report = _run("dynamics", cohort, autoencoder, tmp_path / "dyn", cond_drop_prob=0.5, change_margin_mm=7.5)
    _, meta = _state(report.out, "dynamics")
    assert meta.extra["crop"] == {"spacing": [5.0, 5.0, 5.0], "size": [16, 16, 16], "change_margin_mm": 7.5}
    assert meta.extra["autoencoder"]["config"]["latent_channels"] == 2 and meta.extra["cond_drop_prob"] == 0.5
    scheduler = build_ddpm_scheduler(meta.extra["scheduler"])
    assert scheduler.num_train_timesteps == 1000
    assert float(scheduler.betas[0]) == pytest.approx(0.0015) and float(scheduler.betas[-1]) == pytest.approx(0.0195)


def test_dynamics_trains_on_the_manifest_covariates_when_asked(cohort, autoencoder, tmp_path):
    fields = ["afp", "n_lesions", "max_diameter_mm", "vascular_invasion"]
    report = _run("dynamics", cohort, autoencoder, tmp_path / "dyn", clinical_fields=fields)
    model, meta = load_checkpoint(report.out, kind="dynamics", build=BUILD["dynamics"], command="test")
    assert model.config["clinical_fields"] == fields and model.clinical_encoder is not None
    card = (report.out / "MODEL_CARD.md").read_text()
    assert "--clinical-fields afp,n_lesions,max_diameter_mm,vascular_invasion" in card
    assert "conditioned on the covariates afp" in card
    with pytest.raises(ConfigError, match="Unknown clinical field"):  # before any crop is cached
        _run("dynamics", cohort, autoencoder, tmp_path / "bad", clinical_fields=["ldh"])
    assert all(r.covariates.get("afp") for r in read_manifest(cohort))  # the tiny cohort has labs to learn from


def test_dynamics_v_prediction_is_recorded_for_the_sampler(cohort, autoencoder, tmp_path):
    report = _run("dynamics", cohort, autoencoder, tmp_path / "dyn", prediction_type="v_prediction")
    _, meta = _state(report.out, "dynamics")
    assert meta.extra["scheduler"]["prediction_type"] == "v_prediction"
    assert build_ddpm_scheduler(meta.extra["scheduler"]).prediction_type == "v_prediction"
    card = (report.out / "MODEL_CARD.md").read_text()
    assert "v-prediction MSE" in card and "--prediction-type v_prediction" in card
    with pytest.raises(ConfigError, match="prediction_type"):
        _run("dynamics", cohort, autoencoder, tmp_path / "bad", prediction_type="sample")


def test_latent_batches_carry_each_rows_covariates():
    from models.plan import Plan
    from pipelines.worldmodel.crops import LatentPairs

    n = 6
    pre = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1, 1)
    plans = [Plan.parse("Epirubicin; Lipiodol")] * n
    pairs = LatentPairs(pre, pre.clone(), torch.zeros(n, 2, 1, 1, 1), plans, [f"C{i}" for i in range(n)],
                        [{"afp": float(i)} for i in range(n)])
    batch = pairs.sample_batch(4, torch.Generator().manual_seed(0))
    assert [c["afp"] for c in batch.covariates] == batch.pre.flatten().tolist()  # row i keeps patient i's labs
    assert LatentPairs(pre, pre, torch.zeros(n, 2, 1, 1, 1), plans, [f"C{i}" for i in range(n)])[0].covariates == [{}]
    with pytest.raises(ValueError, match="covariate rows"):
        LatentPairs(pre, pre, torch.zeros(n, 2, 1, 1, 1), plans, [f"C{i}" for i in range(n)], [{}])


def test_embolic_balance_weights_draw_groups_by_the_chosen_power():
    from models.plan import Plan
    from pipelines.worldmodel.crops import embolic_balance_weights, embolic_group

    plans = [Plan.parse("Epirubicin; Lipiodol; Gelatin Sponge")] * 9 + [Plan.parse("Epirubicin; Drug-eluting Beads")]
    assert embolic_group(plans[0]) == "Gelatin Sponge + Lipiodol" and embolic_group(plans[-1]) == "Drug-eluting Beads"
    assert embolic_balance_weights(plans, 0.0) is None  # off: uniform draws
    for power, share in ((1.0, 0.5), (0.5, 1 / (1 + 3))):  # the rare group's share of the draws: n^(1-power)
        w = embolic_balance_weights(plans, power)
        assert w.shape == (10,) and float(w.sum()) == pytest.approx(1.0)
        assert float(w[-1]) == pytest.approx(share) and float(w[0]) == pytest.approx((1 - share) / 9)
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="embolic balance"):
            embolic_balance_weights(plans, bad)


def test_latent_pairs_draw_by_their_sampling_weights():
    from models.plan import Plan
    from pipelines.worldmodel.crops import LatentPairs, embolic_balance_weights

    n = 20
    pre = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1, 1)
    plans = [Plan.parse("Epirubicin; Lipiodol")] * (n - 1) + [Plan.parse("Epirubicin; Drug-eluting Beads")]
    args = (pre, pre.clone(), torch.zeros(n, 2, 1, 1, 1), plans, [f"C{i}" for i in range(n)])
    plain = LatentPairs(*args).sample_batch(400, torch.Generator().manual_seed(0))
    balanced = LatentPairs(*args, sampling_weights=embolic_balance_weights(plans, 1.0))
    batch = balanced.sample_batch(400, torch.Generator().manual_seed(0))
    beads = lambda b: sum(p.embolics == ("Drug-eluting Beads",) for p in b.plans)  # noqa: E731
    assert beads(plain) < 60 and 160 < beads(batch) < 240  # 1 in 20 as they come, half of the draws balanced
    assert all(p == plans[int(i)] for p, i in zip(batch.plans, batch.pre.flatten()))  # rows stay whole
    again = balanced.sample_batch(400, torch.Generator().manual_seed(0))
    assert torch.equal(again.pre, batch.pre)  # deterministic for a seed
    with pytest.raises(ValueError, match="sampling_weights"):
        LatentPairs(*args, sampling_weights=torch.zeros(n))
    with pytest.raises(ValueError, match="sampling_weights"):
        LatentPairs(*args, sampling_weights=torch.ones(n - 1))


def test_dynamics_embolic_balance_is_recorded_and_part_of_the_runs_identity(cohort, autoencoder, tmp_path,
                                                                           monkeypatch):
    asked = []
    real = wm_train.embolic_balance_weights
    monkeypatch.setattr(wm_train, "embolic_balance_weights", lambda plans, power: asked.append((len(plans), power))
                        or real(plans, power))
    report = _run("dynamics", cohort, autoencoder, tmp_path / "dyn", embolic_balance=0.5)
    assert asked[-1] == (report.n_train, 0.5)  # the training pairs' plans are weighed, with the power asked for
    _, meta = _state(report.out, "dynamics")
    assert meta.extra["embolic_balance"] == 0.5
    card = (report.out / "MODEL_CARD.md").read_text()
    assert "--embolic-balance 0.5" in card and "embolic groups balanced" in card
    with pytest.raises(ConfigError, match="embolic_balance"):  # a resumed run keeps its balance
        _run("dynamics", cohort, autoencoder, tmp_path / "dyn", steps=3, resume=True)
    plain = _run("dynamics", cohort, autoencoder, tmp_path / "plain")
    assert "embolic_balance" not in _state(plain.out, "dynamics")[1].extra
    with pytest.raises(ConfigError, match="embolic balance"):  # before any crop is cached
        _run("dynamics", cohort, autoencoder, tmp_path / "bad", embolic_balance=2.0)
    assert not (tmp_path / "bad").exists()


def test_region_weighted_mse_known_answers():
    from pipelines.worldmodel.train import region_weighted_mse

    target = torch.zeros(1, 2, 2, 1, 1)
    prediction = torch.tensor([1.0, 3.0, 1.0, 3.0]).reshape(1, 2, 2, 1, 1)  # error 1 outside, 3 inside
    region = torch.tensor([0.0, 1.0]).reshape(1, 1, 2, 1, 1)
    assert float(region_weighted_mse(prediction, target, region, 0.0)) == pytest.approx(5.0)  # (1 + 9) / 2
    assert float(region_weighted_mse(prediction, target, region, 3.0)) == pytest.approx((1 + 4 * 9) / 5)
    assert torch.equal(region_weighted_mse(prediction, target, region, 0.0),
                       torch.nn.functional.mse_loss(prediction, target))
    assert float(region_weighted_mse(prediction, target, torch.zeros_like(region), 5.0)) == pytest.approx(5.0)


def test_dynamics_change_weight_trains_differently_and_is_recorded(cohort, autoencoder, tmp_path):
    plain = _run("dynamics", cohort, autoencoder, tmp_path / "plain", steps=3)
    weighted = _run("dynamics", cohort, autoencoder, tmp_path / "weighted", steps=3, change_weight=4.0)
    a, _ = _state(plain.out, "dynamics")
    b, meta = _state(weighted.out, "dynamics")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the same draws, another loss
    assert meta.extra["change_weight"] == 4.0
    card = (weighted.out / "MODEL_CARD.md").read_text()
    assert "--change-weight 4" in card and "weighted 1 + 4" in card
    with pytest.raises(ConfigError, match="change_weight"):
        _run("dynamics", cohort, autoencoder, tmp_path / "weighted", steps=4, resume=True)
    with pytest.raises(ConfigError, match="change_weight must be"):
        _run("dynamics", cohort, autoencoder, tmp_path / "bad", change_weight=-1.0)


def test_dynamics_needs_a_trained_autoencoder(cohort, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="mewm train autoencoder"):
        train_dynamics(cohort, tmp_path / "no-ae", tmp_path / "dyn", steps=1, progress=False, model_config=TINY_DYN)


# ------------------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("kind", ["autoencoder", "dynamics"])
def test_resume_gives_the_weights_of_an_uninterrupted_run(kind, cohort, autoencoder, tmp_path):
    whole = _run(kind, cohort, autoencoder, tmp_path / "whole", steps=4)
    first = _run(kind, cohort, autoencoder, tmp_path / "split", steps=2)
    assert torch.load(first.out / STATE_FILE, weights_only=False)["step"] == 2
    resumed = _run(kind, cohort, autoencoder, tmp_path / "split", steps=4, resume=True)
    assert resumed.start_step == 2 and resumed.steps == 4
    a, _ = _state(whole.out, kind)
    b, _ = _state(resumed.out, kind)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_whole = [r for r in map(json.loads, (whole.out / LOG_FILE).read_text().splitlines()) if "loss" in r]
    log_split = [r for r in map(json.loads, (resumed.out / LOG_FILE).read_text().splitlines()) if "loss" in r]
    assert [r["loss"] for r in log_whole] == [r["loss"] for r in log_split]


def test_resume_refuses_other_settings_and_missing_state(cohort, autoencoder, tmp_path):
    _run("segmentation", cohort, autoencoder, tmp_path / "seg", steps=1)
    with pytest.raises(ConfigError, match="--resume to continue"):
        _run("segmentation", cohort, autoencoder, tmp_path / "seg", steps=2)
    with pytest.raises(ConfigError, match="lr"):
        _run("segmentation", cohort, autoencoder, tmp_path / "seg", steps=2, lr=5e-3, resume=True)
    with pytest.raises(ConfigError, match="no train_state.pt"):
        _run("segmentation", cohort, autoencoder, tmp_path / "fresh", steps=2, resume=True)


# ------------------------------------------------------------------------------------------------ the CLI
@pytest.fixture
def tiny_defaults(monkeypatch):
    """The CLI trains the default networks on 48³ crops; tests shrink those defaults."""
    monkeypatch.setattr(wm_train, "MODEL_CONFIGS", {"autoencoder": TINY_AE, "segmentation": TINY_SEG,
                                                    "dynamics": TINY_DYN})
    monkeypatch.setattr(wm_train, "DEFAULT_CROP", TINY_CROP)


def test_cli_train_commands(cohort, tmp_path, tiny_defaults, capsys, monkeypatch):
    workers = []
    real_cache = wm_train.build_crop_cache
    monkeypatch.setattr(wm_train, "build_crop_cache",
                        lambda *a, **k: workers.append(k["workers"]) or real_cache(*a, **k))
    common = ["--manifest", str(cohort), "--batch-size", "2", "--seed", "1", "--quiet", "--threads", "1"]
    outs = {kind: tmp_path / kind for kind in ("autoencoder", "segmentation", "dynamics")}
    assert main(["train", "autoencoder", "--out", str(outs["autoencoder"]), "--steps", "2", "--workers", "2",
                 *common]) == 0
    assert workers == [2]  # --workers reaches the crop cache
    assert main(["train", "segmentation", "--out", str(outs["segmentation"]), "--steps", "2", *common]) == 0
    assert main(["train", "dynamics", "--autoencoder", str(outs["autoencoder"]), "--out", str(outs["dynamics"]),
                 "--steps", "2", *common]) == 0
    assert "Trained dynamics: 2 steps on 3 cases, 1 held out" in capsys.readouterr().out
    labs = tmp_path / "dynamics_labs"
    assert main(["train", "dynamics", "--autoencoder", str(outs["autoencoder"]), "--out", str(labs), "--steps", "2",
                 "--clinical-fields", "afp, n_lesions", *common]) == 0
    assert _state(labs, "dynamics")[1].config["clinical_fields"] == ["afp", "n_lesions"]
    assert "clinical_fields" not in _state(outs["dynamics"], "dynamics")[1].config
    for kind, out in outs.items():
        _, meta = _state(out, kind)
        assert meta.extra["data"]["n_cases"] == 4
    assert main(["train", "autoencoder", "--out", str(outs["autoencoder"]), "--steps", "3", "--resume",
                 *common]) == 0
    assert "resumed at step 2" in capsys.readouterr().out


def test_cli_train_errors(cohort, tmp_path, tiny_defaults, capsys):
    assert main(["train", "dynamics", "--manifest", str(cohort), "--out", str(tmp_path / "d"), "--quiet"]) == 2
    assert "--autoencoder" in capsys.readouterr().err
    assert main(["train", "segmentation", "--manifest", str(tmp_path / "none"), "--out", str(tmp_path / "s"),
                 "--quiet"]) == 2
    assert "No manifest" in capsys.readouterr().err
    assert main(["train", "autoencoder", "--manifest", str(cohort), "--autoencoder", str(tmp_path),
                 "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert "only, not autoencoder" in capsys.readouterr().err
    assert main(["train", "segmentation", "--manifest", str(cohort), "--reconstructed-fraction", "0.3",
                 "--out", str(tmp_path / "s"), "--quiet"]) == 2
    assert "needs --autoencoder" in capsys.readouterr().err
    assert main(["train", "segmentation", "--manifest", str(cohort), "--autoencoder", str(tmp_path / "no_ae"),
                 "--out", str(tmp_path / "s"), "--quiet"]) == 2
    assert "mewm train autoencoder" in capsys.readouterr().err  # names the command that makes one
    assert not (tmp_path / "s").exists()  # refused before any work
    assert main(["train", "autoencoder", "--manifest", str(cohort), "--workers", "0", "--out", str(tmp_path / "a"),
                 "--quiet"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err and not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------------ reconstructions
def test_segmenter_trains_on_autoencoder_reconstructions(cohort, autoencoder, tmp_path):
    report = _run("segmentation", cohort, autoencoder, tmp_path / "seg", autoencoder_dir=autoencoder,
                  reconstructed_fraction=0.25)
    _, meta = _state(tmp_path / "seg", "segmentation")
    recon = meta.extra["reconstructions"]
    assert recon["fraction"] == 0.25 and len(recon["weights_sha256"]) == 64
    card = (tmp_path / "seg" / "MODEL_CARD.md").read_text()
    assert "reconstruction of it with probability 0.25" in card and "--reconstructed-fraction 0.25" in card
    assert f"--autoencoder {autoencoder}" in card
    assert report.final_val_loss > 0
    # a resumed run with another share of reconstructions is another run: refused
    with pytest.raises(ConfigError):
        _run("segmentation", cohort, autoencoder, tmp_path / "seg", steps=3, resume=True,
             autoencoder_dir=autoencoder, reconstructed_fraction=0.5)


def test_reconstructions_are_the_autoencoders_and_replace_crops_at_the_given_rate(cohort, autoencoder):
    from pipelines.worldmodel.crops import SegmentationCrops, autoencoder_reconstructions

    cache = build_crop_cache(cohort, spacing=TINY_CROP.spacing, crop_size=TINY_CROP.crop_size, progress=False)
    model, _ = load_checkpoint(autoencoder, kind="autoencoder", build=BUILD["autoencoder"], command="test")
    everything = SegmentationCrops(cache, [1, 2], reconstructions=autoencoder_reconstructions(
        cache, model, weights_key="k"), reconstructed_fraction=1.0)
    recon = everything.reconstructed
    sharp = SegmentationCrops(cache, [1, 2])
    assert recon.shape == sharp.images.shape and recon.dtype == torch.float16
    with torch.no_grad():
        expected = model.decode(model.encode(sharp.images)).clamp(-1, 1)
    torch.testing.assert_close(recon.float(), expected, atol=2e-3, rtol=0)
    assert list(cache.directory.glob("reconstructions-*.pt")), "stored beside the crops for the next run"

    none = SegmentationCrops(cache, [1, 2], reconstructions=autoencoder_reconstructions(cache, model, weights_key="k"),
                             reconstructed_fraction=0.0)
    g = torch.Generator().manual_seed(0)
    x, y = everything.sample_batch(8, g, augment=False)
    idx = torch.randint(len(sharp), (8,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, recon[idx].float())
    assert torch.equal(y, sharp.labels[idx].long()), "labels stay the true labels"
    x0, _ = none.sample_batch(8, torch.Generator().manual_seed(0), augment=False)
    torch.testing.assert_close(x0, sharp.images[idx])
    batches = list(everything.all_batches(3))
    assert sum(len(b[0]) for b in batches) == 2 * len(sharp), "validation sees the sharp and reconstructed crops"
    with pytest.raises(ValueError, match="do not match"):
        SegmentationCrops(cache, [1], reconstructions={"pre": recon[:1], "post": recon[:1]})


def test_reconstructions_need_an_autoencoder_of_the_same_crops(cohort, autoencoder, tmp_path):
    from pipelines.worldmodel.crops import CropConfig

    with pytest.raises(ConfigError, match="Use an autoencoder of the run's crop geometry"):
        train_segmentation(cohort, tmp_path / "s", steps=1, progress=False, model_config=TINY_SEG,
                           crop=CropConfig((5.0, 5.0, 5.0), (32, 32, 32)), autoencoder_dir=autoencoder)
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        _run("segmentation", cohort, autoencoder, tmp_path / "s2", autoencoder_dir=autoencoder,
             reconstructed_fraction=1.5)
    assert not (tmp_path / "s").exists() and not (tmp_path / "s2").exists()


# ------------------------------------------------------------------------------------------------ volume term
def test_volume_error_known_answers_and_gradient_sign():
    from pipelines.worldmodel.train import volume_error

    y = torch.zeros(1, 1, 10, 10, 10, dtype=torch.long)
    y[0, 0, :4] = 2  # 400 viable voxels; no necrosis, no Lipiodol
    confident = torch.full((1, 5, 10, 10, 10), -20.0).scatter_(1, y, 20.0)
    assert float(volume_error(confident, y)) == pytest.approx(0.0, abs=1e-6)
    # viable read in 3 of the 4 slabs: 100 voxels short of 400 (floor 200); necrosis and Lipiodol right
    short = y.clone()
    short[0, 0, 3] = 1
    logits = torch.full((1, 5, 10, 10, 10), -20.0).scatter_(1, short, 20.0)
    assert float(volume_error(logits, y, floor=200.0)) == pytest.approx(100 / 600 / 3, rel=1e-4)
    assert float(volume_error(logits, y, classes=[2], floor=200.0)) == pytest.approx(100 / 600, rel=1e-4)
    # an under-read class gets a gradient that raises its logit where it is in doubt
    doubt = torch.zeros(1, 5, 10, 10, 10)
    doubt[:, 1] = 0.5  # liver slightly ahead of viable everywhere
    doubt.requires_grad_(True)
    volume_error(doubt, y, classes=[2]).backward()
    assert float(doubt.grad[0, 2].sum()) < 0, "descending the error raises the viable logit"
    with pytest.raises(ValueError, match="positive"):
        volume_error(logits, y, temperature=0.0)


def test_segmenter_volume_weight_is_trained_recorded_and_checked(cohort, autoencoder, tmp_path, monkeypatch):
    from pipelines.worldmodel import train as train_module

    calls = []
    real = train_module.volume_error
    monkeypatch.setattr(train_module, "volume_error", lambda *a, **k: calls.append(1) or real(*a, **k))
    _run("segmentation", cohort, autoencoder, tmp_path / "vol", volume_weight=0.5)
    assert calls, "the volume term is part of the loss"
    _, meta = _state(tmp_path / "vol", "segmentation")
    assert meta.extra["volume_loss"]["weight"] == 0.5
    card = (tmp_path / "vol" / "MODEL_CARD.md").read_text()
    assert "--volume-weight 0.5" in card and "relative error of the viable-tumour" in card
    calls.clear()
    _run("segmentation", cohort, autoencoder, tmp_path / "plain")
    assert not calls and "volume_loss" not in _state(tmp_path / "plain", "segmentation")[1].extra
    with pytest.raises(ConfigError):  # a resumed run with another volume weight is another run
        _run("segmentation", cohort, autoencoder, tmp_path / "vol", steps=3, resume=True, volume_weight=1.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--volume-weight"):
            _run("segmentation", cohort, autoencoder, tmp_path / "bad", volume_weight=bad)
    assert not (tmp_path / "bad").exists()


def test_cli_passes_embolic_balance_and_change_weight(cohort, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(wm_train, "train_dynamics", lambda *a, **k: seen.update(k) or (_ for _ in ()).throw(
        ConfigError("stop")))
    assert main(["train", "dynamics", "--manifest", str(cohort), "--autoencoder", str(tmp_path / "ae"),
                 "--out", str(tmp_path / "d"), "--embolic-balance", "0.5", "--quiet"]) == 2
    assert seen["embolic_balance"] == 0.5 and seen["change_weight"] == 0.0
    assert main(["train", "dynamics", "--manifest", str(cohort), "--autoencoder", str(tmp_path / "ae"),
                 "--out", str(tmp_path / "d"), "--change-weight", "4", "--quiet"]) == 2
    assert seen["change_weight"] == 4.0 and seen["embolic_balance"] == 0.0


def test_cli_passes_volume_weight(cohort, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(wm_train, "train_segmentation", lambda *a, **k: seen.update(k) or (_ for _ in ()).throw(
        ConfigError("stop")))
    assert main(["train", "segmentation", "--manifest", str(cohort), "--out", str(tmp_path / "s"),
                 "--volume-weight", "0.75", "--quiet"]) == 2
    assert seen["volume_weight"] == 0.75


# ------------------------------------------------------------------------------------------------ whole lesions
SMALL_CROP = CropConfig((5.0, 5.0, 5.0), (8, 8, 8))  # 40 mm: some lesions of the tiny cohort do not fit


def test_whole_lesion_cache_holds_each_large_lesion_in_the_smallest_crop_that_fits(cohort):
    from pipelines.manifest import load_manifest_case
    from pipelines.preprocess import crop_size_ladder, lesion_fits, preprocess_case
    from pipelines.worldmodel.crops import build_whole_lesion_cache

    cache = build_crop_cache(cohort, spacing=SMALL_CROP.spacing, crop_size=SMALL_CROP.crop_size, progress=False)
    whole = build_whole_lesion_cache(cache, step=8, largest=32, progress=False)
    assert len(whole) > 0 and not whole.uniform and whole.config == cache.config
    ladder = crop_size_ladder((8, 8, 8), 8, 32)
    assert ladder == [(8, 8, 8), (16, 16, 16), (24, 24, 24), (32, 32, 32)]
    records = {r.case_id: r for r in read_manifest(cohort)}
    for case_id in cache.case_ids:
        case = load_manifest_case(records[case_id])
        fits = [lesion_fits(case, preprocess_case(case, spacing=SMALL_CROP.spacing, crop_size=s)) for s in ladder]
        if case_id in whole.case_ids:
            entry = whole.entries[whole.case_ids.index(case_id)]
            k = ladder.index(tuple(entry["crop_size"]))
            assert k > 0 and fits[k] and not any(fits[:k]), "the smallest crop that holds the lesion"
            item = whole.load(whole.case_ids.index(case_id))
            assert item["pre"].shape == item["post_labels"].shape == tuple(entry["crop_size"])
        elif fits[0]:
            continue
        else:
            assert not any(fits) and case_id in [s["case_id"] for s in whole.skipped]
    assert build_whole_lesion_cache(cache, step=8, largest=32, progress=False).reused
    for bad in ({"step": 0, "largest": 32}, {"step": 8, "largest": 4}):
        with pytest.raises(ValueError, match="build_whole_lesion_cache"):
            build_whole_lesion_cache(cache, progress=False, **bad)


def test_whole_lesion_crops_draw_reconstructions_of_their_own_size(cohort, autoencoder):
    from pipelines.worldmodel.crops import WholeLesionCrops, autoencoder_reconstructions, build_whole_lesion_cache

    cache = build_crop_cache(cohort, spacing=SMALL_CROP.spacing, crop_size=SMALL_CROP.crop_size, progress=False)
    whole = build_whole_lesion_cache(cache, step=8, largest=32, progress=False)
    model, _ = load_checkpoint(autoencoder, kind="autoencoder", build=BUILD["autoencoder"], command="test")
    recon = autoencoder_reconstructions(whole, model, weights_key="k")
    assert [tuple(r.shape[2:]) for r in recon["pre"]] == [tuple(e["crop_size"]) for e in whole.entries]
    crops = WholeLesionCrops(whole, reconstructions=recon, reconstructed_fraction=1.0)
    assert len(crops) == 2 * len(whole)
    x, y = crops.sample(torch.Generator().manual_seed(0), augment=False)
    i = int(torch.randint(len(crops), (1,), generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(x, crops.reconstructed[i].float())
    assert torch.equal(y, crops.items[i][1]) and x.shape == y.shape
    with torch.no_grad():
        expected = model.decode(model.encode(crops.items[i][0])).clamp(-1, 1)
    torch.testing.assert_close(x, expected, atol=2e-3, rtol=0)
    assert len(list(crops.all_items())) == 2 * len(crops), "validation sees sharp and reconstructed crops"


def test_segmenter_trains_on_whole_lesion_crops_recorded_and_checked(cohort, tmp_path, monkeypatch):
    from pipelines.worldmodel.crops import WholeLesionCrops

    draws = []
    real = WholeLesionCrops.sample
    monkeypatch.setattr(WholeLesionCrops, "sample", lambda self, g, augment=True: draws.append(1) or real(self, g))
    train_segmentation(cohort, tmp_path / "w", steps=2, batch_size=2, progress=False, schedule=FAST,
                       model_config=TINY_SEG, crop=SMALL_CROP, whole_lesions=24)
    assert len(draws) == 2, "one whole-lesion crop per step"
    _, meta = _state(tmp_path / "w", "segmentation")
    info = meta.extra["whole_lesions"]
    assert info["largest"] == 24 and info["step"] == 16 and info["n_train"] > 0
    assert "--whole-lesion-crops 24" in (tmp_path / "w" / "MODEL_CARD.md").read_text()
    with pytest.raises(ConfigError):  # a resumed run without them is another run
        train_segmentation(cohort, tmp_path / "w", steps=3, batch_size=2, progress=False, schedule=FAST,
                           model_config=TINY_SEG, crop=SMALL_CROP, resume=True)
    for bad in (8, 10, -16, True):
        with pytest.raises(ConfigError, match="--whole-lesion-crops"):
            train_segmentation(cohort, tmp_path / "bad", steps=1, progress=False, model_config=TINY_SEG,
                               crop=SMALL_CROP, whole_lesions=bad)
    assert not (tmp_path / "bad").exists()


def test_cli_passes_whole_lesion_crops(cohort, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(wm_train, "train_segmentation", lambda *a, **k: seen.update(k) or (_ for _ in ()).throw(
        ConfigError("stop")))
    assert main(["train", "segmentation", "--manifest", str(cohort), "--out", str(tmp_path / "s"),
                 "--whole-lesion-crops", "96", "--quiet"]) == 2
    assert seen["whole_lesions"] == 96


@pytest.fixture(scope="module")
def small_autoencoder(cohort, tmp_path_factory):
    """A 2-step tiny autoencoder of `SMALL_CROP` (so some lesions need a whole-lesion crop)."""
    out = tmp_path_factory.mktemp("wm_ae_small") / "ae"
    train_autoencoder(cohort, out, steps=2, batch_size=2, progress=False, model_config=TINY_AE, crop=SMALL_CROP,
                      schedule=FAST)
    return out


def test_whole_lesion_pairs_group_latents_by_crop_size(cohort, small_autoencoder):
    from pipelines.worldmodel.crops import LatentPairs, WholeLesionPairs, build_whole_lesion_cache

    cache = build_crop_cache(cohort, spacing=SMALL_CROP.spacing, crop_size=SMALL_CROP.crop_size, progress=False)
    whole = build_whole_lesion_cache(cache, step=4, largest=32, progress=False)  # fine steps: several sizes
    model, _ = load_checkpoint(small_autoencoder, kind="autoencoder", build=BUILD["autoencoder"], command="test")
    pairs = WholeLesionPairs.from_cache(whole, model, change_margin_mm=5.0, weights_key="k", responses=True)
    sizes = {tuple(e["crop_size"]) for e in whole.entries}
    assert set(pairs.groups) == sizes and len(pairs) == len(whole)
    assert sorted(pairs.case_ids) == sorted(whole.case_ids)
    for size, group in pairs.groups.items():
        latent = tuple(s // model.downsampling for s in size)
        assert group.pre.shape[2:] == group.post.shape[2:] == group.masks.shape[2:] == latent
        assert group.responses.shape == (len(group), 3)
        i = whole.case_ids.index(group.case_ids[0])
        item = whole.load(i)
        assert group.plans[0].canonical() == item["plan"]
        with torch.no_grad():
            expected = model.encode(torch.from_numpy(item["pre"])[None, None])[0]
        torch.testing.assert_close(group.pre[0], expected, atol=1e-5, rtol=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # one crop size per batch
        batch = pairs.sample_batch(3, g)
        assert batch.pre.shape[0] == 3 and tuple(batch.pre.shape[2:]) in {
            tuple(s // model.downsampling for s in size) for size in sizes}
    assert sum(len(b.plans) for b in pairs.all_batches(2)) == len(pairs)
    # encoded once: a second build reads the stored latents back
    stored = list(whole.directory.glob("latents-*.pt"))
    assert len(stored) == 1
    again = WholeLesionPairs.from_cache(whole, model, change_margin_mm=5.0, weights_key="k")
    assert list(whole.directory.glob("latents-*.pt")) == stored
    assert all(torch.equal(again.groups[s].post, pairs.groups[s].post) for s in sizes)
    assert len(sizes) > 1, "the tiny cohort's lesions need crops of several sizes"
    with pytest.raises(ValueError, match="differ in size"):
        LatentPairs.from_cache(whole, model, change_margin_mm=5.0, weights_key="k")
    whole.entries[0] = {**whole.entries[0], "plan": None}  # in memory only: a case without its plan
    for build in (LatentPairs.from_cache, WholeLesionPairs.from_cache):
        with pytest.raises(ManifestError, match=f"{whole.entries[0]['case_id']}.*no administered plan"):
            build(whole, model, change_margin_mm=5.0, weights_key="k")


def test_dynamics_trains_on_whole_lesion_pairs_recorded_and_checked(cohort, small_autoencoder, tmp_path,
                                                                   monkeypatch):
    from pipelines.worldmodel.crops import WholeLesionPairs

    draws = []
    real = WholeLesionPairs.sample_batch
    monkeypatch.setattr(WholeLesionPairs, "sample_batch",
                        lambda self, n, g: draws.append(n) or real(self, n, g))
    kw = {"batch_size": 8, "progress": False, "schedule": FAST, "model_config": TINY_DYN}
    plain = train_dynamics(cohort, small_autoencoder, tmp_path / "plain", steps=2, **kw)
    assert not draws
    train_dynamics(cohort, small_autoencoder, tmp_path / "w", steps=2, whole_lesions=24, **kw)
    assert draws == [2, 2], "one whole-lesion batch of a quarter of the batch size per step"
    a, _ = _state(plain.out, "dynamics")
    b, meta = _state(tmp_path / "w", "dynamics")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    info = meta.extra["whole_lesions"]
    assert info["largest"] == 24 and info["step"] == 16 and info["n_train"] > 0 and info["batch"] == 2
    card = (tmp_path / "w" / "MODEL_CARD.md").read_text()
    assert "--whole-lesion-crops 24" in card and "whole-lesion pair" in card
    with pytest.raises(ConfigError):  # a resumed run without them is another run
        train_dynamics(cohort, small_autoencoder, tmp_path / "w", steps=3, resume=True, **kw)
    for bad in (8, 10, -16, True):
        with pytest.raises(ConfigError, match="--whole-lesion-crops"):
            train_dynamics(cohort, small_autoencoder, tmp_path / "bad", steps=1, whole_lesions=bad, **kw)
    assert not (tmp_path / "bad").exists()


def test_cli_passes_whole_lesion_crops_to_dynamics(cohort, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(wm_train, "train_dynamics", lambda *a, **k: seen.update(k) or (_ for _ in ()).throw(
        ConfigError("stop")))
    assert main(["train", "dynamics", "--manifest", str(cohort), "--out", str(tmp_path / "d"), "--autoencoder",
                 str(tmp_path), "--whole-lesion-crops", "96", "--quiet"]) == 2
    assert seen["whole_lesions"] == 96


def test_frozen_batch_norm_uses_and_keeps_running_statistics():
    from pipelines.worldmodel.train import frozen_batch_norm

    torch.manual_seed(0)
    model = CropSegmenter(**{**TINY_SEG, "norm": "batch"}).train()
    x = torch.randn(1, 1, 16, 16, 16) * 0.3 + 0.5
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert before, "a batch-norm segmenter"
    with frozen_batch_norm(model):
        out = model(x)
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before), "running statistics untouched"
    with torch.no_grad():
        expected = model.eval()(x)
    torch.testing.assert_close(out.detach(), expected)
    model.train()
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "norm" in n), \
        "the affine weights still learn"
    assert all(m.training for m in model.modules()), "training mode restored"
