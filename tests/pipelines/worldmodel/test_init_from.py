"""Fine-tuning from a trained checkpoint (`--init-from`): segmentation (and dynamics) start from its weights, the
card and checkpoint record it, and a checkpoint of another network config, crop geometry or autoencoder is a clear
error naming both sides."""

from __future__ import annotations

import hashlib

import pytest
import torch
from wm_training_helpers import FAST, TINY_AE, TINY_CROP, TINY_DYN, TINY_SEG, tiny_autoencoder, tiny_cohort

from models.checkpoint import load_checkpoint
from models.errors import CheckpointNotFoundError, ConfigError
from models.segmentation import CropSegmenter
from pipelines.cli import main
from pipelines.worldmodel import train as wm_train
from pipelines.worldmodel.crops import CropConfig
from pipelines.worldmodel.train import FINE_TUNE_LR, train_dynamics, train_segmentation


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return tiny_cohort(tmp_path_factory)


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    return tiny_autoencoder(tmp_path_factory)


@pytest.fixture(scope="module")
def pretrained(cohort, tmp_path_factory):
    """A tiny segmenter trained for 2 steps: the checkpoint to fine-tune."""
    out = tmp_path_factory.mktemp("pretrained") / "seg"
    train_segmentation(cohort, out, steps=2, batch_size=2, progress=False, schedule=FAST, model_config=TINY_SEG,
                       crop=TINY_CROP, seed=3)
    return out


def _segment(cohort, out, **kw):
    kw = {"steps": 1, "batch_size": 2, "progress": False, "schedule": FAST, "model_config": TINY_SEG,
          "crop": TINY_CROP, **kw}
    return train_segmentation(cohort, out, **kw)


def _weights(directory):
    model, meta = load_checkpoint(directory, kind="segmentation", build=lambda c: CropSegmenter(**c), command="t")
    return model.state_dict(), meta


def test_fine_tuning_starts_from_the_checkpoint_and_records_it(cohort, pretrained, tmp_path):
    start, _ = _weights(pretrained)
    # a vanishing lr: one step leaves the start weights, so the run must have begun from them
    tuned = _segment(cohort, tmp_path / "tuned", init_from=pretrained, lr=1e-12)
    scratch = _segment(cohort, tmp_path / "scratch", lr=1e-12)
    after, meta = _weights(tuned.out)
    fresh, _ = _weights(scratch.out)
    floats = [k for k in start if start[k].is_floating_point()]
    assert all(torch.allclose(after[k], start[k], atol=1e-6) for k in floats)
    assert not all(torch.allclose(fresh[k], start[k], atol=1e-3) for k in floats)
    sha = hashlib.sha256((pretrained / "model.pt").read_bytes()).hexdigest()
    assert meta.extra["init_from"]["weights_sha256"] == sha
    card = (tuned.out / "MODEL_CARD.md").read_text()
    assert f"Start: fine-tuned from `{meta.extra['init_from']['dir']}` (weights sha256 {sha[:16]}…" in card
    assert f"--init-from {meta.extra['init_from']['dir']}" in card


def test_fine_tuning_lowers_the_default_lr(cohort, pretrained, tmp_path):
    tuned = _segment(cohort, tmp_path / "tuned", init_from=pretrained)
    card = (tuned.out / "MODEL_CARD.md").read_text()
    assert f"AdamW, lr {FINE_TUNE_LR['segmentation']:g}," in card
    assert FINE_TUNE_LR["segmentation"] < wm_train.DEFAULTS["segmentation"]["lr"]


def test_another_network_config_is_an_error_naming_both(cohort, pretrained, tmp_path):
    with pytest.raises(ConfigError, match=r"network config .*\[4, 8, 16\].* differs from this run's .*\[4, 8, 8\]"):
        _segment(cohort, tmp_path / "x", init_from=pretrained, model_config={"filters": [4, 8, 8]})
    assert not (tmp_path / "x").exists()


def test_another_crop_geometry_is_an_error_naming_both(cohort, pretrained, tmp_path):
    other = CropConfig((4.0, 4.0, 4.0), (16, 16, 16))
    with pytest.raises(ConfigError, match=r"its crops are 5 × 5 × 5 mm voxels, 16 × 16 × 16 crop; this run's are "
                                          r"4 × 4 × 4 mm voxels"):
        _segment(cohort, tmp_path / "x", init_from=pretrained, crop=other)


