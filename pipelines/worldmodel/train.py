"""The world model's three trainers: autoencoder, segmenter, dynamics. Each is a recipe over `pipelines.training`.

Every trainer: 1. crop cache of the manifest (`build_crop_cache`) and the fixed held-out split (`split_cases`);
2. datasets and the model; 3. `train_loop` (seeded, resumable, ``train_log.jsonl``, validation loss, checkpoint);
4. ``MODEL_CARD.md`` in ``out`` (data, config, the command, the training figures, limitations); 5. a `TrainReport`.

- `train_autoencoder`: L1 reconstruction + 1e-6 KL on the windowed pre and post crops (random flips); afterwards
  ``scale_factor`` = 1 / std of the training latents, so the diffusion model sees unit-variance latents.
- `train_segmentation`: MONAI ``DiceCELoss`` (softmax, one-hot labels) over the 5 classes of
  `pipelines.volume.LABELS`, on pre and post crops (random flips).
- `train_dynamics`: DDPM ε-prediction MSE on the post-treatment latent given the pre-treatment latent, the tumour and
  change-region masks and the plan; the plan is replaced by the null plan with probability ``cond_drop_prob`` for
  classifier-free guidance. The latents come from a trained autoencoder, encoded once (`LatentPairs`).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.checkpoint import load_checkpoint
from models.errors import ConfigError
from pipelines.progress import ProgressFn
from pipelines.training import LoopSettings, TrainReport, split_cases, train_loop
from pipelines.volume import LABELS
from pipelines.worldmodel.crops import (AutoencoderCrops, CropCache, CropConfig, LatentPairs, SegmentationCrops,
                                        build_crop_cache)
from pipelines.worldmodel.regions import DEFAULT_CHANGE_MARGIN_MM
from pipelines.worldmodel.report import display_path

__all__ = ["DEFAULTS", "MODEL_CONFIGS", "DEFAULT_CROP", "DDPM_SCHEDULER", "KL_WEIGHT", "COND_DROP_PROB",
           "train_autoencoder", "train_segmentation", "train_dynamics", "build_ddpm_scheduler"]

# Defaults sized for a 2-core CPU (stack-notes.md timings); the CLI uses them too.
DEFAULTS = {
    # no gradient clipping for the autoencoder: clipping at norm 1 left it at 56 HU validation L1 after 150 steps,
    # against 42 HU without (measured on the training crops)
    "autoencoder": {"steps": 1200, "batch_size": 2, "lr": 1e-3, "grad_clip": None},
    "segmentation": {"steps": 1200, "batch_size": 2, "lr": 1e-3},
    "dynamics": {"steps": 3000, "batch_size": 16, "lr": 2e-4},
}
# Network and crop configs used when a trainer gets none (the constructors' defaults, docs/worldmodel_design.md).
MODEL_CONFIGS: dict[str, dict[str, Any]] = {"autoencoder": {}, "segmentation": {}, "dynamics": {}}
DEFAULT_CROP = CropConfig()
KL_WEIGHT = 1e-6
COND_DROP_PROB = 0.15
DDPM_SCHEDULER = {"name": "DDPMScheduler", "num_train_timesteps": 1000, "schedule": "scaled_linear_beta",
                  "beta_start": 0.0015, "beta_end": 0.0195, "prediction_type": "epsilon"}
VAL_BATCH = 4
LIMITATIONS = ("Trained on the synthetic virtual cohort only; not validated on real CT; research use only. "
               "Not for clinical use.")


def build_ddpm_scheduler(config: dict[str, Any] = DDPM_SCHEDULER):
    """The MONAI `DDPMScheduler` of a dynamics checkpoint's ``extra["scheduler"]``."""
    from monai.networks.schedulers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config["num_train_timesteps"], schedule=config["schedule"],
                         beta_start=config["beta_start"], beta_end=config["beta_end"],
                         prediction_type=config["prediction_type"])


# ------------------------------------------------------------------------------------------------ shared steps
def _command(kind: str, manifest, out, settings: LoopSettings, autoencoder=None) -> str:
    """The `mewm train` command that reproduces a run (shown in the card and in missing-checkpoint errors)."""
    ae = f" --autoencoder {display_path(autoencoder)}" if autoencoder is not None else ""
    return (f"mewm train {kind} --manifest {display_path(manifest)}{ae} --out {display_path(out)} "
            f"--steps {settings.steps} "
            f"--batch-size {settings.batch_size} --lr {settings.lr:g} --seed {settings.seed}")


