"""The world model's three trainers: autoencoder, segmenter, dynamics. Each is a recipe over `pipelines.training`.

Every trainer: 1. crop cache of the manifest (`build_crop_cache`) and the fixed held-out split (`split_cases`);
2. datasets and the model; 3. `train_loop` (seeded, resumable, ``train_log.jsonl``, validation loss, checkpoint);
4. ``MODEL_CARD.md`` in ``out`` (data, config, the command, the training figures, limitations); 5. a `TrainReport`.

- `train_autoencoder`: L1 reconstruction + 1e-6 KL on the windowed pre and post crops (random flips); afterwards
  ``scale_factor`` = 1 / std of the training latents, so the diffusion model sees unit-variance latents.
- `train_segmentation`: MONAI ``DiceCELoss`` (softmax, one-hot labels) over the 5 classes of
  `pipelines.volume.LABELS`, on pre and post crops (random flips); optionally plus ``volume_weight`` times
  `volume_error` (the segmenter measures volumes, and Dice alone leaves them biased).
- `train_dynamics`: DDPM ε-prediction MSE on the post-treatment latent given the pre-treatment latent, the tumour and
  change-region masks and the plan; the plan is replaced by the null plan with probability ``cond_drop_prob`` for
  classifier-free guidance. The latents come from a trained autoencoder, encoded once (`LatentPairs`).

Every trainer takes ``device``/``amp`` (`pipelines.training.LoopSettings`; batches are drawn on the CPU and moved
with `to_device`) and ``init_from``: fine-tune a checkpoint of the same kind (same
network config and crop geometry, checked first; for dynamics also the same autoencoder) at a lower default lr
(`FINE_TUNE_LR`); the card and ``extra["init_from"]`` record the checkpoint and the sha256 of its weights.
"""

from __future__ import annotations

import contextlib

import hashlib
import json
import math
import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.checkpoint import load_checkpoint, read_checkpoint_meta
from models.clinical_encoder import CLINICAL_FIELDS
from models.errors import ConfigError
from pipelines.manifest import read_manifest
from pipelines.progress import ProgressFn
from pipelines.training import (LoopSettings, TrainReport, model_device, resolve_device, split_cases, to_device,
                                train_loop)
from pipelines.volume import LABELS
from pipelines.worldmodel.crops import (AutoencoderCrops, CropCache, CropConfig, LatentPairs, SegmentationCrops,
                                        WHOLE_LESION_STEP, WholeLesionCrops, WholeLesionPairs,
                                        autoencoder_reconstructions, build_crop_cache, build_whole_lesion_cache,
                                        embolic_balance_weights)
from pipelines.worldmodel.regions import DEFAULT_CHANGE_MARGIN_MM, TUMOUR_LABELS
from pipelines.worldmodel.report import display_path
from pipelines.worldmodel.weights import encodes_like

__all__ = ["DEFAULTS", "FINE_TUNE_LR", "MODEL_CONFIGS", "DEFAULT_CROP", "DDPM_SCHEDULER", "KL_WEIGHT",
           "COND_DROP_PROB", "RECONSTRUCTED_FRACTION", "train_autoencoder", "train_segmentation", "train_dynamics",
           "build_ddpm_scheduler", "volume_error", "VOLUME_CLASSES", "VOLUME_TEMPERATURE", "VOLUME_FLOOR_VOXELS"]

# Defaults sized for a 2-core CPU (stack-notes.md timings); the CLI uses them too.
DEFAULTS = {
    # no gradient clipping for the autoencoder: clipping at norm 1 left it at 56 HU validation L1 after 150 steps,
    # against 42 HU without (measured on the training crops)
    "autoencoder": {"steps": 1200, "batch_size": 2, "lr": 1e-3, "grad_clip": None},
    "segmentation": {"steps": 1200, "batch_size": 2, "lr": 1e-3},
    "dynamics": {"steps": 3000, "batch_size": 16, "lr": 2e-4},
}
# Buffers a batch-norm network has and an instance-norm one lacks (`_init_from` ``convertible``).
NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
# Default lr when fine-tuning a trained checkpoint (`init_from`): a fifth of the from-scratch lr, so the first steps
# on a new cohort adjust the weights rather than overwrite them.
FINE_TUNE_LR = {"autoencoder": 2e-4, "segmentation": 2e-4, "dynamics": 4e-5}
# Network and crop configs used when a trainer gets none (the constructors' defaults, docs/worldmodel_design.md).
MODEL_CONFIGS: dict[str, dict[str, Any]] = {"autoencoder": {}, "segmentation": {}, "dynamics": {}}
DEFAULT_CROP = CropConfig()
KL_WEIGHT = 1e-6
PREDICTION_TYPES = ("epsilon", "v_prediction")
COND_DROP_PROB = 0.15
# Share of segmentation training crops replaced by their autoencoder reconstruction when an autoencoder is given.
RECONSTRUCTED_FRACTION = 0.5
DDPM_SCHEDULER = {"name": "DDPMScheduler", "num_train_timesteps": 1000, "schedule": "scaled_linear_beta",
                  "beta_start": 0.0015, "beta_end": 0.0195, "prediction_type": "epsilon"}
VAL_BATCH = 4
# `train_dynamics --whole-lesion-crops`: each step's whole-lesion batch is the batch size divided by this (a lesion in
# a 96-voxel crop has a latent of 8 times the cells of the 48-voxel training crop's).
WHOLE_LESION_BATCH_DIVISOR = 4
# `volume_error`: the classes whose volumes the world model reports (viable tumour, necrosis, Lipiodol), the softmax
# temperature that makes soft volumes close to the argmax volumes the simulation counts, and a floor (voxels) on the
# denominator so that a class absent from a crop (or a few voxels of it) does not dominate.
VOLUME_CLASSES = (LABELS["tumour"], LABELS["necrosis"], LABELS["lipiodol"])
VOLUME_TEMPERATURE = 0.25
VOLUME_FLOOR_VOXELS = 200.0
# `train_autoencoder` ``decoder_only``: the weights that learn (the rest decides the latents and stays frozen).
DECODER_PREFIXES = ("net.decoder.", "net.post_quant_conv.")
# `train_dynamics` ``response_token`` with ``init_from`` a model without one: the weights that start fresh.
RESPONSE_PREFIXES = ("response_encoder.",)
# `train_autoencoder` ``tumour_weight``: the weighted region is the tumour grown by this many voxels (2 mm each).
TUMOUR_WEIGHT_DILATION = 2
LIMITATIONS = ("Trained on the synthetic virtual cohort only; not validated on real CT; research use only. "
               "Not for clinical use.")


def build_ddpm_scheduler(config: dict[str, Any] = DDPM_SCHEDULER):
    """The MONAI `DDPMScheduler` of a dynamics checkpoint's ``extra["scheduler"]``."""
    from monai.networks.schedulers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config["num_train_timesteps"], schedule=config["schedule"],
                         beta_start=config["beta_start"], beta_end=config["beta_end"],
                         prediction_type=config["prediction_type"])


