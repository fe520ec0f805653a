"""The ``deep`` survival model: training and prediction glue around `models.survival.SurvivalCNN`.

Inputs (`crop_channels`): four channels of the tumour-centred crop, ``[pre CT, pre tumour mask (labels 2, 3, 4),
post CT, post viable-tumour mask (label 2)]``, CTs windowed to [-1, 1] as the world model's crops, plus the
standardised `COVARIATE_FEATURES` (training mean / SD; missing ones filled with the mean and flagged).

Training (`train_deep_model`): the network's linear covariate skip starts at the coefficients of a ridge Cox model of
the training covariates (and the head's last layer at zero), so training starts from the covariate Cox model and
learns what the crops add. The fixed held-out split of `pipelines.training.split_cases`; each step draws
``batch_size`` DISTINCT patients (one crop each, random flips), so every mini-batch is one risk set with one entry
per patient, and minimises `models.survival.cox_loss` (Efron ties) through the one seeded, resumable
`pipelines.training.train_loop`. Validation loss: the Cox loss over all held-out patients at once. After the last
step, the Breslow baseline is estimated from the training patients' log-risks (no flips) and stored in the
checkpoint's ``config.json`` with the covariate standardisation and the training Kaplan-Meier curve.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.errors import CheckpointNotFoundError
from pipelines.case import Covariates
from pipelines.preprocess import window_hu
from pipelines.progress import ProgressFn
from pipelines.survival.data import SurvivalData, load_survival_data
from pipelines.survival.features import COVARIATE_FEATURES, covariate_features, impute
from pipelines.survival.model import (KINDS, BreslowBaseline, RiskPrediction, check_predict_inputs, kaplan_meier,
                                      prediction_from_log_risk, train_command, warn_imputed)
from pipelines.training import (LoopSettings, TrainReport, model_device, resolve_device, split_cases, to_device,
                                train_loop)
from pipelines.volume import LABELS
from pipelines.worldmodel.crops import CropConfig, random_flips

__all__ = ["DEEP_DEFAULTS", "MODEL_CONFIG", "crop_channels", "SurvivalCrops", "DeepSurvivalModel",
           "train_deep_model"]

# A first run (channels 8-16-32-32, no covariate skip, lr 1e-3, 500 steps) over-fitted: training C-index 0.886,
# validation 0.592, validation loss lowest at step 100 and rising after. Hence the covariate skip warm-started from a
# Cox fit of the covariates, more dropout and weight decay, and fewer steps.
DEEP_DEFAULTS = {"steps": 120, "batch_size": 32, "lr": 5e-4, "weight_decay": 1e-2}
MODEL_CONFIG: dict[str, Any] = {"in_channels": 4, "channels": [8, 16, 32, 32], "n_covariates": len(COVARIATE_FEATURES),
                                "hidden": 16, "dropout": 0.5, "covariate_skip": True}
SCHEDULE = {"log_every": 10, "val_every": 25, "checkpoint_every": 25}
EVAL_BATCH = 16
_TUMOUR = (LABELS["tumour"], LABELS["necrosis"], LABELS["lipiodol"])


def crop_channels(pre: np.ndarray, pre_labels: np.ndarray, post: np.ndarray, post_labels: np.ndarray) -> np.ndarray:
    """``(4, X, Y, Z)`` float32 network input from windowed CT crops in [-1, 1] and their label crops."""
    return np.stack([pre, np.isin(pre_labels, _TUMOUR), post, post_labels == LABELS["tumour"]]).astype(np.float32)


def _covariate_matrix(covariates: list[Covariates], means: dict[str, float], scales: dict[str, float],
                      unused: Any = ()) -> tuple[np.ndarray, list[str]]:
    """Standardised covariate rows (missing → training mean, named); ``unused`` covariates are always 0."""
    rows, imputed = [], []
    for c in covariates:
        f = covariate_features(c)
        f.update({n: means[n] for n in unused})
        x, missing = impute(f, COVARIATE_FEATURES, means)
        rows.append(x)
        imputed += [m for m in missing if m not in imputed]
    mean = np.array([means[n] for n in COVARIATE_FEATURES])
    scale = np.array([scales[n] for n in COVARIATE_FEATURES])
    return ((np.stack(rows) - mean) / scale).astype(np.float32), imputed


def covariate_standardisation(covariates: list[Covariates]
                              ) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Training means (which also impute) and SDs of the covariate features, and the covariates left unused (no
    training case has a value, or all have the same: the network sees a constant 0 for them, with a
    `SurvivalDataWarning`)."""
    import warnings

    from pipelines.survival.data import SurvivalDataWarning

    x = np.array([[covariate_features(c)[n] for n in COVARIATE_FEATURES] for c in covariates], dtype=np.float64)
    finite = np.isfinite(x)
    means = np.array([x[finite[:, j], j].mean() if finite[:, j].any() else 0.0 for j in range(x.shape[1])])
    sd = np.where(finite, x, means[None]).std(axis=0)
    unused = {n: ("no training case has a value" if not finite[:, j].any() else
                  "every training case has the same value")
              for j, n in enumerate(COVARIATE_FEATURES) if not (finite[:, j].any() and sd[j] > 1e-12)}
    if unused:
        warnings.warn("Deep survival model: covariates left unused: " +
                      "; ".join(f"{n} ({why})" for n, why in unused.items()) + ".", SurvivalDataWarning, stacklevel=3)
    return ({n: float(v) for n, v in zip(COVARIATE_FEATURES, means)},
            {n: float(v if v > 1e-12 else 1.0) for n, v in zip(COVARIATE_FEATURES, sd)}, unused)