def _prepare(manifest, crop: CropConfig, cache_dir, progress) -> tuple[CropCache, Any]:
    cache = build_crop_cache(manifest, cache_dir, spacing=crop.spacing, crop_size=crop.crop_size, progress=progress)
    split = split_cases(cache.case_ids, source=f"The manifest {cache.manifest}", skipped=cache.skipped)
    return cache, split


def _data_extra(cache: CropCache, split) -> dict[str, Any]:
    return {"manifest": str(cache.manifest), "synthetic": cache.synthetic, "cache_key": cache.key,
            "n_cases": len(cache), "n_skipped": len(cache.skipped), "train_ids": split.train_ids,
            "val_ids": split.val_ids}


def _identity(cache: CropCache, split, **more: Any) -> dict[str, Any]:
    return {"cache_key": cache.key, "crop": cache.config.to_dict(), "val_ids": split.val_ids, **more}


def _settings(kind: str, steps, batch_size, lr, seed, schedule: dict[str, int] | None) -> LoopSettings:
    d = DEFAULTS[kind]
    return LoopSettings(steps=steps or d["steps"], batch_size=batch_size or d["batch_size"], lr=lr or d["lr"],
                        seed=seed, grad_clip=d.get("grad_clip", 1.0), **(schedule or {}))


MODEL_CARD = """# MeWM Workbench {kind} model

{purpose}

**Research use only. Not a medical device; its outputs are not for clinical decisions.**

## Data
- Manifest: `{manifest}`{synthetic}
- Cases: {n_cases} usable of {n_manifest} ({n_skipped} skipped{skip_reasons}); {n_train} for training, {n_val} held out
  for validation (fixed seeded split of the case ids; held-out ids: {val_ids})
- Crops: tumour-centred, {spacing} mm voxels, {size} voxels, HU window [-175, 600] → [-1, 1]

## Model
- Kind `{kind}`, {n_params:,} parameters; config (`config.json`):

```json
{config}
```

## Training
- Command: `{command}`
- {loss}
- AdamW, lr {lr:g}, batch {batch_size}, {steps} steps, seed {seed}, {clip}{resumed}
- Final training loss {train_loss:.5f}; held-out validation loss {val_loss:.5f}
- {seconds:.0f} s ({s_per_step:.3f} s/step) with {threads} torch thread(s), CPU; trained {today}
- Loss curve: `train_log.jsonl` (training loss every {log_every} steps, validation loss every {val_every})

## Limitations
{limitations}

## Evaluation
Evaluation figures are appended below by the `mewm eval` commands.
"""


def _write_card(report: TrainReport, cache: CropCache, settings: LoopSettings, *,
                purpose: str, loss: str, command: str) -> Path:
    skip = sorted({s["reason"].split(" (")[0] for s in cache.skipped})
    limitations = LIMITATIONS if cache.synthetic else (
        f"Trained on the cohort of {display_path(cache.manifest)} only ({len(cache)} cases); not externally "
        f"validated; "
        "research use only. Not for clinical use.")
    text = MODEL_CARD.format(
        kind=report.kind, purpose=purpose, manifest=display_path(cache.manifest),
        synthetic=" (synthetic: the virtual HCC-TACE cohort, not patient data)" if cache.synthetic else "",
        n_cases=len(cache), n_manifest=len(cache) + len(cache.skipped), n_skipped=len(cache.skipped),
        skip_reasons=f": {'; '.join(skip)}" if skip else "", n_train=report.n_train, n_val=report.n_val,
        val_ids=", ".join(report.extra.get("data", {}).get("val_ids", [])),
        spacing=" × ".join(f"{s:g}" for s in cache.config.spacing),
        size=" × ".join(str(s) for s in cache.config.crop_size), n_params=report.n_params,
        config=json.dumps(report.model_config, indent=2), command=command, loss=loss, lr=settings.lr,
        batch_size=settings.batch_size, steps=report.steps, seed=settings.seed,
        clip=f"gradient norm clipped at {settings.grad_clip:g}" if settings.grad_clip else "no gradient clipping",
        resumed=f"; resumed at step {report.start_step}" if report.start_step else "",
        train_loss=report.final_train_loss, val_loss=report.final_val_loss, seconds=report.seconds,
        s_per_step=report.seconds_per_step, threads=torch.get_num_threads(), today=date.today().isoformat(),
        log_every=settings.log_every, val_every=settings.val_every, limitations=limitations)
    path = report.out / "MODEL_CARD.md"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ autoencoder
def _kl(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma²) ‖ N(0, 1)), summed over latent voxels and channels, averaged over the batch."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-12) - 1)
    return kl.flatten(1).sum(1).mean()


