"""A new decoder on frozen latents (`mewm train autoencoder --decoder-only`): the encoder, the scale factor and so
every latent stay exactly as they were, a wider decoder may start fresh, the checkpoint names whose latents it
decodes, and the world model then accepts it beside a dynamics model trained on the old autoencoder, while an
autoencoder whose encoder changed is still refused."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from simulate_helpers import write_tiny_weights
from wm_training_helpers import FAST, TINY_AE, TINY_CROP, tiny_autoencoder, tiny_cohort

from models.autoencoder import CropAutoencoder
from models.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from models.errors import CheckpointNotFoundError, ConfigError
from pipelines.cli import main
from pipelines.volume import LABELS
from pipelines.worldmodel.train import _tumour_weights, train_autoencoder
from pipelines.worldmodel.weights import load_world_model

BUILD = lambda c: CropAutoencoder(**c)  # noqa: E731
KW = {"batch_size": 2, "progress": False, "schedule": FAST, "crop": TINY_CROP}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return tiny_cohort(tmp_path_factory)


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    return tiny_autoencoder(tmp_path_factory)


def _load(directory):
    return load_checkpoint(directory, kind="autoencoder", build=BUILD, command="test")


def test_decoder_only_keeps_every_latent_and_changes_the_decoder(cohort, autoencoder, tmp_path):
    before, _ = _load(autoencoder)
    report = train_autoencoder(cohort, tmp_path / "dec", steps=3, lr=1e-2, init_from=autoencoder,
                               decoder_only=True, tumour_weight=4.0, model_config=TINY_AE, **KW)
    after, meta = _load(report.out)
    assert after.encoder_sha256() == before.encoder_sha256()
    assert float(after.scale_factor) == float(before.scale_factor)
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(after.encode(x), before.encode(x), rtol=0, atol=0)
        assert not torch.allclose(after.decode(after.encode(x)), before.decode(before.encode(x)))
    sha = hashlib.sha256((autoencoder / "model.pt").read_bytes()).hexdigest()
    assert meta.extra["latents_of"] == {"weights_sha256": sha, "encoder_sha256": before.encoder_sha256()}
    card = (report.out / "MODEL_CARD.md").read_text()
    assert "--decoder-only" in card and "--tumour-weight 4" in card and "decoder only" in card


def test_a_wider_decoder_starts_fresh_on_the_same_latents(cohort, autoencoder, tmp_path):
    before, _ = _load(autoencoder)
    config = {**TINY_AE, "decoder_channels": [8, 8], "decoder_num_res_blocks": 2}
    report = train_autoencoder(cohort, tmp_path / "wide", steps=2, init_from=autoencoder, decoder_only=True,
                               model_config=config, **KW)
    after, meta = _load(report.out)
    assert meta.config["decoder_channels"] == [8, 8] and meta.config["decoder_num_res_blocks"] == 2
    assert after.encoder_sha256() == before.encoder_sha256()
    assert report.extra["init_from"]["fresh"] == ["net.decoder."]
    assert sum(p.numel() for p in after.net.decoder.parameters()) > sum(
        p.numel() for p in before.net.decoder.parameters())
    assert "--decoder-channels 8,8 --decoder-res-blocks 2" in (report.out / "MODEL_CARD.md").read_text()
    with pytest.raises(ConfigError, match="network config"):  # the encoder keys must still agree
        train_autoencoder(cohort, tmp_path / "x", steps=1, init_from=autoencoder, decoder_only=True,
                          model_config={**config, "latent_channels": 3}, **KW)


def test_decoder_only_needs_a_start_and_a_sane_weight(cohort, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--decoder-only needs --init-from"):
        train_autoencoder(cohort, tmp_path / "a", steps=1, decoder_only=True, **KW)
    with pytest.raises(ConfigError, match="--tumour-weight must be >= 1"):
        train_autoencoder(cohort, tmp_path / "b", steps=1, tumour_weight=0.5, **KW)
    assert main(["train", "autoencoder", "--manifest", str(cohort), "--out", str(tmp_path / "c"),
                 "--decoder-channels", "8,8", "--steps", "1", "--quiet"]) == 2
    assert "need --decoder-only" in capsys.readouterr().err
    assert main(["train", "autoencoder", "--manifest", str(cohort), "--out", str(tmp_path / "d"),
                 "--decoder-only", "--decoder-channels", "8,x", "--quiet"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_tumour_weights_are_heavier_in_the_grown_tumour_and_average_one():
    labels = torch.full((1, 1, 16, 16, 16), LABELS["liver"])
    labels[..., 6:9, 6:9, 6:9] = LABELS["necrosis"]
    w = _tumour_weights(labels, 5.0, dilate=1)
    assert float(w.mean()) == pytest.approx(1.0)
    assert float(w[0, 0, 5, 5, 5] / w[0, 0, 0, 0, 0]) == pytest.approx(5.0)  # one voxel out: grown into
    assert float(w[0, 0, 4, 4, 4]) == float(w[0, 0, 0, 0, 0])


def test_the_world_model_takes_a_new_decoder_but_not_a_new_encoder(cohort, tmp_path):
    root = write_tiny_weights(tmp_path / "w")
    saved = read_checkpoint_meta(root / "autoencoder", kind="autoencoder", command="test")
    report = train_autoencoder(cohort, tmp_path / "dec", steps=2, lr=1e-2, init_from=root / "autoencoder",
                               decoder_only=True, model_config=saved.config, **KW)
    shutil.rmtree(root / "autoencoder")
    shutil.copytree(report.out, root / "autoencoder")
    world = load_world_model(root)  # the dynamics model records the old weights' sha256 only
    assert world.autoencoder.encoder_sha256() == report.extra["latents_of"]["encoder_sha256"]

    changed, meta = _load(root / "autoencoder")  # the same record, but an encoder that moved
    with torch.no_grad():
        next(p for n, p in changed.named_parameters() if n.startswith("net.encoder.")).add_(0.1)
    save_checkpoint(root / "autoencoder", changed, kind="autoencoder", config=meta.config, extra=meta.extra)
    with pytest.raises(CheckpointNotFoundError, match="its encoder differs"):
        load_world_model(root)


def test_dynamics_fine_tunes_on_a_new_decoder_but_not_on_a_new_encoder(cohort, autoencoder, tmp_path):
    from wm_training_helpers import TINY_DYN

    from pipelines.worldmodel.train import train_dynamics

    kw = {"batch_size": 2, "progress": False, "schedule": FAST, "model_config": TINY_DYN}
    base = train_dynamics(cohort, autoencoder, tmp_path / "dyn", steps=1, **kw)
    decoder = train_autoencoder(cohort, tmp_path / "dec", steps=2, lr=1e-2, init_from=autoencoder,
                                decoder_only=True, model_config=TINY_AE, **KW)
    tuned = train_dynamics(cohort, decoder.out, tmp_path / "tuned", steps=1, init_from=base.out, **kw)
    assert tuned.extra["autoencoder"]["encoder_sha256"] == base.extra["autoencoder"]["encoder_sha256"]
    moved = train_autoencoder(cohort, tmp_path / "ae2", steps=2, lr=1e-2, init_from=autoencoder,
                              model_config=TINY_AE, **KW)  # a full fine-tune: the encoder moves
    with pytest.raises(ConfigError, match="another encoder"):
        train_dynamics(cohort, moved.out, tmp_path / "x", steps=1, init_from=base.out, **kw)


def test_encodes_like_known_answers():
    from types import SimpleNamespace

    from pipelines.worldmodel.weights import encodes_like

    ae = SimpleNamespace(encoder_sha256=lambda: "E1")
    plain, decoder = SimpleNamespace(extra={}), SimpleNamespace(extra={"latents_of": {"weights_sha256": "W0",
                                                                                      "encoder_sha256": "E1"}})
    assert encodes_like({}, "W9", plain, ae)  # nothing recorded (an old checkpoint): nothing to check
    assert encodes_like({"weights_sha256": "W0"}, "W0", plain, ae)  # the same weights
    assert encodes_like({"weights_sha256": "W0", "encoder_sha256": "E1"}, "W1", plain, ae)  # the same encoder
    assert not encodes_like({"weights_sha256": "W0", "encoder_sha256": "E2"}, "W1", plain, ae)
    assert encodes_like({"weights_sha256": "W0"}, "W1", decoder, ae)  # a decoder retrained on W0's latents
    assert not encodes_like({"weights_sha256": "W0"}, "W1", decoder, SimpleNamespace(encoder_sha256=lambda: "E2"))
    assert not encodes_like({"weights_sha256": "W5"}, "W1", decoder, ae)  # the decoder of another autoencoder