# ------------------------------------------------------------------------------------------------ shared steps
def _command(kind: str, manifest, out, settings: LoopSettings, autoencoder=None, init_from=None) -> str:
    """The `mewm train` command that reproduces a run (shown in the card and in missing-checkpoint errors)."""
    ae = f" --autoencoder {display_path(autoencoder)}" if autoencoder is not None else ""
    init = f" --init-from {display_path(init_from)}" if init_from is not None else ""
    device = (f" --device {settings.device}" if settings.device != "cpu" else "") + (" --amp" if settings.amp else "")
    return (f"mewm train {kind} --manifest {display_path(manifest)}{ae}{init} --out {display_path(out)} "
            f"--steps {settings.steps} "
            f"--batch-size {settings.batch_size} --lr {settings.lr:g} --seed {settings.seed}{device}")


def _prepare(manifest, crop: CropConfig, cache_dir, progress, workers: int = 1) -> tuple[CropCache, Any]:
    cache = build_crop_cache(manifest, cache_dir, spacing=crop.spacing, crop_size=crop.crop_size, progress=progress,
                             workers=workers)
    split = split_cases(cache.case_ids, source=f"The manifest {cache.manifest}", skipped=cache.skipped)
    return cache, split


def _data_extra(cache: CropCache, split) -> dict[str, Any]:
    return {"manifest": str(cache.manifest), "synthetic": cache.synthetic, "cache_key": cache.key,
            "n_cases": len(cache), "n_skipped": len(cache.skipped), "train_ids": split.train_ids,
            "val_ids": split.val_ids}


def _identity(cache: CropCache, split, **more: Any) -> dict[str, Any]:
    return {"cache_key": cache.key, "crop": cache.config.to_dict(), "val_ids": split.val_ids, **more}


def _settings(kind: str, steps, batch_size, lr, seed, schedule: dict[str, int] | None, device: str = "cpu",
              amp: bool = False, fine_tune: bool = False,
              lr_scales: tuple[tuple[str, float], ...] = ()) -> LoopSettings:
    d = DEFAULTS[kind]
    lr = lr or (FINE_TUNE_LR[kind] if fine_tune else d["lr"])
    settings = LoopSettings(steps=steps or d["steps"], batch_size=batch_size or d["batch_size"], lr=lr,
                            seed=seed, grad_clip=d.get("grad_clip", 1.0), device=device, amp=amp,
                            lr_scales=lr_scales, **(schedule or {}))
    resolve_device(settings.device, amp=settings.amp)  # an unusable GPU fails now, before any crop is made
    return settings


def _geometry(crop: dict[str, Any]) -> str:
    return (f"{' × '.join(f'{s:g}' for s in crop['spacing'])} mm voxels, {' × '.join(map(str, crop['size']))} crop"
            + (f", change margin {crop['change_margin_mm']:g} mm" if "change_margin_mm" in crop else ""))


def _init_from(kind: str, directory: str | os.PathLike, build, config: dict[str, Any], crop: dict[str, Any],
               manifest, more: dict[str, tuple[Any, Any, str]] | None = None,
               convertible: tuple[str, ...] = (), compare: tuple[str, ...] | None = None,
               fresh: tuple[str, ...] = ()) -> tuple[dict, dict[str, Any]]:
    """The weights (state dict) a fine-tuning run starts from, and what the card records of them.

    The checkpoint in ``directory`` must be of ``kind`` and made with the run's network ``config`` and ``crop``
    geometry (a different network cannot take its weights; other crops would change what the weights mean).
    ``more``: further ``name: (checkpoint value, run value, what to do)`` that must agree. ``convertible``: config
    keys that may differ because the weights carry over (the segmenter's ``norm``: instance-norm weights start a
    batch-norm network, whose running statistics are then learnt): the weights load into the run's network, and only
    normalisation buffers may be missing. ``compare``: only these config keys must agree (the autoencoder's
    `CropAutoencoder.ENCODER_KEYS` for a new decoder on the same latents); ``fresh``: state-dict prefixes of the run's
    network that start from its own (seeded) initialisation where the checkpoint's weights do not fit (another
    decoder width); every other weight must carry over.

    Raises:
        CheckpointNotFoundError: no usable ``kind`` checkpoint there.
        ConfigError: its network config, crop geometry or a ``more`` item differs from the run's (both named).
    """
    command = f"mewm train {kind} --manifest {display_path(manifest)} --out {display_path(directory)}"
    meta = read_checkpoint_meta(directory, kind=kind, command=command)
    with torch.random.fork_rng(devices=[]):  # throw-away builds for the normalised configs; RNG untouched
        run_config = json.loads(json.dumps(build(config).config))
        saved_config = json.loads(json.dumps(build(meta.config).config))  # older checkpoints omit defaults
    converted = {k: (saved_config.get(k), run_config.get(k)) for k in convertible
                 if saved_config.get(k) != run_config.get(k)}
    kept = (lambda k: k not in converted) if compare is None else (lambda k: k in compare)
    if {k: v for k, v in saved_config.items() if kept(k)} != {k: v for k, v in run_config.items() if kept(k)}:
        raise ConfigError(f"--init-from {display_path(directory)}: its {kind} network config {json.dumps(meta.config)} "
                          f"differs from this run's {json.dumps(run_config)}. Fine-tune with the same network config "
                          "as the checkpoint, or train from scratch without --init-from.")
    saved_crop = {k: (meta.extra.get("crop") or {}).get(k) for k in crop}
    if {k: json.loads(json.dumps(v)) for k, v in crop.items()} != saved_crop:
        theirs = _geometry(saved_crop) if None not in saved_crop.values() else f"{meta.extra.get('crop')!r}"
        raise ConfigError(f"--init-from {display_path(directory)}: its crops are {theirs}; this run's are "
                          f"{_geometry(crop)}. Fine-tune on crops of the checkpoint's geometry.")
    for name, (theirs, ours, fix) in (more or {}).items():
        if theirs != ours:
            raise ConfigError(f"--init-from {display_path(directory)}: its {name} is {theirs!r}, this run's is "
                              f"{ours!r}. {fix}")
    model, _ = load_checkpoint(directory, kind=kind, build=build, command=command)
    state = model.state_dict()
    info = {"dir": display_path(directory),
            "weights_sha256": hashlib.sha256((Path(directory) / "model.pt").read_bytes()).hexdigest(),
            "trained_on": (meta.extra.get("data") or {}).get("manifest")}
    if converted:
        with torch.random.fork_rng(devices=[]):
            target = build(config)
        result = target.load_state_dict(state, strict=False)
        if result.unexpected_keys or any(not k.endswith(NORM_BUFFERS) for k in result.missing_keys):
            raise ConfigError(f"--init-from {display_path(directory)}: its weights do not carry over to this run's "
                              f"network ({', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in converted.items())}): "
                              f"missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}.")
        state = target.state_dict()
        info["converted"] = {k: list(v) for k, v in converted.items()}
    if fresh:
        state, info["fresh"] = _carry_over(state, build, config, fresh, directory)
    return state, info


def _carry_over(saved: dict, build, config: dict[str, Any], fresh: tuple[str, ...],
                directory: str | os.PathLike) -> tuple[dict, list[str]]:
    """The weights of ``saved`` that fit the run's network, and the ``fresh`` prefixes left out because theirs do not
    (missing or another shape): those start from the run's seeded initialisation (`_started` with ``partial``)."""
    with torch.random.fork_rng(devices=[]):
        target = build(config).state_dict()
    kept, started = {}, set()
    for key, value in target.items():
        theirs = saved.get(key)
        if theirs is not None and theirs.shape == value.shape:
            kept[key] = theirs
        elif key.startswith(fresh):
            started.add(next(p for p in fresh if key.startswith(p)))
        else:
            raise ConfigError(f"--init-from {display_path(directory)}: its weights lack {key} (or shape it "
                              f"differently), which only the {', '.join(fresh)} weights may.")
    return kept, sorted(started)