class SurvivalCrops:
    """The network inputs of chosen cases, in memory: crops ``(N, 4, X, Y, Z)`` (float16), covariates ``(N, C)``,
    ``time`` and ``event``."""

    def __init__(self, data: SurvivalData, positions: list[int], means: dict[str, float],
                 scales: dict[str, float], unused: Any = ()) -> None:
        self.positions = list(positions)
        crops = []
        for i in self.positions:
            d = data.crops(i)
            crops.append(crop_channels(d["pre"], d["pre_labels"], d["post"], d["post_labels"]))
        self.crops = torch.from_numpy(np.stack(crops).astype(np.float16))
        cov, _ = _covariate_matrix([data.covariates[i] for i in self.positions], means, scales, unused)
        self.covariates = torch.from_numpy(cov)
        self.time = torch.from_numpy(data.time[self.positions].astype(np.float64))
        self.event = torch.from_numpy(data.event[self.positions].astype(bool))

    def __len__(self) -> int:
        return len(self.positions)

    def sample_batch(self, batch_size: int, generator: torch.Generator):
        """``batch_size`` distinct patients (all when fewer), randomly flipped: (crops, covariates, time, event)."""
        idx = torch.randperm(len(self), generator=generator)[:batch_size]
        (x,) = random_flips([self.crops[idx].float()], generator)
        return x, self.covariates[idx], self.time[idx], self.event[idx]

    @torch.no_grad()
    def log_risk(self, model: torch.nn.Module) -> torch.Tensor:
        """``(N,)`` log-risks of every case, unflipped, in order (computed on the model's device, returned on the
        CPU as float32)."""
        dev = model_device(model)
        out = [model(*to_device((self.crops[s:s + EVAL_BATCH].float(), self.covariates[s:s + EVAL_BATCH]), dev))
               for s in range(0, len(self), EVAL_BATCH)]
        return torch.cat(out).float().cpu()


