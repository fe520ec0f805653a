"""`load_world_model`: the three trained networks of the world model, loaded once, checked against each other.

A weights folder holds ``autoencoder/``, ``dynamics/`` and ``segmentation/``, each a `models.checkpoint` directory
(``config.json`` + ``model.pt``). The dynamics checkpoint's ``extra`` records what sampling must reproduce from its
training run (written by the dynamics trainer):

- ``scheduler``: the noise schedule (`DDIM_KEYS`, shared by MONAI's ``DDPMScheduler`` and ``DDIMScheduler``);
- ``crop``: ``{"spacing": [x, y, z] mm, "size": [X, Y, Z] voxels, "change_margin_mm": m}``: the crop of
  `pipelines.preprocess.preprocess_case` and the margin of `pipelines.worldmodel.regions.change_region`;
- ``autoencoder``: ``{"config": ..., "weights_sha256": ...}`` of the autoencoder whose latents it was trained on.

Everything is checked on load, so a mismatch fails here with the command that fixes it, not as a shape error in
the middle of sampling.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from models.autoencoder import CropAutoencoder
from models.checkpoint import CheckpointMeta, load_checkpoint
from models.dynamics import TumourDynamicsModel
from models.errors import CheckpointNotFoundError, ConfigError
from models.segmentation import CropSegmenter
from pipelines.config import DEFAULT_SAMPLER, DEFAULT_STEPS
from pipelines.progress import ProgressFn
from pipelines.worldmodel.crops import CropConfig

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    from models.response import ResponsePredictor
    from models.plan import Plan
    from pipelines.case import Case
    from pipelines.worldmodel.simulate import SimulationResult

__all__ = ["DDIM_KEYS", "PRECISIONS", "SAMPLERS", "SAMPLER_NAMES", "TRAIN_COMMANDS", "WorldModel", "load_world_model"]

# The commands that make each checkpoint (named in every CheckpointNotFoundError).
TRAIN_COMMANDS: dict[str, str] = {
    "autoencoder": "mewm train autoencoder --manifest M --out DIR/autoencoder",
    "segmentation": "mewm train segmentation --manifest M --out DIR/segmentation",
    "dynamics": "mewm train dynamics --manifest M --autoencoder DIR/autoencoder --out DIR/dynamics",
    "response": "mewm train response --manifest M --out DIR/response",
}
# Compute dtypes of `WorldModel.precision`.
PRECISIONS = ("float32", "bfloat16")
# Keys of the dynamics checkpoint's ``extra["scheduler"]`` that the sampling scheduler takes over.
SAMPLERS = ("ddim", "dpm_solver")
SAMPLER_NAMES = {"ddim": "DDIM", "dpm_solver": "DPM-Solver++"}  # as reports and pages name them
DDIM_KEYS = ("num_train_timesteps", "schedule", "beta_start", "beta_end", "prediction_type")


@dataclass(frozen=True, eq=False)
class WorldModel:
    """The loaded world model: networks in eval mode, and the training settings sampling must reproduce.

    Shared read-only (the app caches one per weights folder): `simulate` builds its own scheduler per call and
    never changes the networks.

    Attributes:
        autoencoder, dynamics, segmenter: the networks (eval mode, ``requires_grad`` off).
        crop: `CropConfig` the dynamics model was trained on.
        change_margin_mm: margin of the change region (mm).
        scheduler: noise-schedule keywords (`DDIM_KEYS`).
        weights_dir: where they were loaded from.
        max_batch: most rows one denoiser call may take (classifier-free guidance rows included).
        precision: ``"float32"`` (default) or ``"bfloat16"``: the dtype the networks compute in while sampling
            (`torch.autocast`; the DDIM update, HU and volumes stay float32). bfloat16 is several times faster on
            CPUs with native bfloat16 units (Intel AMX / AVX512-BF16) and gives slightly different samples (its
            evaluation is in the dynamics card); float32 gives the same figures on any machine.
        response: the `models.response.ResponsePredictor` of a dynamics model with a response token (``response/``
            in the weights folder), else ``None``.
        max_crop_voxels: largest crop side (voxels) `simulate` may enlarge the training crop to when a lesion does
            not fit in it (in steps of `crop_step`, same spacing); equal to the training crop size to disable.
        response_guidance: for a dynamics model with a response token, the guidance scale of the token alone
            (`pipelines.worldmodel.simulate.combine_guidance`: a third denoiser branch, the plan without its
            token); ``None`` scales plan and token together by the classifier-free guidance of `simulate`.
        sampler: `SAMPLERS`: ``"ddim"`` (MONAI's DDIM, η = 0) or ``"dpm_solver"`` (diffusers' DPM-Solver++,
            second order), both deterministic for a seed.
    """

    autoencoder: CropAutoencoder
    dynamics: TumourDynamicsModel
    segmenter: CropSegmenter
    crop: CropConfig
    change_margin_mm: float
    scheduler: dict[str, Any]
    weights_dir: Path
    max_batch: int = 32
    max_crop_voxels: int = 96
    precision: str = "float32"
    metas: dict[str, CheckpointMeta] = field(default_factory=dict, repr=False)
    response: "ResponsePredictor | None" = None
    response_guidance: float | None = None
    sampler: str = DEFAULT_SAMPLER

    @property
    def crop_step(self) -> int:
        """Crop sides must be multiples of this (voxels): the autoencoder's down-sampling times the dynamics UNet's,
        and the segmenter's divisor."""
        dynamics_levels = len(self.dynamics.config.get("channels", (32, 64, 64))) - 1
        return math.lcm(self.autoencoder.downsampling * 2 ** dynamics_levels, self.segmenter.divisor)

    @property
    def token_guidance(self) -> float | None:
        """The response guidance it samples with (`response_guidance`), ``None`` for a dynamics model without a
        response token (for which it means nothing)."""
        return self.response_guidance if self.dynamics.response_encoder is not None else None

    @property
    def device(self) -> torch.device:
        return next(self.dynamics.parameters()).device

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the networks run in while sampling: `torch.autocast` to bfloat16, or nothing for float32."""
        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.precision))

    def simulate(self, case: "Case", plans: "Sequence[Plan | str] | Plan | str", samples: int = 5, seed: int = 0,
                 steps: int = DEFAULT_STEPS, guidance: float = 2.0,
                 progress: ProgressFn | None = None) -> "SimulationResult":
        """Simulate the post-treatment crop of ``case`` under each plan; see `pipelines.worldmodel.simulate`."""
        from pipelines.worldmodel.simulate import simulate

        return simulate(self, case, plans, samples=samples, seed=seed, steps=steps, guidance=guidance,
                        progress=progress)


def _load(root: Path, kind: str, build) -> tuple[torch.nn.Module, CheckpointMeta]:
    model, meta = load_checkpoint(root / kind, kind=kind, build=build, command=TRAIN_COMMANDS[kind])
    model.eval()
    # channels-last 3D weights: oneDNN's faster convolution layout on CPUs (`scripts/profile_sampler.py`, 2-core CPU:
    # the batched simulation 14 % faster in float32, 27 % in bfloat16); the numbers are the same up to rounding
    model.to(memory_format=torch.channels_last_3d)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta


def _dynamics_extra(meta: CheckpointMeta, directory: Path) -> tuple[CropConfig, float, dict[str, Any], dict]:
    """The crop, margin, scheduler and autoencoder record of the dynamics trainer, checked."""
    extra, command = meta.extra, TRAIN_COMMANDS["dynamics"]
    missing = [k for k in ("scheduler", "crop", "autoencoder") if k not in extra]
    if missing:
        raise CheckpointNotFoundError(f"The dynamics checkpoint in {directory} does not record {', '.join(missing)} "
                                      f"(its config.json 'extra'); it was not made by this version's trainer. "
                                      f"Re-make it with `{command}`.")
    try:
        crop = CropConfig(tuple(extra["crop"]["spacing"]), tuple(extra["crop"]["size"]))
        margin = float(extra["crop"]["change_margin_mm"])
        scheduler = {k: extra["scheduler"][k] for k in DDIM_KEYS}
        trained_on = dict(extra["autoencoder"])
        if not isinstance(trained_on["config"], dict):
            raise TypeError(f"autoencoder config is {trained_on['config']!r}, not a dict")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointNotFoundError(f"The dynamics checkpoint in {directory} has an unreadable crop, scheduler or "
                                      f"autoencoder record ({type(e).__name__}: {e}). Re-make it with "
                                      f"`{command}`.") from e
    if not (math.isfinite(margin) and margin >= 0):
        raise CheckpointNotFoundError(f"The dynamics checkpoint in {directory} records change_margin_mm={margin!r}; "
                                      f"it must be >= 0. Re-make it with `{command}`.")
    return crop, margin, scheduler, trained_on


def encodes_like(trained_on: dict, weights_sha256: str, ae_meta: CheckpointMeta,
                 autoencoder: CropAutoencoder) -> bool:
    """Whether ``autoencoder`` (its ``model.pt`` hashes to ``weights_sha256``) gives the latents of the autoencoder
    a dynamics checkpoint records in ``trained_on`` (its ``extra["autoencoder"]``): the same weights, or the same
    encoder (`encoder_sha256`, recorded by dynamics trainings since 2026-12-04), or a decoder retrained on its
    latents (``mewm train autoencoder --decoder-only``: ``latents_of`` names the autoencoder, and the encoder is
    checked to be that one's). ``True`` when the checkpoint records no weights (older checkpoints)."""
    expected = trained_on.get("weights_sha256")
    if not expected or weights_sha256 == expected:
        return True
    latents_of = ae_meta.extra.get("latents_of") or {}
    recorded = {trained_on.get("encoder_sha256")}
    if latents_of.get("weights_sha256") == expected:
        recorded.add(latents_of.get("encoder_sha256"))
    return autoencoder.encoder_sha256() in recorded - {None}


def _check_autoencoder(trained_on: dict, ae_meta: CheckpointMeta, autoencoder: CropAutoencoder, root: Path) -> None:
    """The autoencoder must encode as the one the dynamics model was trained on: the same encoder config and the
    same latents (`encodes_like`)."""
    fix = (f"Use the autoencoder it was trained with, or re-train the dynamics model on this one: "
           f"`{TRAIN_COMMANDS['dynamics']}`.")
    keys = CropAutoencoder.ENCODER_KEYS
    if {k: trained_on["config"].get(k) for k in keys} != {k: ae_meta.config.get(k) for k in keys}:
        raise CheckpointNotFoundError(
            f"The dynamics model in {root / 'dynamics'} was trained on an autoencoder with config "
            f"{trained_on['config']}, but {root / 'autoencoder'} holds one with config {ae_meta.config}. {fix}")
    actual = hashlib.sha256((root / "autoencoder" / "model.pt").read_bytes()).hexdigest()
    if not encodes_like(trained_on, actual, ae_meta, autoencoder):
        raise CheckpointNotFoundError(
            f"The autoencoder weights in {root / 'autoencoder'} (sha256 {actual[:12]}…) are not the ones the dynamics "
            f"model was trained on (sha256 {trained_on['weights_sha256'][:12]}…) and its encoder differs, so its "
            f"latents mean something else. {fix}")


def load_world_model(weights_dir: str | os.PathLike | None = None, max_batch: int = 32,
                     max_crop_voxels: int | None = None, precision: str | None = None,
                     response_guidance: float | None = None, sampler: str | None = None) -> WorldModel:
    """Load ``autoencoder/``, ``dynamics/`` and ``segmentation/`` from ``weights_dir`` and check they fit together.

    Args:
        weights_dir: the weights folder; default the configured ``[worldmodel] weights_dir`` (``models/weights``;
            environment override ``MEWM_WORLDMODEL__WEIGHTS_DIR``).
        max_batch: most rows per denoiser call in `WorldModel.simulate`.
        max_crop_voxels: `WorldModel.max_crop_voxels`; default the configured ``[worldmodel] max_crop_voxels``.
        precision: `WorldModel.precision` (`PRECISIONS`); default the configured ``[worldmodel] precision``.
        response_guidance: `WorldModel.response_guidance`; default the configured ``[worldmodel]
            response_guidance``.
        sampler: `WorldModel.sampler` (`SAMPLERS`); default the configured ``[worldmodel] sampler``.

    Raises:
        ConfigError: an unknown precision or sampler, a response guidance that is not a finite number.
        CheckpointNotFoundError: a checkpoint is missing or unreadable, or the three do not fit together (the
            dynamics model was trained on another autoencoder, or the crop size does not suit the networks); the
            message names the ``mewm train`` command that makes the checkpoint to replace.
    """
    if (weights_dir is None or max_crop_voxels is None or precision is None or response_guidance is None
            or sampler is None):
        from pipelines.config import load_config

        config = load_config().worldmodel
        weights_dir = config.weights_dir if weights_dir is None else weights_dir
        max_crop_voxels = config.max_crop_voxels if max_crop_voxels is None else max_crop_voxels
        precision = config.precision if precision is None else precision
        response_guidance = config.response_guidance if response_guidance is None else response_guidance
        sampler = config.sampler if sampler is None else sampler
    if precision not in PRECISIONS:
        raise ConfigError(f"load_world_model: precision must be one of {', '.join(PRECISIONS)} "
                          f"([worldmodel] precision, --precision), got {precision!r}.")
    if sampler not in SAMPLERS:
        raise ConfigError(f"load_world_model: sampler must be one of {', '.join(SAMPLERS)} ([worldmodel] sampler, "
                          f"--sampler), got {sampler!r}.")
    if (isinstance(response_guidance, bool) or not isinstance(response_guidance, (int, float))
            or not math.isfinite(response_guidance)):
        raise ConfigError(f"load_world_model: response_guidance must be a finite number ([worldmodel] "
                          f"response_guidance, --response-guidance), got {response_guidance!r}.")
    root = Path(weights_dir).expanduser()
    if max_batch < 2:
        raise ValueError(f"load_world_model: max_batch must be >= 2 (classifier-free guidance pairs), got "
                         f"{max_batch!r}.")

    # 1. the three checkpoints (each missing one names its command)
    autoencoder, ae_meta = _load(root, "autoencoder", lambda c: CropAutoencoder(**c))
    dynamics, dyn_meta = _load(root, "dynamics", lambda c: TumourDynamicsModel(**c))
    segmenter, seg_meta = _load(root, "segmentation", lambda c: CropSegmenter(**c))

    # 2. do they fit together?
    crop, margin, scheduler, trained_on = _dynamics_extra(dyn_meta, root / "dynamics")
    _check_autoencoder(trained_on, ae_meta, autoencoder, root)
    seg_spacing = (seg_meta.extra.get("crop") or {}).get("spacing")
    if seg_spacing is not None and tuple(float(s) for s in seg_spacing) != crop.spacing:
        raise CheckpointNotFoundError(
            f"The segmentation model in {root / 'segmentation'} was trained on {tuple(seg_spacing)} mm crops but the "
            f"dynamics model simulates {crop.spacing} mm crops. Re-make it at that spacing: "
            f"`{TRAIN_COMMANDS['segmentation']}`.")
    if dynamics.config["latent_channels"] != autoencoder.config["latent_channels"]:
        raise CheckpointNotFoundError(
            f"The dynamics model expects {dynamics.config['latent_channels']} latent channels but the autoencoder "
            f"makes {autoencoder.config['latent_channels']}. Re-make it with `{TRAIN_COMMANDS['dynamics']}`.")
    for name, divisor in (("autoencoder", autoencoder.downsampling), ("segmentation", segmenter.divisor)):
        if any(s % divisor for s in crop.crop_size):
            raise CheckpointNotFoundError(
                f"The dynamics model's crop size {crop.crop_size} is not divisible by {divisor}, which the "
                f"{name} network needs. Re-make it with `{TRAIN_COMMANDS[name]}` for that crop size.")
    metas = {"autoencoder": ae_meta, "dynamics": dyn_meta, "segmentation": seg_meta}
    response = None
    if dynamics.response_encoder is not None:  # the token is sampled with the predictor's response, never blank
        response, metas["response"] = _load_response(root, crop)
    return WorldModel(autoencoder=autoencoder, dynamics=dynamics, segmenter=segmenter, crop=crop,
                      change_margin_mm=margin, scheduler=scheduler, weights_dir=root, max_batch=int(max_batch),
                      max_crop_voxels=int(max_crop_voxels), precision=precision, metas=metas, response=response,
                      response_guidance=float(response_guidance), sampler=sampler)


def _load_response(root: Path, crop: CropConfig):
    """The response predictor a dynamics model with a response token needs, checked to read crops of its spacing."""
    from pipelines.worldmodel.response import load_response_predictor

    if not (root / "response").is_dir():
        raise CheckpointNotFoundError(
            f"The dynamics model in {root / 'dynamics'} reads a response token, but {root} has no response/ "
            f"predictor to give it one. Make it with `{TRAIN_COMMANDS['response']}`.")
    model, meta = load_response_predictor(root / "response")
    spacing = (meta.extra.get("crop") or {}).get("spacing")
    if spacing is not None and tuple(float(s) for s in spacing) != crop.spacing:
        raise CheckpointNotFoundError(
            f"The response predictor in {root / 'response'} was trained on {tuple(spacing)} mm crops but the dynamics "
            f"model simulates {crop.spacing} mm crops. Re-make it: `{TRAIN_COMMANDS['response']}`.")
    return model, meta