def _started(model: torch.nn.Module, state: dict | None, partial: tuple[str, ...] = ()) -> torch.nn.Module:
    """``model`` with the fine-tuning start weights loaded (as built when ``state`` is None). ``partial``: prefixes
    whose weights ``state`` may lack (they keep the seeded initialisation); every other weight must be there."""
    if state is not None:
        result = model.load_state_dict(state, strict=not partial)
        missing = [k for k in result.missing_keys if not k.startswith(partial)] if partial else []
        if missing or (partial and result.unexpected_keys):
            raise ConfigError(f"The start weights lack {missing[:3]} or carry unknown {result.unexpected_keys[:3]}.")
    return model


def _start_line(init: dict[str, Any] | None, seed: int) -> str:
    if init is None:
        return f"seeded random weights (seed {seed})"
    trained_on = f", trained on `{init['trained_on']}`" if init.get("trained_on") else ""
    converted = "".join(f"; {key} {a} → {b}: every weight carried over, the running statistics learnt here"
                        for key, (a, b) in (init.get("converted") or {}).items())
    return (f"fine-tuned from `{init['dir']}` (weights sha256 {init['weights_sha256'][:16]}…{trained_on}"
            f"{converted})")


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
- Start: {start}
- {loss}
- AdamW, lr {lr:g}, batch {batch_size}, {steps} steps, seed {seed}, {clip}{resumed}
- Final training loss {train_loss:.5f}; held-out validation loss {val_loss:.5f}
- {seconds:.0f} s ({s_per_step:.3f} s/step) {hardware}; trained {today}
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
        s_per_step=report.seconds_per_step, hardware=report.hardware, today=date.today().isoformat(),
        start=_start_line(report.extra.get("init_from"), settings.seed),
        log_every=settings.log_every, val_every=settings.val_every, limitations=limitations)
    path = report.out / "MODEL_CARD.md"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ autoencoder
def _kl(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma²) ‖ N(0, 1)), summed over latent voxels and channels, averaged over the batch."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-12) - 1)
    return kl.flatten(1).sum(1).mean()


def _tumour_weights(labels: torch.Tensor, weight: float, dilate: int = TUMOUR_WEIGHT_DILATION) -> torch.Tensor:
    """Per-voxel loss weights ``(B, 1, *S)``: ``weight`` in the tumour (viable, necrosis, Lipiodol) grown by
    ``dilate`` voxels, 1 elsewhere, normalised to mean 1 per crop (so the loss keeps its scale)."""
    tumour = torch.isin(labels, torch.tensor(TUMOUR_LABELS, device=labels.device)).float()
    if dilate:
        tumour = F.max_pool3d(tumour, 2 * dilate + 1, stride=1, padding=dilate)
    w = 1.0 + (weight - 1.0) * tumour
    return w / w.flatten(1).mean(1).view(-1, *([1] * (w.ndim - 1)))


