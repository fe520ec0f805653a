"""Test helpers of the world-model sampling tests (also used by tests/app/test_simulate_page.py): a small phantom
case and a folder of tiny, randomly initialised checkpoints (the layout `load_world_model` reads)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from models.autoencoder import CropAutoencoder
from models.checkpoint import save_checkpoint
from models.dynamics import TumourDynamicsModel
from models.segmentation import CropSegmenter
from pipelines.case import Case
from pipelines.volume import LABELS, Volume

SHAPE = (48, 48, 24)
SPACING = (2.5, 2.5, 5.0)  # a 120 mm field
CROP = {"spacing": [5.0, 5.0, 5.0], "size": [16, 16, 16]}  # an 80 mm crop, latent 4³
MARGIN_MM = 10.0
SCHEDULER = {"name": "DDPMScheduler", "num_train_timesteps": 1000, "schedule": "scaled_linear_beta",
             "beta_start": 0.0015, "beta_end": 0.0195, "prediction_type": "epsilon"}
AUTOENCODER = {"channels": (4, 8, 8), "latent_channels": 2, "num_res_blocks": 1, "norm_num_groups": 4}
DYNAMICS = {"channels": (8, 16, 16), "attention_levels": (False, True, True), "num_head_channels": 8,
            "norm_num_groups": 4, "plan_dim": 16}
SEGMENTER = {"filters": (4, 8, 16)}


def make_case(case_id: str = "phantom", tumour_radius_mm: float | None = 12.0) -> Case:
    """A liver with one spherical tumour of ``tumour_radius_mm`` (``None``: liver only) on a 120 mm grid."""
    rng = np.random.default_rng(3)
    ijk = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij")
    mm = [(g - n / 2) * s for g, n, s in zip(ijk, SHAPE, SPACING)]
    ct = np.full(SHAPE, -900.0, np.float32) + rng.normal(0, 10, SHAPE).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    liver = (mm[0] / 55) ** 2 + (mm[1] / 50) ** 2 + (mm[2] / 55) ** 2 <= 1
    ct[liver] = 60.0
    labels[liver] = LABELS["liver"]
    if tumour_radius_mm is not None:
        tumour = liver & (mm[0] ** 2 + mm[1] ** 2 + mm[2] ** 2 <= tumour_radius_mm ** 2)
        ct[tumour] = 110.0
        labels[tumour] = LABELS["tumour"]
    affine = np.diag([*SPACING, 1.0])
    return Case(case_id=case_id, ct=Volume(ct, affine, "scalar", "CT"), labels=Volume(labels, affine, "label"))


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Add seeded noise to every parameter: MONAI zero-initialises the UNet's output and attention projections,
    so an untrained denoiser would ignore its inputs (and its plan) entirely."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


def write_tiny_weights(root: Path, autoencoder_config: dict | None = None, clinical_fields=(),
                       response_token: bool = False) -> Path:
    """``root/{autoencoder,dynamics,segmentation}`` tiny checkpoints (seeded, so every call writes the same).

    ``autoencoder_config``: save the autoencoder with this config instead (the dynamics model still records the
    standard one), to make an incompatible pair. ``clinical_fields``: a dynamics model that also reads these.
    ``response_token``: a dynamics model with a response token, and a tiny response predictor in ``root/response``.
    """
    torch.manual_seed(0)  # constructors draw their initial weights from the global generator
    crop_extra = {"crop": {"spacing": CROP["spacing"], "size": CROP["size"]}}
    ae = CropAutoencoder(**AUTOENCODER)
    save_checkpoint(root / "autoencoder", _perturb(ae, 1), kind="autoencoder", config=ae.config, extra=crop_extra)
    sha = hashlib.sha256((root / "autoencoder" / "model.pt").read_bytes()).hexdigest()
    dyn = TumourDynamicsModel(latent_channels=AUTOENCODER["latent_channels"], **DYNAMICS,
                              clinical_fields=clinical_fields, response_token=response_token)
    extra = {"scheduler": dict(SCHEDULER), "crop": {**crop_extra["crop"], "change_margin_mm": MARGIN_MM},
             "autoencoder": {"config": ae.config, "weights_sha256": sha}}
    save_checkpoint(root / "dynamics", _perturb(dyn, 2), kind="dynamics", config=dyn.config, extra=extra)
    seg = CropSegmenter(**SEGMENTER)
    save_checkpoint(root / "segmentation", _perturb(seg, 3), kind="segmentation", config=seg.config,
                    extra=crop_extra)
    if response_token:
        from models.response import ResponsePredictor

        predictor = ResponsePredictor(plan_dim=4, hidden=8, clinical_fields=("afp",))
        save_checkpoint(root / "response", _perturb(predictor, 4), kind="response", config=predictor.config,
                        extra=crop_extra)
    if autoencoder_config is not None:
        other = CropAutoencoder(**autoencoder_config)
        save_checkpoint(root / "autoencoder", other, kind="autoencoder", config=other.config, extra=crop_extra)
    return root