def test_a_missing_or_other_kind_checkpoint_names_the_command(cohort, autoencoder, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="mewm train segmentation"):
        _segment(cohort, tmp_path / "x", init_from=tmp_path / "nothing")
    with pytest.raises(CheckpointNotFoundError, match="kind 'autoencoder', not 'segmentation'"):
        _segment(cohort, tmp_path / "x", init_from=autoencoder)


def test_dynamics_fine_tuning_checks_the_change_margin(cohort, autoencoder, tmp_path):
    kw = {"batch_size": 2, "progress": False, "schedule": FAST, "model_config": TINY_DYN}
    base = train_dynamics(cohort, autoencoder, tmp_path / "dyn", steps=1, **kw)
    tuned = train_dynamics(cohort, autoencoder, tmp_path / "tuned", steps=1, init_from=base.out, **kw)
    sha = hashlib.sha256((base.out / "model.pt").read_bytes()).hexdigest()
    assert tuned.extra["init_from"]["weights_sha256"] == sha
    with pytest.raises(ConfigError, match="change margin 10 mm; this run's are .* change margin 5 mm"):
        train_dynamics(cohort, autoencoder, tmp_path / "y", steps=1, init_from=base.out, change_margin_mm=5.0, **kw)


def test_cli_init_from(cohort, pretrained, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(wm_train, "MODEL_CONFIGS", {"autoencoder": {}, "segmentation": TINY_SEG, "dynamics": {}})
    monkeypatch.setattr(wm_train, "DEFAULT_CROP", TINY_CROP)
    common = ["--manifest", str(cohort), "--steps", "1", "--batch-size", "2", "--quiet"]
    assert main(["train", "segmentation", "--out", str(tmp_path / "t"), "--init-from", str(pretrained), *common]) == 0
    assert "fine-tuned from" in (tmp_path / "t" / "MODEL_CARD.md").read_text()
    assert main(["train", "autoencoder", "--out", str(tmp_path / "a"), "--init-from", str(pretrained), *common]) == 2
    assert "kind 'segmentation', not 'autoencoder'" in capsys.readouterr().err


def test_autoencoder_trains_on_from_its_checkpoint(cohort, autoencoder, tmp_path):
    from models.autoencoder import CropAutoencoder
    from pipelines.worldmodel.train import train_autoencoder

    kw = {"batch_size": 2, "progress": False, "schedule": FAST, "crop": TINY_CROP, "model_config": TINY_AE}
    tuned = train_autoencoder(cohort, tmp_path / "ae", steps=1, init_from=autoencoder, lr=1e-12, **kw)
    sha = hashlib.sha256((autoencoder / "model.pt").read_bytes()).hexdigest()
    assert tuned.extra["init_from"]["weights_sha256"] == sha
    build = lambda c: CropAutoencoder(**c)  # noqa: E731
    before, _ = load_checkpoint(autoencoder, kind="autoencoder", build=build, command="test")
    after, _ = load_checkpoint(tmp_path / "ae", kind="autoencoder", build=build, command="test")
    for name, value in before.state_dict().items():  # lr ~0: the start weights come through
        if name != "scale_factor":
            torch.testing.assert_close(after.state_dict()[name], value)
    with pytest.raises(ConfigError, match="network config"):
        train_autoencoder(cohort, tmp_path / "ae2", steps=1, init_from=autoencoder,
                          **{**kw, "model_config": {**TINY_AE, "latent_channels": 3}})


def test_a_batch_norm_segmenter_starts_from_instance_norm_weights(cohort, pretrained, tmp_path):
    """`--norm batch --init-from` an instance-norm checkpoint: every weight carries over (only the running
    statistics are new), and the checkpoint, its config and the card's command say so."""
    start, _ = _weights(pretrained)
    tuned = _segment(cohort, tmp_path / "tuned", init_from=pretrained, lr=1e-12,
                     model_config={**TINY_SEG, "norm": "batch"})
    after, meta = _weights(tuned.out)
    assert meta.config["norm"] == "batch" and meta.extra["init_from"]["converted"] == {"norm": ["instance", "batch"]}
    assert all(torch.allclose(after[k], start[k], atol=1e-6) for k in start)
    new = set(after) - set(start)
    assert new and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in new)
    card = (tuned.out / "MODEL_CARD.md").read_text()
    assert "--norm batch" in card and "norm instance → batch: every weight carried over" in card
    with pytest.raises(ConfigError, match="network config"):  # norm converts; other config keys still must agree
        _segment(cohort, tmp_path / "x", init_from=pretrained, model_config={"filters": [4, 8, 8], "norm": "batch"})