def train_autoencoder(manifest: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
                      batch_size: int | None = None, lr: float | None = None, seed: int = 0, resume: bool = False,
                      progress: bool | ProgressFn | None = True, model_config: dict[str, Any] | None = None,
                      crop: CropConfig | None = None, cache_dir: str | os.PathLike | None = None,
                      schedule: dict[str, int] | None = None) -> TrainReport:
    """Train the crop autoencoder (`models.autoencoder.CropAutoencoder`) and write its checkpoint and card to ``out``.

    Args:
        manifest: cohort ``manifest.csv`` (or its folder).
        steps, batch_size, lr: default `DEFAULTS["autoencoder"]`; ``seed``: every random draw.
        resume: continue the run saved in ``out``.
        model_config: `CropAutoencoder` keywords (default `MODEL_CONFIGS["autoencoder"]`: its defaults).
        crop: crop geometry (default `DEFAULT_CROP`: 2 mm, 48³).
        cache_dir: crop cache folder (default beside the manifest).
        schedule: ``log_every``/``val_every``/``checkpoint_every`` overrides of `LoopSettings`.
    """
    from models.autoencoder import CropAutoencoder

    # 1. data
    settings = _settings("autoencoder", steps, batch_size, lr, seed, schedule)
    cache, split = _prepare(manifest, crop or DEFAULT_CROP, cache_dir, progress)
    train, val = AutoencoderCrops(cache, split.train), AutoencoderCrops(cache, split.val)

    # 2. model and losses
    config = model_config if model_config is not None else MODEL_CONFIGS["autoencoder"]

    def batch_loss(model: CropAutoencoder, generator: torch.Generator) -> torch.Tensor:
        x = train.sample_batch(settings.batch_size, generator)
        recon, mu, sigma = model(x)
        return F.l1_loss(recon, x) + KL_WEIGHT * _kl(mu, sigma)

    def val_loss(model: CropAutoencoder) -> float:
        errors = [F.l1_loss(model.decode(model.encode(x)), x, reduction="sum") for x in val.all_batches(VAL_BATCH)]
        return float(sum(errors) / val.images.numel())

    def set_scale(m: torch.nn.Module) -> dict[str, Any]:
        m.scale_factor.fill_(1.0)
        latents = torch.cat([m.encode(x) for x in train.all_batches(VAL_BATCH)])
        m.scale_factor.fill_(1.0 / float(latents.std()))
        return {"scale_factor": float(m.scale_factor)}

    # 3. train, 4. card
    command = _command("autoencoder", cache.manifest, Path(out), settings)
    report = train_loop(lambda: CropAutoencoder(**config), batch_loss, val_loss, settings=settings, out=out,
                        kind="autoencoder",
                        identity=_identity(cache, split), n_train=len(split.train), n_val=len(split.val),
                        resume=resume, progress=progress, before_save=set_scale,
                        extra={"crop": {"spacing": list(cache.config.spacing), "size": list(cache.config.crop_size)},
                               "data": _data_extra(cache, split), "kl_weight": KL_WEIGHT})
    _write_card(report, cache, settings, command=command,
                purpose="Stage 1 of the world model: a KL autoencoder (MONAI AutoencoderKL) that maps tumour-centred "
                        "CT crops to latents for the dynamics model and back.",
                loss=f"Loss: L1 reconstruction of the posterior mean + {KL_WEIGHT:g} × KL on pre- and "
                     f"post-treatment crops (random flips); a first run decoding sampled latents at lr 2e-4 reached "
                     f"only 39 HU validation L1 after 600 steps with blank reconstructions, so the posterior mean is "
                     f"decoded (the KL term keeps the latents bounded); validation: L1 of the posterior-mean "
                     f"reconstruction. Latent scale factor "
                     f"{report.extra['scale_factor']:.4f} (1 / std of the training latents)")
    return report