def _freeze_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """Only the decoder (and its 1×1 input convolution) learns: the latents, which a dynamics model was trained
    on, stay exactly as they were."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(DECODER_PREFIXES))
    return model


def train_autoencoder(manifest: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
                      batch_size: int | None = None, lr: float | None = None, seed: int = 0, resume: bool = False,
                      progress: bool | ProgressFn | None = True, model_config: dict[str, Any] | None = None,
                      crop: CropConfig | None = None, cache_dir: str | os.PathLike | None = None,
                      cache_workers: int = 1, schedule: dict[str, int] | None = None, device: str = "cpu",
                      amp: bool = False,
                      init_from: str | os.PathLike | None = None, decoder_only: bool = False,
                      tumour_weight: float = 1.0) -> TrainReport:
    """Train the crop autoencoder (`models.autoencoder.CropAutoencoder`) and write its checkpoint and card to ``out``.

    Args:
        manifest: cohort ``manifest.csv`` (or its folder).
        steps, batch_size, lr: default `DEFAULTS["autoencoder"]`; ``seed``: every random draw.
        resume: continue the run saved in ``out``.
        model_config: `CropAutoencoder` keywords (default `MODEL_CONFIGS["autoencoder"]`: its defaults).
        crop: crop geometry (default `DEFAULT_CROP`: 2 mm, 48³).
        cache_dir: crop cache folder (default beside the manifest).
        cache_workers: processes that build the crop cache when it is not built yet (default 1).
        schedule: ``log_every``/``val_every``/``checkpoint_every`` overrides of `LoopSettings`.
        device, amp: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"``; bf16 autocast (CUDA only).
        init_from: an autoencoder checkpoint to train further (same network config and crops; default lr
            `FINE_TUNE_LR`). Its latents change, so a dynamics model trained on the old ones must be retrained.
        decoder_only: train only the decoder of ``init_from`` (required): the encoder and the latent scale factor
            stay frozen, so the latents, and every dynamics model trained on them, stay valid. ``model_config`` may
            then give a wider or deeper decoder (``decoder_channels``, ``decoder_num_res_blocks``; the encoder keys
            must match), which starts fresh. The checkpoint records ``latents_of`` (the autoencoder whose latents
            these are, and the encoder's fingerprint) for `pipelines.worldmodel.weights`.
        tumour_weight: L1 weight of the tumour voxels (grown by `TUMOUR_WEIGHT_DILATION`) relative to the rest of
            the crop (1: plain L1); the validation loss stays the plain L1.

    Raises:
        ConfigError: ``init_from``'s config or crops differ from the run's (both named); ``decoder_only`` without
            ``init_from``; ``tumour_weight`` < 1.
    """
    from models.autoencoder import CropAutoencoder, encoder_fingerprint

    # 1. the start weights (checked before any crop is made), data
    if decoder_only and init_from is None:
        raise ConfigError("--decoder-only needs --init-from DIR: the autoencoder whose encoder (and latents) to keep.")
    if not tumour_weight >= 1.0:
        raise ConfigError(f"--tumour-weight must be >= 1 (1: plain L1), got {tumour_weight!r}.")
    settings = _settings("autoencoder", steps, batch_size, lr, seed, schedule, device, amp,
                         fine_tune=init_from is not None)
    crop = crop or DEFAULT_CROP
    config = model_config if model_config is not None else MODEL_CONFIGS["autoencoder"]
    start, init, latents_of = None, None, None
    if init_from is not None:
        start, init = _init_from("autoencoder", init_from, lambda c: CropAutoencoder(**c), config,
                                 {"spacing": list(crop.spacing), "size": list(crop.crop_size)}, manifest,
                                 **({"compare": CropAutoencoder.ENCODER_KEYS, "fresh": DECODER_PREFIXES}
                                    if decoder_only else {}))
        if decoder_only:
            saved = read_checkpoint_meta(init_from, kind="autoencoder", command="mewm train autoencoder").extra
            saved = saved.get("latents_of") or {}
            latents_of = {"weights_sha256": saved.get("weights_sha256", init["weights_sha256"]),
                          "encoder_sha256": encoder_fingerprint(start)}
    cache, split = _prepare(manifest, crop, cache_dir, progress, cache_workers)
    train, val = AutoencoderCrops(cache, split.train), AutoencoderCrops(cache, split.val)

    # 2. losses

    def batch_loss(model: CropAutoencoder, generator: torch.Generator) -> torch.Tensor:
        dev = model_device(model)
        if tumour_weight == 1.0:
            x = to_device(train.sample_batch(settings.batch_size, generator), dev)
            w = None
        else:
            x, labels = (to_device(t, dev) for t in train.sample_labelled_batch(settings.batch_size, generator))
            w = _tumour_weights(labels, tumour_weight)
        if decoder_only:
            with torch.no_grad():
                mu, sigma = model.net.encode(x)
            recon, kl = model.net.decode(mu), 0.0
        else:
            recon, mu, sigma = model(x)
            kl = KL_WEIGHT * _kl(mu, sigma)
        error = (recon - x).abs()
        return (error if w is None else error * w).mean() + kl

    def val_loss(model: CropAutoencoder) -> float:
        dev = model_device(model)
        errors = [F.l1_loss(model.decode(model.encode(x)), x, reduction="sum")
                  for x in (to_device(b, dev) for b in val.all_batches(VAL_BATCH))]
        return float(sum(errors) / val.images.numel())

    def set_scale(m: torch.nn.Module) -> dict[str, Any]:
        if decoder_only:  # the start's scale factor: part of the latents
            if m.encoder_sha256() != latents_of["encoder_sha256"]:
                raise RuntimeError("train_autoencoder --decoder-only: the encoder changed during training.")
            return {"scale_factor": float(m.scale_factor)}
        m.scale_factor.fill_(1.0)
        latents = torch.cat([m.encode(to_device(x, model_device(m))) for x in train.all_batches(VAL_BATCH)])
        m.scale_factor.fill_(1.0 / float(latents.std()))
        return {"scale_factor": float(m.scale_factor)}

    def build() -> CropAutoencoder:
        model = _started(CropAutoencoder(**config), start, partial=DECODER_PREFIXES if decoder_only else ())
        return _freeze_encoder(model) if decoder_only else model

    # 3. train, 4. card
    command = _command("autoencoder", cache.manifest, Path(out), settings, init_from=init_from)
    if decoder_only:
        command += " --decoder-only"
        if "decoder_channels" in config:
            command += f" --decoder-channels {','.join(map(str, config['decoder_channels']))}"
        if "decoder_num_res_blocks" in config:
            command += f" --decoder-res-blocks {config['decoder_num_res_blocks']}"
    if tumour_weight != 1.0:
        command += f" --tumour-weight {tumour_weight:g}"
    more = {"init_from": init["weights_sha256"]} if init else {}
    more.update({"decoder_only": True} if decoder_only else {})
    more.update({"tumour_weight": tumour_weight} if tumour_weight != 1.0 else {})
    report = train_loop(build, batch_loss, val_loss, settings=settings,
                        out=out, kind="autoencoder",
                        identity=_identity(cache, split, **more),
                        n_train=len(split.train), n_val=len(split.val),
                        resume=resume, progress=progress, before_save=set_scale,
                        extra={"crop": {"spacing": list(cache.config.spacing), "size": list(cache.config.crop_size)},
                               "data": _data_extra(cache, split), "kl_weight": 0.0 if decoder_only else KL_WEIGHT,
                               "tumour_weight": tumour_weight,
                               **({"init_from": init} if init else {}),
                               **({"latents_of": latents_of} if latents_of else {})})
    weighting = ("" if tumour_weight == 1.0 else
                 f", each voxel of the tumour grown by {TUMOUR_WEIGHT_DILATION} voxels weighted {tumour_weight:g}× "
                 f"(weights normalised to mean 1 per crop)")
    if decoder_only:
        fresh = ", a new wider/deeper decoder started from seeded weights" if init.get("fresh") else ""
        loss = (f"Loss: L1 reconstruction of the frozen encoder's posterior mean{weighting}, decoder only: the "
                f"encoder, its latents and the scale factor {report.extra['scale_factor']:.4f} are those of "
                f"`{init['dir']}` (encoder sha256 {latents_of['encoder_sha256'][:16]}…, latents of the autoencoder "
                f"with weights sha256 {latents_of['weights_sha256'][:16]}…), so dynamics models trained on them "
                f"stay valid{fresh}; validation: plain L1 of the reconstruction")
    else:
        loss = (f"Loss: L1 reconstruction of the posterior mean{weighting} + {KL_WEIGHT:g} × KL on pre- and "
                f"post-treatment crops (random flips); a first run decoding sampled latents at lr 2e-4 reached "
                f"only 39 HU validation L1 after 600 steps with blank reconstructions, so the posterior mean is "
                f"decoded (the KL term keeps the latents bounded); validation: L1 of the posterior-mean "
                f"reconstruction. Latent scale factor "
                f"{report.extra['scale_factor']:.4f} (1 / std of the training latents)")
    _write_card(report, cache, settings, command=command,
                purpose="Stage 1 of the world model: a KL autoencoder (MONAI AutoencoderKL) that maps tumour-centred "
                        "CT crops to latents for the dynamics model and back.",
                loss=loss)
    return report


# ------------------------------------------------------------------------------------------------ segmentation
def volume_error(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[int] = VOLUME_CLASSES, *,
                 temperature: float = VOLUME_TEMPERATURE, floor: float = VOLUME_FLOOR_VOXELS) -> torch.Tensor:
    """Mean relative error of the predicted class volumes, a differentiable stand-in for the argmax volumes.

    For each crop b and class c: ``|Σ softmax(logits / temperature)_c − Σ [labels = c]| / (Σ [labels = c] + floor)``,
    averaged over crops and ``classes``. A temperature below 1 sharpens the softmax towards the argmax the simulation
    counts, so the gradient falls on the voxels whose label is in doubt (the edge of a lesion or of its viable rim).

    Args:
        logits: ``(B, C, *S)``; labels: ``(B, 1, *S)`` integer class map.
    """
    if temperature <= 0 or floor <= 0:
        raise ValueError(f"volume_error: temperature and floor must be positive, got {temperature!r}, {floor!r}.")
    probs = torch.softmax(logits.float() / temperature, dim=1)
    idx = list(classes)
    predicted = probs[:, idx].flatten(2).sum(dim=2)  # (B, K)
    true = torch.stack([(labels == c).flatten(1).sum(dim=1) for c in idx], dim=1).to(predicted.dtype)
    return ((predicted - true).abs() / (true + floor)).mean()


@contextlib.contextmanager
def frozen_batch_norm(model: torch.nn.Module):
    """Batch-norm layers of ``model`` use and keep their running statistics inside the block (as at inference),
    their affine weights still learning; the rest of the model stays in its mode. For a batch of one crop (a
    whole-lesion crop), whose own statistics would normalise away its HU level. No effect on instance norm."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    for m in layers:
        m.eval()
    try:
        yield model
    finally:
        for m in layers:
            m.train()


def _check_whole_lesions(largest: int, step: int, crop: CropConfig, divisor: int, model: str) -> None:
    """``whole_lesions`` / ``whole_lesion_step`` of `train_segmentation` or `train_dynamics` (``model``, whose crop
    sides must be multiples of ``divisor``), checked before any crop is made."""
    if largest == 0:
        return
    ok = (isinstance(largest, int) and not isinstance(largest, bool) and isinstance(step, int) and step > 0
          and largest > max(crop.crop_size) and step % divisor == 0 and largest % divisor == 0)
    if not ok:
        raise ConfigError(f"--whole-lesion-crops must be 0 or a crop side larger than the training crop "
                          f"({max(crop.crop_size)}) that the {model} takes (a multiple of {divisor}), grown in steps "
                          f"of {step} (a multiple of {divisor}); got {largest!r}.")


def _whole_lesion_split(cache: CropCache, split, largest: int, step: int, progress):
    """The whole-lesion cache of ``cache`` (`build_whole_lesion_cache`), its indices of ``split``'s training and
    validation cases, and what the checkpoint records of them."""
    whole_cache = build_whole_lesion_cache(cache, step=step, largest=largest, progress=progress)
    position = {case_id: i for i, case_id in enumerate(whole_cache.case_ids)}
    parts = [[position[c] for c in ids if c in position] for ids in (split.train_ids, split.val_ids)]
    if not parts[0]:
        raise ConfigError(f"--whole-lesion-crops {largest}: no training case of {cache.manifest} has a lesion larger "
                          f"than the {max(cache.config.crop_size)}-voxel crop; leave the option out.")
    info = {"largest": largest, "step": step, "cache_key": whole_cache.key, "n_train": len(parts[0]),
            "n_val": len(parts[1]), "n_skipped": len(whole_cache.skipped)}
    return whole_cache, parts, info


def _whole_lesion_crops(cache: CropCache, split, largest: int, step: int, autoencoder, recon_info,
                        fraction: float, progress):
    """Training and validation `WholeLesionCrops` of ``cache``'s split, and what the checkpoint records of them."""
    whole_cache, parts, info = _whole_lesion_split(cache, split, largest, step, progress)
    recon = (autoencoder_reconstructions(whole_cache, autoencoder, weights_key=recon_info["weights_sha256"],
                                         progress=progress) if autoencoder is not None else None)
    train, val = (WholeLesionCrops(whole_cache, part, reconstructions=recon, reconstructed_fraction=fraction)
                  if part else [] for part in parts)
    return (train, val), info


def train_segmentation(manifest: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
                       batch_size: int | None = None, lr: float | None = None, seed: int = 0, resume: bool = False,
                       progress: bool | ProgressFn | None = True, model_config: dict[str, Any] | None = None,
                       crop: CropConfig | None = None, cache_dir: str | os.PathLike | None = None,
                       cache_workers: int = 1, schedule: dict[str, int] | None = None, device: str = "cpu",
                       amp: bool = False,
                       init_from: str | os.PathLike | None = None,
                       autoencoder_dir: str | os.PathLike | None = None,
                       reconstructed_fraction: float = RECONSTRUCTED_FRACTION,
                       volume_weight: float = 0.0, whole_lesions: int = 0,
                       whole_lesion_step: int = WHOLE_LESION_STEP) -> TrainReport:
    """Train the crop segmenter (`models.segmentation.CropSegmenter`, 5 classes) on pre and post crops.

    Arguments as `train_autoencoder` (defaults `DEFAULTS["segmentation"]`), and:
        init_from: a segmentation checkpoint to fine-tune (e.g. the embedded ``models/weights/segmentation``); its
            network config and crop geometry must be the run's; the default lr becomes `FINE_TUNE_LR`.
        autoencoder_dir: a trained autoencoder (its crop geometry must be the run's): each training crop is replaced
            by the autoencoder's reconstruction of it with probability ``reconstructed_fraction`` (same labels), so
            the segmenter learns to label decoded crops, which is what it measures in a simulation; the validation
            loss is then over the sharp and the reconstructed held-out crops.
        volume_weight: add this times `volume_error` (viable tumour, necrosis, Lipiodol) to the loss, training and
            validation alike; 0 (default) is DiceCE alone.
        whole_lesions: also train on whole-lesion crops (`crops.build_whole_lesion_cache`): each lesion larger
            than the training crop in the smallest crop grown by ``whole_lesion_step`` voxels a side, up to this
            many, that holds it, which is how `simulate` crops and measures it (``[worldmodel] max_crop_voxels``).
            Each step then averages the batch's loss with that of one such crop (reconstructed at the same rate),
            and the validation loss likewise; 0 (default): training crops only.

    Raises:
        ConfigError: ``init_from``'s config or crops differ from the run's (both named); the autoencoder's crops
            differ from the run's; ``reconstructed_fraction`` outside [0, 1]; ``volume_weight`` negative or not
            finite; ``whole_lesions`` not 0 and not a crop side the segmenter takes, or no case needs one.
        CheckpointNotFoundError: no autoencoder in ``autoencoder_dir``.
    """
    from monai.losses import DiceCELoss

    from models.segmentation import CropSegmenter

    # 1. the start weights (checked before any crop is made), data
    if isinstance(volume_weight, bool) or not isinstance(volume_weight, (int, float)) or not (
            0.0 <= volume_weight < float("inf")):
        raise ConfigError(f"--volume-weight must be a finite number >= 0, got {volume_weight!r}.")
    settings = _settings("segmentation", steps, batch_size, lr, seed, schedule, device, amp,
                         fine_tune=init_from is not None)
    crop = crop or DEFAULT_CROP
    config = {"num_classes": len(LABELS),
              **(model_config if model_config is not None else MODEL_CONFIGS["segmentation"])}
    _check_whole_lesions(whole_lesions, whole_lesion_step, crop, CropSegmenter(**config).divisor, "segmenter")
    if config["num_classes"] != len(LABELS):
        raise ConfigError(f"The segmenter must predict the {len(LABELS)} classes of LABELS ({', '.join(LABELS)}); "
                          f"got num_classes={config['num_classes']}.")
    start, init = None, None
    if init_from is not None:
        start, init = _init_from("segmentation", init_from, lambda c: CropSegmenter(**c), config,
                                 {"spacing": list(crop.spacing), "size": list(crop.crop_size)}, manifest,
                                 convertible=("norm",))
    recon_info, autoencoder = None, None
    if autoencoder_dir is not None:
        if not 0.0 <= reconstructed_fraction <= 1.0:
            raise ConfigError(f"--reconstructed-fraction must be in [0, 1], got {reconstructed_fraction!r}.")
        autoencoder, ae_meta, ae_weights = _load_autoencoder(autoencoder_dir, manifest)
        ae_crop = ae_meta.extra.get("crop") or {}
        if [ae_crop.get("spacing"), ae_crop.get("size")] != [list(crop.spacing), list(crop.crop_size)]:
            raise ConfigError(f"The autoencoder in {display_path(autoencoder_dir)} was trained on crops "
                              f"{ae_crop or 'of unrecorded geometry'}; this run's are "
                              f"{_geometry({'spacing': list(crop.spacing), 'size': list(crop.crop_size)})}. "
                              "Use an autoencoder of the run's crop geometry.")
        recon_info = {"dir": display_path(autoencoder_dir), "weights_sha256": ae_weights,
                      "fraction": float(reconstructed_fraction)}
    cache, split = _prepare(manifest, crop, cache_dir, progress, cache_workers)
    recon = (autoencoder_reconstructions(cache, autoencoder, weights_key=recon_info["weights_sha256"],
                                         progress=progress) if autoencoder is not None else None)
    train, val = (SegmentationCrops(cache, part, reconstructions=recon, reconstructed_fraction=reconstructed_fraction)
                  for part in (split.train, split.val))
    whole, whole_info = None, None
    if whole_lesions:
        whole, whole_info = _whole_lesion_crops(cache, split, whole_lesions, whole_lesion_step, autoencoder,
                                                recon_info, reconstructed_fraction, progress)
    del autoencoder, recon

    # 2. loss
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def criterion(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = dice_ce(logits, y)
        return loss + volume_weight * volume_error(logits, y) if volume_weight else loss

    def batch_loss(model: CropSegmenter, generator: torch.Generator) -> torch.Tensor:
        x, y = to_device(train.sample_batch(settings.batch_size, generator), model_device(model))
        loss = criterion(model(x), y)
        if whole is None:
            return loss
        x, y = to_device(whole[0].sample(generator), model_device(model))
        with frozen_batch_norm(model):  # one crop: its own statistics would stand in for the running ones
            return (loss + criterion(model(x), y)) / 2

    def val_loss(model: CropSegmenter) -> float:
        dev = model_device(model)
        total, n = 0.0, 0
        for x, y in (to_device(b, dev) for b in val.all_batches(VAL_BATCH)):
            total, n = total + float(criterion(model(x), y)) * len(x), n + len(x)
        if whole is None or not len(whole[1]):
            return total / n
        losses = [float(criterion(model(x), y)) for x, y in (to_device(b, dev) for b in whole[1].all_items())]
        return (total / n + sum(losses) / len(losses)) / 2

    # 3. train, 4. card
    command = _command("segmentation", cache.manifest, Path(out), settings, init_from=init_from,
                       autoencoder=autoencoder_dir)
    if recon_info is not None:
        command += f" --reconstructed-fraction {reconstructed_fraction:g}"
    if volume_weight:
        command += f" --volume-weight {volume_weight:g}"
    if whole_info:
        command += f" --whole-lesion-crops {whole_lesions}"
    if config.get("norm", "instance") != "instance":
        command += f" --norm {config['norm']}"
    more = {"init_from": init["weights_sha256"]} if init else {}
    if recon_info is not None:
        more["reconstructions"] = recon_info
    volume = ({"weight": float(volume_weight), "classes": list(VOLUME_CLASSES), "temperature": VOLUME_TEMPERATURE,
               "floor_voxels": VOLUME_FLOOR_VOXELS} if volume_weight else None)
    if volume:
        more["volume_loss"] = volume
    if whole_info:
        more["whole_lesions"] = whole_info
    report = train_loop(lambda: _started(CropSegmenter(**config), start), batch_loss, val_loss, settings=settings,
                        out=out, kind="segmentation",
                        identity=_identity(cache, split, **more), n_train=len(split.train), n_val=len(split.val),
                        resume=resume, progress=progress,
                        extra={"crop": {"spacing": list(cache.config.spacing), "size": list(cache.config.crop_size)},
                               "labels": dict(LABELS), "data": _data_extra(cache, split),
                               **({"init_from": init} if init else {}),
                               **({"reconstructions": recon_info} if recon_info else {}),
                               **({"volume_loss": volume} if volume else {}),
                               **({"whole_lesions": whole_info} if whole_info else {})})
    _write_card(report, cache, settings, command=command,
                purpose="Segments liver, viable tumour, necrosis and Lipiodol on tumour-centred CT crops (MONAI "
                        "DynUNet); used to measure the world model's simulated outcomes.",
                loss="Loss: MONAI DiceCELoss (softmax, one-hot labels, 5 classes) on pre- and post-treatment crops "
                     "(random flips)" + (
                         f" + {volume_weight:g} × the mean relative error of the viable-tumour, necrosis and "
                         f"Lipiodol volumes (softmax at temperature {VOLUME_TEMPERATURE:g}, floor "
                         f"{VOLUME_FLOOR_VOXELS:g} voxels; `pipelines.worldmodel.train.volume_error`)"
                         if volume_weight else "") + (
                         f"; each step averaged with the same loss on one whole-lesion crop (the "
                         f"{whole_info['n_train']} training cases whose lesion exceeds the crop, each in the smallest "
                         f"crop of sides grown by {whole_lesion_step} voxels, up to {whole_lesions}, that holds it, as "
                         f"`simulate` crops it; validation likewise on {whole_info['n_val']})"
                         if whole_info else "") + (
                         f"; each crop replaced by the autoencoder's reconstruction of it with probability "
                         f"{reconstructed_fraction:g} (autoencoder `{recon_info['dir']}`, weights sha256 "
                         f"{recon_info['weights_sha256'][:16]}…), so that it labels decoded (simulated) crops as "
                         f"well as sharp CT; validation: the same loss on the sharp and the reconstructed held-out "
                         f"crops" if recon_info else "; validation: the same loss on the held-out crops"))
    return report


# ------------------------------------------------------------------------------------------------ dynamics
def region_weighted_mse(prediction: torch.Tensor, target: torch.Tensor, region: torch.Tensor,
                        weight: float) -> torch.Tensor:
    """Mean squared error with each cell weighted ``1 + weight × region``, normalised by the weights' sum.

    Args:
        prediction, target: ``(B, C, *S)``.
        region: ``(B, 1, *S)`` in [0, 1], e.g. the change region's fraction of each latent cell; shared by the
            ``C`` channels.
        weight: 0 gives `torch.nn.functional.mse_loss` exactly.
    """
    if not weight:
        return F.mse_loss(prediction, target)
    cells = 1.0 + weight * region
    return ((prediction - target) ** 2 * cells).sum() / (cells.sum() * prediction.shape[1])


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
                   cache_workers: int = 1, schedule: dict[str, int] | None = None, device: str = "cpu",
                   amp: bool = False,
                   init_from: str | os.PathLike | None = None,
                   clinical_fields: Sequence[str] = (), prediction_type: str = "epsilon",
                   response_token: bool = False, response_lr_scale: float = 1.0,
                   embolic_balance: float = 0.0, change_weight: float = 0.0, whole_lesions: int = 0,
                   whole_lesion_step: int = WHOLE_LESION_STEP) -> TrainReport:
    """Train the latent dynamics model (`models.dynamics.TumourDynamicsModel`) on a trained autoencoder's latents.

    The crops are made with the autoencoder's own crop geometry (its ``extra["crop"]``). The checkpoint's ``extra``
    holds ``scheduler`` (`DDPM_SCHEDULER`), ``crop`` (spacing, size, ``change_margin_mm``), ``autoencoder`` (config,
    scale factor, weights sha256) and ``cond_drop_prob``, so loading can check compatibility.

    Args:
        autoencoder_dir: checkpoint made by `train_autoencoder`.
        cond_drop_prob: probability of training on the null plan (classifier-free guidance).
        change_margin_mm: margin of the change region (`pipelines.worldmodel.regions.change_region`).
        init_from: a dynamics checkpoint to fine-tune; same network config, crop geometry, change margin and
            autoencoder weights as this run; the default lr becomes `FINE_TUNE_LR`.
        clinical_fields: also condition on these manifest covariates (`models.clinical_encoder.CLINICAL_FIELDS`,
            e.g. ``("afp", "n_lesions", "max_diameter_mm", "vascular_invasion")``); each training row's token is
            blanked (all values unknown) with probability ``cond_drop_prob``, independently of the plan, so the
            model also serves cases without labs.
        prediction_type: what the network predicts, ``"epsilon"`` (the noise; default) or ``"v_prediction"``
            (``v = √ᾱ ε − √(1−ᾱ) x₀``, Salimans & Ho 2022, https://arxiv.org/abs/2202.00512: the high-noise steps,
            which set a sample's overall brightness, carry weight in the loss). Recorded in
            ``extra["scheduler"]``; the sampler's DDIM scheduler follows it.
        response_token: also condition on each pair's measured response (`models.response`; teacher forcing):
            present only where the plan is kept, and then blanked with probability ``cond_drop_prob``. Sampling
            needs a response predictor beside the weights (`mewm train response`). With ``init_from`` a model
            without the token, the token's encoder starts from zero and every other weight carries over.
        response_lr_scale: the token's encoder learns at ``lr * response_lr_scale`` (a fresh part of a fine-tuned
            network may need to move faster than the rest); only with ``response_token``.
        embolic_balance: draw the training pairs with the plans' embolic groups balanced
            (`pipelines.worldmodel.crops.embolic_balance_weights`): 0 (default) as they come, 0.5 each group in
            proportion to the square root of its size, 1 every group equally often. Rare kinds of plan (e.g.
            particles without Lipiodol) then weigh more in the loss.
        change_weight: weigh each latent cell's squared error by ``1 + change_weight × f`` with ``f`` its fraction
            inside the change region (the tumour and its margin, `regions.latent_masks`), normalised by the
            weights' sum: the lesion, a small part of the crop, then counts more than the liver around it. 0
            (default) the plain MSE. The validation loss stays the plain MSE, comparable across runs.
        whole_lesions: also train on whole-lesion crops (`crops.build_whole_lesion_cache`, as
            `train_segmentation`): each lesion larger than the training crop, in the smallest crop grown by
            ``whole_lesion_step`` voxels a side, up to this side, that holds it whole, as `simulate` crops it. Each
            step then averages the batch's loss with that of ``batch_size // WHOLE_LESION_BATCH_DIVISOR`` (at least
            1) whole-lesion pairs of one crop size, drawn uniformly (`crops.WholeLesionPairs`), and the validation
            loss is the mean of the two validation losses. 0 (default): training crops only, where a large lesion
            is only ever seen cut by the crop.
        Others as `train_autoencoder` (defaults `DEFAULTS["dynamics"]`).

    Raises:
        CheckpointNotFoundError: no usable autoencoder in ``autoencoder_dir`` (names the command that makes one).
        ConfigError: ``init_from`` does not fit this run (what differs is named); ``whole_lesions`` not 0 and not
            a crop side the model takes, or no training case needs one.
    """
    from models.dynamics import TumourDynamicsModel

    # 1. the autoencoder and its latents of the cached crops
    if not 0 <= cond_drop_prob < 1:
        raise ConfigError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob!r}.")
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}.")
    unknown = [f for f in clinical_fields if f not in CLINICAL_FIELDS]
    if unknown:
        raise ConfigError(f"Unknown clinical field(s) {unknown}; choose from {', '.join(CLINICAL_FIELDS)}.")
    if not response_lr_scale > 0 or (response_lr_scale != 1.0 and not response_token):
        raise ConfigError(f"response_lr_scale={response_lr_scale!r}: a positive scale, and only with the response "
                          "token (--response-token).")
    embolic_balance_weights((), embolic_balance)  # checks the range before any work
    if not (math.isfinite(change_weight) and change_weight >= 0):
        raise ConfigError(f"change_weight must be a finite number >= 0 (0: the plain MSE), got {change_weight!r}.")
    scheduler_config = {**DDPM_SCHEDULER, "prediction_type": prediction_type}
    settings = _settings("dynamics", steps, batch_size, lr, seed, schedule, device, amp,
                         fine_tune=init_from is not None,
                         lr_scales=((RESPONSE_PREFIXES[0], response_lr_scale),) if response_lr_scale != 1.0 else ())
    autoencoder, ae_meta, ae_weights = _load_autoencoder(autoencoder_dir, manifest)
    ae_crop = ae_meta.extra.get("crop")
    if not ae_crop:
        raise ConfigError(f"The autoencoder in {autoencoder_dir} records no crop geometry (extra['crop']); "
                          "re-make it with `mewm train autoencoder`.")
    crop = CropConfig(tuple(ae_crop["spacing"]), tuple(ae_crop["size"]))
    latent_channels = int(ae_meta.config["latent_channels"])
    config = {"latent_channels": latent_channels,
              **(model_config if model_config is not None else MODEL_CONFIGS["dynamics"])}
    if clinical_fields:
        config["clinical_fields"] = list(clinical_fields)
    if response_token:
        config["response_token"] = True
    if config["latent_channels"] != latent_channels:
        raise ConfigError(f"The dynamics model's latent_channels={config['latent_channels']} differs from the "
                          f"autoencoder's {latent_channels} in {autoencoder_dir}.")
    _check_whole_lesions(whole_lesions, whole_lesion_step, crop,
                         autoencoder.downsampling * 2 ** (len(config.get("channels", (32, 64, 64))) - 1),
                         "dynamics model")
    start, init = None, None
    if init_from is not None:
        saved_ae = (read_checkpoint_meta(init_from, kind="dynamics", command=f"mewm train dynamics --out {init_from}")
                    .extra.get("autoencoder") or {})
        theirs = f"sha256 {str(saved_ae.get('weights_sha256'))[:12]}…"
        new_token = {}
        if response_token:  # a model without the token may start it: every other config key must agree
            with torch.random.fork_rng(devices=[]):
                keys = tuple(k for k in TumourDynamicsModel(**config).config if k != "response_token")
            new_token = {"compare": keys, "fresh": RESPONSE_PREFIXES}
        start, init = _init_from(
            "dynamics", init_from, lambda c: TumourDynamicsModel(**c), config,
            {"spacing": list(crop.spacing), "size": list(crop.crop_size),
             "change_margin_mm": float(change_margin_mm)}, manifest,
            more={"autoencoder": (theirs, theirs if encodes_like(saved_ae, ae_weights, ae_meta, autoencoder)
                                  else f"sha256 {ae_weights[:12]}… with another encoder (other latents)",
                                  f"Pass the autoencoder it was trained with (--autoencoder {saved_ae.get('dir')}) "
                                  "or one with its encoder (`mewm train autoencoder --decoder-only`).")},
            **new_token)
    cache, split = _prepare(manifest, crop, cache_dir, progress, cache_workers)
    covariates = ({r.case_id: r.covariates for r in read_manifest(cache.manifest, check_files=False)}
                  if config.get("clinical_fields") else None)
    train, val = (LatentPairs.from_cache(cache, autoencoder, part, change_margin_mm=change_margin_mm,
                                         weights_key=ae_weights, covariates=covariates, progress=progress,
                                         responses=response_token)
                  for part in (split.train, split.val))
    train.sampling_weights = embolic_balance_weights(train.plans, embolic_balance)
    whole, whole_info = None, None
    if whole_lesions:
        whole_cache, parts, whole_info = _whole_lesion_split(cache, split, whole_lesions, whole_lesion_step, progress)
        whole = [WholeLesionPairs.from_cache(whole_cache, autoencoder, part, change_margin_mm=change_margin_mm,
                                             weights_key=ae_weights, covariates=covariates, progress=progress,
                                             responses=response_token) if part else None
                 for part in parts]
    whole_batch = max(1, settings.batch_size // WHOLE_LESION_BATCH_DIVISOR)

    # 2. scheduler and loss
    scheduler = build_ddpm_scheduler(scheduler_config)
    n_t = scheduler.num_train_timesteps

    def denoise_loss(model: TumourDynamicsModel, batch, generator: torch.Generator, drop: bool,
                     weight: float = 0.0) -> torch.Tensor:
        b = batch.post.shape[0]
        t = torch.randint(0, n_t, (b,), generator=generator)
        noise = torch.randn(batch.post.shape, generator=generator)
        keep = torch.rand(b, generator=generator) >= cond_drop_prob if drop else torch.ones(b, dtype=torch.bool)
        covariates = None
        if model.clinical_encoder is not None:  # drawn only then, so a CT-and-plan run keeps its random stream
            known = torch.rand(b, generator=generator) >= cond_drop_prob if drop else torch.ones(b, dtype=torch.bool)
            covariates = [c if k else None for c, k in zip(batch.covariates, known.tolist())]
        present = None
        if model.response_encoder is not None:  # only with the plan, and blanked like the labs
            known = torch.rand(b, generator=generator) >= cond_drop_prob if drop else torch.ones(b, dtype=torch.bool)
            present = (keep & known).float()
        # drawn on the CPU with the CPU generator (same stream on every device), then moved
        batch, t, noise = to_device((batch, t, noise), model_device(model))
        context = model.encode_plans([p if k else None for p, k in zip(batch.plans, keep.tolist())], covariates,
                                     batch.responses if present is not None else None, present)
        x_t = scheduler.add_noise(original_samples=batch.post, noise=noise, timesteps=t)
        target = noise if prediction_type == "epsilon" else scheduler.get_velocity(batch.post, noise, t)
        return region_weighted_mse(model(x_t, t, batch.pre, batch.masks, context), target, batch.masks[:, 1:2],
                                   weight)

    def batch_loss(model: TumourDynamicsModel, generator: torch.Generator) -> torch.Tensor:
        loss = denoise_loss(model, train.sample_batch(settings.batch_size, generator), generator, drop=True,
                            weight=change_weight)
        if whole is None:
            return loss
        return (loss + denoise_loss(model, whole[0].sample_batch(whole_batch, generator), generator, drop=True,
                                    weight=change_weight)) / 2

    def val_loss(model: TumourDynamicsModel) -> float:
        g = torch.Generator().manual_seed(settings.seed)  # the same timesteps and noise at every validation

        def mean_loss(pairs) -> float:
            return float(sum(denoise_loss(model, b, g, drop=False) * len(b.plans)
                             for b in pairs.all_batches(VAL_BATCH)) / len(pairs))

        plain = mean_loss(val)
        return plain if whole is None or whole[1] is None else (plain + mean_loss(whole[1])) / 2

    # 3. train, 4. card
    command = _command("dynamics", cache.manifest, Path(out), settings, autoencoder=autoencoder_dir,
                       init_from=init_from)
    if config.get("clinical_fields"):
        command += f" --clinical-fields {','.join(config['clinical_fields'])}"
    if prediction_type != "epsilon":
        command += f" --prediction-type {prediction_type}"
    if response_token:
        command += " --response-token"
    if response_lr_scale != 1.0:
        command += f" --response-lr-scale {response_lr_scale:g}"
    if embolic_balance:
        command += f" --embolic-balance {embolic_balance:g}"
    if change_weight:
        command += f" --change-weight {change_weight:g}"
    if whole_info:
        command += f" --whole-lesion-crops {whole_lesions}"
    extra = {"scheduler": dict(scheduler_config),
             "crop": {"spacing": list(crop.spacing), "size": list(crop.crop_size),
                      "change_margin_mm": float(change_margin_mm)},
             "autoencoder": {"config": ae_meta.config, "scale_factor": float(autoencoder.scale_factor),
                             "weights_sha256": ae_weights, "encoder_sha256": autoencoder.encoder_sha256(),
                             "dir": display_path(autoencoder_dir)},
             "cond_drop_prob": cond_drop_prob, "masks": "fraction of each latent cell (regions.latent_masks)",
             "data": _data_extra(cache, split), **({"init_from": init} if init else {}),
             **({"embolic_balance": embolic_balance} if embolic_balance else {}),
             **({"change_weight": change_weight} if change_weight else {}),
             **({"whole_lesions": {**whole_info, "batch": whole_batch}} if whole_info else {})}
    more = {"init_from": init["weights_sha256"]} if init else {}
    if prediction_type != "epsilon":  # (absent for ε, so older runs stay resumable)
        more["prediction_type"] = prediction_type
    if response_token:
        more["response_token"] = True
    if embolic_balance:  # (absent when off, so older runs stay resumable)
        more["embolic_balance"] = embolic_balance
    if change_weight:
        more["change_weight"] = change_weight
    if whole_info:
        more["whole_lesions"] = whole_info
    partial = RESPONSE_PREFIXES if init and init.get("fresh") else ()
    report = train_loop(lambda: _started(TumourDynamicsModel(**config), start, partial), batch_loss, val_loss,
                        settings=settings, out=out, kind="dynamics",
                        identity=_identity(cache, split, autoencoder=ae_weights, cond_drop_prob=cond_drop_prob,
                                           change_margin_mm=change_margin_mm, **more),
                        n_train=len(split.train), n_val=len(split.val), resume=resume, progress=progress,
                        extra=extra)
    _write_card(report, cache, settings, command=command,
                purpose="The world model's dynamics: a latent diffusion model (MONAI DiffusionModelUNet with "
                        "cross-attention to the plan tokens) that predicts the post-TACE crop from the "
                        "pre-treatment crop and a TACE plan.",
                loss=f"Loss: DDPM {'ε' if prediction_type == 'epsilon' else 'v'}-prediction MSE (MONAI DDPMScheduler, "
                     f"{n_t} steps, scaled_linear_beta "
                     f"{DDPM_SCHEDULER['beta_start']}–{DDPM_SCHEDULER['beta_end']}) on the post-treatment latent; "
                     f"plan dropped to the null plan with probability {cond_drop_prob} (classifier-free guidance); "
                     f"change-region margin {change_margin_mm:g} mm; autoencoder {autoencoder_dir}"
                     + (f"; also conditioned on the covariates {', '.join(config['clinical_fields'])} (one context "
                        f"token, blanked to unknown with probability {cond_drop_prob})"
                        if config.get("clinical_fields") else "")
                     + ("; and on the pair's measured response (viable, necrosis, Lipiodol fractions of the "
                        "pre-treatment lesion; one context token, present only with the plan and blanked with "
                        f"probability {cond_drop_prob}; sampled with the response predictor's)"
                        if response_token else "")
                     + (f"; training pairs drawn with the plans' embolic groups balanced (each pair weighs "
                        f"n_group^-{embolic_balance:g})" if embolic_balance else "")
                     + (f"; each latent cell's error weighted 1 + {change_weight:g} × its change-region fraction "
                        "(validation loss unweighted)" if change_weight else "")
                     + (f"; each step averaged with the same loss on {whole_batch} whole-lesion pair(s) of one crop "
                        f"size (the {whole_info['n_train']} training cases whose lesion exceeds the crop, each in the "
                        f"smallest crop of sides grown by {whole_lesion_step} voxels, up to {whole_lesions}, that "
                        f"holds it, as `simulate` crops it; validation loss the mean of the training crops' and the "
                        f"{whole_info['n_val']} validation whole-lesion pairs')" if whole_info else ""))
    return report