# ------------------------------------------------------------------------------------------------ prediction
@dataclass
class DeepSurvivalModel:
    """A trained `SurvivalCNN` with its Breslow baseline and covariate standardisation. ``kind`` is ``"deep"``."""

    network: torch.nn.Module
    baseline: BreslowBaseline
    means: dict[str, float]
    scales: dict[str, float]
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    directory: Path | None = None
    kind: str = "deep"
    unused: tuple[str, ...] = ()

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "DeepSurvivalModel":
        """Load a checkpoint made by `train_deep_model`; a missing or incompatible one raises
        `CheckpointNotFoundError` naming ``mewm train survival --kind deep ...``."""
        from models.checkpoint import load_checkpoint
        from models.survival import SurvivalCNN

        directory = Path(directory).expanduser()
        command = train_command("deep", directory)
        network, meta = load_checkpoint(directory, kind=KINDS["deep"], build=lambda c: SurvivalCNN(**c),
                                        command=command)
        try:
            extra = meta.extra
            baseline = BreslowBaseline.from_dict(extra["baseline"])
            means = {n: float(extra["covariates"]["means"][n]) for n in COVARIATE_FEATURES}
            scales = {n: float(extra["covariates"]["scales"][n]) for n in COVARIATE_FEATURES}
            if network.config["n_covariates"] != len(COVARIATE_FEATURES):
                raise ValueError(f"n_covariates {network.config['n_covariates']} != {len(COVARIATE_FEATURES)}")
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointNotFoundError(f"The deep survival model in {directory} lacks its baseline or covariate "
                                          f"standardisation, or does not fit this version ({e}). Re-make it with "
                                          f"`{command}`.") from e
        return cls(network=network, baseline=baseline, means=means, scales=scales, config=dict(meta.config),
                   extra=dict(extra), directory=directory,
                   unused=tuple(extra["covariates"].get("unused") or ()))

    @torch.no_grad()
    def predict(self, pre_hu: np.ndarray, pre_labels: np.ndarray, post_hu: np.ndarray, post_labels: np.ndarray,
                covariates: Covariates | None, voxel_ml: float, plan: Any | None = None) -> RiskPrediction:
        """Risk, curves, medians and RMST of each of the ``T`` post-treatment samples (`SurvivalModel.predict`).

        ``voxel_ml`` and ``plan`` are not used by the network (it sees the crop at its training voxel size and has
        no plan input) but are part of the shared interface.
        """
        post_hu, post_labels = check_predict_inputs(pre_hu, pre_labels, post_hu, post_labels)
        pre = window_hu(np.asarray(pre_hu, np.float32))
        x = np.stack([crop_channels(pre, pre_labels, window_hu(np.asarray(h, np.float32)), lab)
                      for h, lab in zip(post_hu, post_labels)])
        cov, imputed = _covariate_matrix([covariates if covariates is not None else Covariates()], self.means,
                                         self.scales, self.unused)
        self.network.eval()
        log_risk = self.network(torch.from_numpy(x), torch.from_numpy(cov).expand(len(x), -1)).numpy()
        warn_imputed(imputed, self.means)
        return prediction_from_log_risk(log_risk, self.baseline, tuple(imputed))


