"""Shared pieces of the crop-cache and training tests: a tiny virtual cohort, tiny crops and tiny networks.

Built once per test session (memoised here rather than in a conftest, so the folder's other test files keep theirs).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.worldmodel.crops import CropConfig

TINY_CROP = CropConfig((5.0, 5.0, 5.0), (16, 16, 16))
TINY_AE = {"channels": [4, 8], "latent_channels": 2, "norm_num_groups": 4}
TINY_SEG = {"filters": [4, 8, 16]}
TINY_DYN = {"channels": [8, 8], "attention_levels": [False, True], "num_head_channels": 8, "norm_num_groups": 4,
            "plan_dim": 8}
FAST = {"log_every": 1, "val_every": 2, "checkpoint_every": 2}

_made: dict[str, Path] = {}


def tiny_cohort(tmp_path_factory) -> Path:
    """``generate_cohort(n=4, seed=3, size=(64, 56, 32))``, once per session."""
    if "cohort" not in _made:
        from pipelines.cohort.generate import generate_cohort

        out = tmp_path_factory.mktemp("wm_cohort") / "c4"
        generate_cohort(n=4, seed=3, out=out, size=(64, 56, 32), progress=False)
        _made["cohort"] = out
    return _made["cohort"]


def tiny_autoencoder(tmp_path_factory) -> Path:
    """A 2-step tiny autoencoder trained on `tiny_cohort` with `TINY_CROP`, once per session."""
    if "autoencoder" not in _made:
        from pipelines.worldmodel.train import train_autoencoder

        out = tmp_path_factory.mktemp("wm_ae") / "ae"
        train_autoencoder(tiny_cohort(tmp_path_factory), out, steps=2, batch_size=2, progress=False,
                          model_config=TINY_AE, crop=TINY_CROP, schedule=FAST)
        _made["autoencoder"] = out
    return _made["autoencoder"]