# ------------------------------------------------------------------------------------------------ segmentation
def train_segmentation(manifest: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
                       batch_size: int | None = None, lr: float | None = None, seed: int = 0, resume: bool = False,
                       progress: bool | ProgressFn | None = True, model_config: dict[str, Any] | None = None,
                       crop: CropConfig | None = None, cache_dir: str | os.PathLike | None = None,
                       schedule: dict[str, int] | None = None) -> TrainReport:
    """Train the crop segmenter (`models.segmentation.CropSegmenter`, 5 classes) on pre and post crops.

    Arguments as `train_autoencoder` (defaults `DEFAULTS["segmentation"]`).
    """
    from monai.losses import DiceCELoss

    from models.segmentation import CropSegmenter

    # 1. data
    settings = _settings("segmentation", steps, batch_size, lr, seed, schedule)
    cache, split = _prepare(manifest, crop or DEFAULT_CROP, cache_dir, progress)
    train, val = SegmentationCrops(cache, split.train), SegmentationCrops(cache, split.val)

    # 2. model and loss
    config = {"num_classes": len(LABELS),
              **(model_config if model_config is not None else MODEL_CONFIGS["segmentation"])}
    if config["num_classes"] != len(LABELS):
        raise ConfigError(f"The segmenter must predict the {len(LABELS)} classes of LABELS ({', '.join(LABELS)}); "
                          f"got num_classes={config['num_classes']}.")
    criterion = DiceCELoss(to_onehot_y=True, softmax=True)

    def batch_loss(model: CropSegmenter, generator: torch.Generator) -> torch.Tensor:
        x, y = train.sample_batch(settings.batch_size, generator)
        return criterion(model(x), y)

    def val_loss(model: CropSegmenter) -> float:
        losses = [criterion(model(x), y) * len(x) for x, y in val.all_batches(VAL_BATCH)]
        return float(sum(losses) / len(val))

    # 3. train, 4. card
    command = _command("segmentation", cache.manifest, Path(out), settings)
    report = train_loop(lambda: CropSegmenter(**config), batch_loss, val_loss, settings=settings, out=out,
                        kind="segmentation",
                        identity=_identity(cache, split), n_train=len(split.train), n_val=len(split.val),
                        resume=resume, progress=progress,
                        extra={"crop": {"spacing": list(cache.config.spacing), "size": list(cache.config.crop_size)},
                               "labels": dict(LABELS), "data": _data_extra(cache, split)})
    _write_card(report, cache, settings, command=command,
                purpose="Segments liver, viable tumour, necrosis and Lipiodol on tumour-centred CT crops (MONAI "
                        "DynUNet); used to measure the world model's simulated outcomes.",
                loss="Loss: MONAI DiceCELoss (softmax, one-hot labels, 5 classes) on pre- and post-treatment crops "
                     "(random flips); validation: the same loss on the held-out crops")
    return report


# ------------------------------------------------------------------------------------------------ dynamics
def _load_autoencoder(directory: str | os.PathLike, manifest) -> tuple[torch.nn.Module, dict, str]:
    """The trained autoencoder, its checkpoint meta and the sha256 of its weights."""
    from models.autoencoder import CropAutoencoder

    model, meta = load_checkpoint(directory, kind="autoencoder", build=lambda c: CropAutoencoder(**c),
                                  command=f"mewm train autoencoder --manifest {manifest} --out {directory}")
    weights = hashlib.sha256((Path(directory) / "model.pt").read_bytes()).hexdigest()
    return model, meta, weights