# ------------------------------------------------------------------------------------------------ training
def _c_index(log_risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    from lifelines.utils import concordance_index

    try:
        return float(concordance_index(time, -log_risk, event))
    except ZeroDivisionError:  # no comparable pair (e.g. a tiny validation set without a death)
        return float("nan")


def covariate_cox_coefficients(crops: SurvivalCrops, penalizer: float = 0.1, unused: Any = ()) -> np.ndarray:
    """Log hazard ratios of a ridge Cox model (lifelines, Efron ties) of the standardised covariates of ``crops``
    (0 for the ``unused`` ones): the warm start of the network's linear covariate skip."""
    import pandas as pd
    from lifelines import CoxPHFitter

    used = [n for n in COVARIATE_FEATURES if n not in unused]
    df = pd.DataFrame(crops.covariates.numpy().astype(np.float64), columns=list(COVARIATE_FEATURES))[used]
    df["time"], df["event"] = crops.time.numpy(), crops.event.numpy().astype(int)
    cph = CoxPHFitter(penalizer=penalizer).fit(df, duration_col="time", event_col="event")
    return np.array([float(cph.params_[n]) if n in used else 0.0 for n in COVARIATE_FEATURES])


def train_deep_model(manifest: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
                     batch_size: int | None = None, lr: float | None = None, seed: int = 0, resume: bool = False,
                     progress: bool | ProgressFn | None = True, post_labels: str = "segmented",
                     segmenter_dir: str | os.PathLike | None = None, model_config: dict[str, Any] | None = None,
                     crop: CropConfig | None = None, cache_dir: str | os.PathLike | None = None,
                     schedule: dict[str, int] | None = None, device: str = "cpu", amp: bool = False) -> TrainReport:
    """Train the deep survival model on ``manifest`` into ``out`` (checkpoint, baseline, ``MODEL_CARD.md``).

    Args:
        steps, batch_size, lr: default `DEEP_DEFAULTS` (batch = patients per risk set). seed: every random draw.
        resume: continue the run saved in ``out``. model_config: `SurvivalCNN` keywords (default `MODEL_CONFIG`).
        post_labels, segmenter_dir, crop, cache_dir: as `load_survival_data`.
        schedule: ``log_every``/``val_every``/``checkpoint_every`` (default `SCHEDULE`).
        device, amp: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"``; bf16 autocast (CUDA only). The
            crops are read on the CPU and each batch is moved to the device.
    """
    from models.survival import SurvivalCNN, cox_loss
    from pipelines.survival.train import write_deep_card

    # 1. data, split, standardisation (an unusable GPU fails first, before the crops are read)
    resolve_device(device, amp=amp)
    data = load_survival_data(manifest, crop=crop, post_labels=post_labels, segmenter_dir=segmenter_dir,
                              cache_dir=cache_dir, progress=progress)
    split = split_cases(data.case_ids, source=f"The manifest {data.cache.manifest}", skipped=data.skipped)
    means, scales, unused = covariate_standardisation([data.covariates[i] for i in split.train])
    train = SurvivalCrops(data, split.train, means, scales, unused)
    val = SurvivalCrops(data, split.val, means, scales, unused)
    settings = LoopSettings(steps=steps or DEEP_DEFAULTS["steps"], batch_size=batch_size or DEEP_DEFAULTS["batch_size"],
                            lr=lr or DEEP_DEFAULTS["lr"], seed=seed, weight_decay=DEEP_DEFAULTS["weight_decay"],
                            device=device, amp=amp, **{**SCHEDULE, **(schedule or {})})
    config = {**MODEL_CONFIG, **(model_config or {})}
    beta = covariate_cox_coefficients(train, unused=unused) if config.get("covariate_skip") else None

    def build() -> SurvivalCNN:
        """The network, seeded by `train_loop`; with the skip it starts as the covariate Cox model (skip = its
        coefficients, the head's last layer zero), and training adds what the image tells."""
        model = SurvivalCNN(**config)
        if beta is not None and model.skip is not None:
            with torch.no_grad():
                model.skip.weight.copy_(torch.from_numpy(beta).float()[None])
                model.head[-1].weight.zero_()
                model.head[-1].bias.zero_()
        return model

    # 2. losses
    def batch_loss(model: SurvivalCNN, generator: torch.Generator) -> torch.Tensor:
        x, cov, t, e = train.sample_batch(settings.batch_size, generator)
        x, cov = to_device((x, cov), model_device(model))
        return cox_loss(model(x, cov).float().cpu(), t, e, patient=torch.arange(len(t)))

    def val_loss(model: SurvivalCNN) -> float:
        return float(cox_loss(val.log_risk(model), val.time, val.event))

    def finish(model: SurvivalCNN) -> dict[str, Any]:
        train_risk = train.log_risk(model).double().numpy()
        val_risk = val.log_risk(model).double().numpy()
        t_train, e_train = train.time.numpy(), train.event.numpy()
        return {"baseline": BreslowBaseline.fit(train_risk, t_train, e_train).to_dict(),
                "training_km": kaplan_meier(t_train, e_train),
                "train_c_index": _c_index(train_risk, t_train, e_train),
                "val_c_index": _c_index(val_risk, val.time.numpy(), val.event.numpy())}

    # 3. train (seeded, resumable), 4. card
    identity = {"cache_key": data.cache.key, "crop": data.cache.config.to_dict(), "val_ids": split.val_ids,
                "post_labels": data.post_source, "segmenter": data.segmenter.get("weights_sha256")}
    extra = {"data": {**data.summary(), "train_ids": split.train_ids, "val_ids": split.val_ids},
             "covariates": {"names": list(COVARIATE_FEATURES), "means": means, "scales": scales, "unused": unused},
             "inputs": "[pre CT, pre tumour mask (2,3,4), post CT, post viable tumour (2)], CT windowed [-175, 600] HU "
                       "-> [-1, 1]", "loss": "Cox partial likelihood, Efron ties, one entry per patient",
             "warm_start": None if beta is None else {n: float(b) for n, b in zip(COVARIATE_FEATURES, beta)}}
    report = train_loop(build, batch_loss, val_loss, settings=settings, out=out,
                        kind=KINDS["deep"], identity=identity, n_train=len(train), n_val=len(val), resume=resume,
                        progress=progress, before_save=finish, extra=extra)
    write_deep_card(report, data, settings, segmenter_dir=segmenter_dir)
    return report