def train_dynamics(manifest: str | os.PathLike, autoencoder_dir: str | os.PathLike, out: str | os.PathLike, *,
                   steps: int | None = None, batch_size: int | None = None, lr: float | None = None, seed: int = 0,
                   resume: bool = False, progress: bool | ProgressFn | None = True,
                   model_config: dict[str, Any] | None = None, cond_drop_prob: float = COND_DROP_PROB,
                   change_margin_mm: float = DEFAULT_CHANGE_MARGIN_MM, cache_dir: str | os.PathLike | None = None,
                   schedule: dict[str, int] | None = None) -> TrainReport:
    """Train the latent dynamics model (`models.dynamics.TumourDynamicsModel`) on a trained autoencoder's latents.

    The crops are made with the autoencoder's own crop geometry (its ``extra["crop"]``). The checkpoint's ``extra``
    holds ``scheduler`` (`DDPM_SCHEDULER`), ``crop`` (spacing, size, ``change_margin_mm``), ``autoencoder`` (config,
    scale factor, weights sha256) and ``cond_drop_prob``, so loading can check compatibility.

    Args:
        autoencoder_dir: checkpoint made by `train_autoencoder`.
        cond_drop_prob: probability of training on the null plan (classifier-free guidance).
        change_margin_mm: margin of the change region (`pipelines.worldmodel.regions.change_region`).
        Others as `train_autoencoder` (defaults `DEFAULTS["dynamics"]`).

    Raises:
        CheckpointNotFoundError: no usable autoencoder in ``autoencoder_dir`` (names the command that makes one).
    """
    from models.dynamics import TumourDynamicsModel

    # 1. the autoencoder and its latents of the cached crops
    if not 0 <= cond_drop_prob < 1:
        raise ConfigError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob!r}.")
    settings = _settings("dynamics", steps, batch_size, lr, seed, schedule)
    autoencoder, ae_meta, ae_weights = _load_autoencoder(autoencoder_dir, manifest)
    ae_crop = ae_meta.extra.get("crop")
    if not ae_crop:
        raise ConfigError(f"The autoencoder in {autoencoder_dir} records no crop geometry (extra['crop']); "
                          "re-make it with `mewm train autoencoder`.")
    crop = CropConfig(tuple(ae_crop["spacing"]), tuple(ae_crop["size"]))
    cache, split = _prepare(manifest, crop, cache_dir, progress)
    train, val = (LatentPairs.from_cache(cache, autoencoder, part, change_margin_mm=change_margin_mm,
                                         weights_key=ae_weights, progress=progress)
                  for part in (split.train, split.val))

    # 2. model, scheduler and loss
    latent_channels = int(ae_meta.config["latent_channels"])
    config = {"latent_channels": latent_channels,
              **(model_config if model_config is not None else MODEL_CONFIGS["dynamics"])}
    if config["latent_channels"] != latent_channels:
        raise ConfigError(f"The dynamics model's latent_channels={config['latent_channels']} differs from the "
                          f"autoencoder's {latent_channels} in {autoencoder_dir}.")
    scheduler = build_ddpm_scheduler()
    n_t = scheduler.num_train_timesteps

    def eps_loss(model: TumourDynamicsModel, batch, generator: torch.Generator, drop: bool) -> torch.Tensor:
        b = batch.post.shape[0]
        t = torch.randint(0, n_t, (b,), generator=generator)
        noise = torch.randn(batch.post.shape, generator=generator)
        keep = torch.rand(b, generator=generator) >= cond_drop_prob if drop else torch.ones(b, dtype=torch.bool)
        context = model.encode_plans([p if k else None for p, k in zip(batch.plans, keep.tolist())])
        x_t = scheduler.add_noise(original_samples=batch.post, noise=noise, timesteps=t)
        return F.mse_loss(model(x_t, t, batch.pre, batch.masks, context), noise)

    def batch_loss(model: TumourDynamicsModel, generator: torch.Generator) -> torch.Tensor:
        return eps_loss(model, train.sample_batch(settings.batch_size, generator), generator, drop=True)

    def val_loss(model: TumourDynamicsModel) -> float:
        g = torch.Generator().manual_seed(settings.seed)  # the same timesteps and noise at every validation
        losses = [eps_loss(model, b, g, drop=False) * len(b.plans) for b in val.all_batches(VAL_BATCH)]
        return float(sum(losses) / len(val))

    # 3. train, 4. card
    command = _command("dynamics", cache.manifest, Path(out), settings, autoencoder=autoencoder_dir)
    extra = {"scheduler": dict(DDPM_SCHEDULER),
             "crop": {"spacing": list(crop.spacing), "size": list(crop.crop_size),
                      "change_margin_mm": float(change_margin_mm)},
             "autoencoder": {"config": ae_meta.config, "scale_factor": float(autoencoder.scale_factor),
                             "weights_sha256": ae_weights, "dir": display_path(autoencoder_dir)},
             "cond_drop_prob": cond_drop_prob, "masks": "fraction of each latent cell (regions.latent_masks)",
             "data": _data_extra(cache, split)}
    report = train_loop(lambda: TumourDynamicsModel(**config), batch_loss, val_loss, settings=settings, out=out,
                        kind="dynamics",
                        identity=_identity(cache, split, autoencoder=ae_weights, cond_drop_prob=cond_drop_prob,
                                           change_margin_mm=change_margin_mm),
                        n_train=len(split.train), n_val=len(split.val), resume=resume, progress=progress,
                        extra=extra)
    _write_card(report, cache, settings, command=command,
                purpose="The world model's dynamics: a latent diffusion model (MONAI DiffusionModelUNet with "
                        "cross-attention to the plan tokens) that predicts the post-TACE crop from the "
                        "pre-treatment crop and a TACE plan.",
                loss=f"Loss: DDPM ε-prediction MSE (MONAI DDPMScheduler, {n_t} steps, scaled_linear_beta "
                     f"{DDPM_SCHEDULER['beta_start']}–{DDPM_SCHEDULER['beta_end']}) on the post-treatment latent; "
                     f"plan dropped to the null plan with probability {cond_drop_prob} (classifier-free guidance); "
                     f"change-region margin {change_margin_mm:g} mm; autoencoder {autoencoder_dir}")
    return report

