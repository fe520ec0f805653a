"""The response predictor of the world model: its inputs, its targets, its training (``mewm train response``).

`models.response` says why the dynamics is factorised into a response and a rendering. Here:

- `lesion_features`: the `models.response.LESION_FEATURES` of a pre-treatment crop (HU and labels): log lesion
  volume, lesion mean HU minus liver mean HU (/ 100), lesion HU SD (/ 50), the pre-existing necrosis and Lipiodol
  fractions of the lesion, and whether the crop holds liver (the contrast is 0 without it);
- `measured_response`: a pre/post label pair → `models.response.RESPONSE_TARGETS` (post volumes / pre lesion
  volume): the response the predictor learns and the dynamics model is teacher-forced with;
- `ResponseRows`: those of the cases of a crop cache (`pipelines.worldmodel.crops`), with covariates and plans;
- `train_response`: the trainer (seeded, resumable, card with the held-out figures), over `pipelines.training`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.checkpoint import load_checkpoint
from models.errors import ConfigError, ManifestError
from models.plan import Plan
from models.response import RESPONSE_TARGETS, ResponsePredictor
from pipelines.manifest import read_manifest
from pipelines.preprocess import unwindow_hu
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.training import LoopSettings, TrainReport, train_loop
from pipelines.volume import LABELS
from pipelines.worldmodel import metrics
from pipelines.worldmodel.crops import CropCache, CropConfig
from pipelines.worldmodel.regions import TUMOUR_LABELS

__all__ = ["RESPONSE_DEFAULTS", "TRAIN_RESPONSE_COMMAND", "ResponseRows", "lesion_features", "measured_response",
           "load_response_predictor", "train_response", "response_figures"]

RESPONSE_DEFAULTS = {"steps": 4000, "batch_size": 64, "lr": 2e-3}
TRAIN_RESPONSE_COMMAND = "mewm train response --manifest M --out DIR/response"


def lesion_features(pre_hu: np.ndarray, pre_labels: np.ndarray, voxel_ml: float) -> list[float]:
    """`models.response.LESION_FEATURES` of a pre-treatment crop: ``pre_hu`` HU and ``pre_labels``
    (`pipelines.volume.LABELS`), same shape; ``voxel_ml`` the voxel volume. The lesion must not be empty."""
    lesion = np.isin(pre_labels, TUMOUR_LABELS)
    n = int(lesion.sum())
    if n == 0:
        raise ValueError("lesion_features: the crop holds no lesion (labels 2-4).")
    viable = pre_labels == LABELS["tumour"]
    liver = pre_labels == LABELS["liver"]
    region = viable if viable.any() else lesion
    hu = pre_hu[region].astype(np.float64)
    contrast = (hu.mean() - float(pre_hu[liver].mean())) / 100.0 if liver.any() else 0.0
    return [float(np.log(n * voxel_ml)), float(contrast), float(hu.std() / 50.0),
            float((pre_labels == LABELS["necrosis"]).sum() / n), float((pre_labels == LABELS["lipiodol"]).sum() / n),
            float(liver.any())]


def measured_response(pre_labels: np.ndarray, post_labels: np.ndarray) -> list[float]:
    """`models.response.RESPONSE_TARGETS` of a pair: post-treatment viable, necrosis and Lipiodol volumes over the
    pre-treatment lesion volume (registered label maps of one shape)."""
    n = int(np.isin(pre_labels, TUMOUR_LABELS).sum())
    if n == 0:
        raise ValueError("measured_response: the pre-treatment crop holds no lesion (labels 2-4).")
    return [float((post_labels == LABELS[k]).sum() / n) for k in ("tumour", "necrosis", "lipiodol")]


@dataclass
class ResponseRows:
    """The predictor's data for some cases of a crop cache: lesion features, covariates, plans, measured
    responses ``(N, 3)``, case ids."""

    lesion: list[list[float]]
    covariates: list[dict[str, Any]]
    plans: list[Plan]
    targets: torch.Tensor
    case_ids: list[str]

    @classmethod
    def from_cache(cls, cache: CropCache, indices: Sequence[int], covariates: Mapping[str, Any] | None = None,
                   progress: bool | ProgressFn | None = None) -> "ResponseRows":
        """Read the chosen cases' crops. Raises `ManifestError` when one has no plan."""
        voxel_ml = float(np.prod(cache.config.spacing)) / 1000.0
        report = resolve_progress(progress, "response rows", "case")
        lesion, covs, plans, targets, ids = [], [], [], [], []
        for k, i in enumerate(indices):
            entry = cache.load(int(i))
            if not entry["plan"]:
                raise ManifestError(f"Case {entry['case_id']} of {cache.manifest} has no administered plan; the "
                                    "response predictor learns the response to a plan. Fill the manifest's 'plan' "
                                    "column.")
            lesion.append(lesion_features(unwindow_hu(entry["pre"]), entry["pre_labels"], voxel_ml))
            targets.append(measured_response(entry["pre_labels"], entry["post_labels"]))
            covs.append(dict((covariates or {}).get(entry["case_id"]) or {}))
            plans.append(Plan.parse(entry["plan"]))
            ids.append(entry["case_id"])
            if report is not None:
                report(k + 1, len(indices), entry["case_id"])
        return cls(lesion, covs, plans, torch.tensor(targets, dtype=torch.float32).reshape(-1, 3), ids)

    def __len__(self) -> int:
        return len(self.case_ids)


def load_response_predictor(directory: str | os.PathLike) -> tuple[ResponsePredictor, Any]:
    """The trained predictor in ``directory`` (eval mode) and its checkpoint meta; a missing or unreadable one is a
    `CheckpointNotFoundError` naming `TRAIN_RESPONSE_COMMAND`."""
    model, meta = load_checkpoint(directory, kind="response", build=lambda c: ResponsePredictor(**c),
                                  command=TRAIN_RESPONSE_COMMAND)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta


def response_figures(predicted: torch.Tensor, measured: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per target: Spearman and mean absolute error of predicted vs measured fractions (N rows)."""
    out = {}
    for j, name in enumerate(RESPONSE_TARGETS):
        p, m = predicted[:, j].double().numpy(), measured[:, j].double().numpy()
        out[name] = {"spearman": metrics.spearman(list(p), list(m)), "mae": float(np.abs(p - m).mean())}
    return out


CARD_FIGURES = """
## Held-out figures

On the {n_val} held-out cases of the training manifest (patients the predictor did not see; measured responses,
fractions of the pre-treatment lesion volume):

| target | Spearman | mean abs. error | measured mean |
|---|---|---|---|
{rows}
"""


def train_response(manifest: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
                   batch_size: int | None = None, lr: float | None = None, seed: int = 0, resume: bool = False,
                   progress: bool | ProgressFn | None = True, crop: CropConfig | None = None,
                   cache_dir: str | os.PathLike | None = None, clinical_fields: Sequence[str] = (),
                   model_config: dict[str, Any] | None = None,
                   schedule: dict[str, int] | None = None) -> TrainReport:
    """Train the `models.response.ResponsePredictor` on the pre/post pairs of ``manifest`` (its crop cache).

    Loss: mean squared error of the three fractions. The crops are the world model's (``crop``, default
    `pipelines.worldmodel.train.DEFAULT_CROP`), so the features at sampling time are computed on the same kind of
    crop. The card (``MODEL_CARD.md``) holds the held-out Spearman and error per target.

    Raises:
        ConfigError: an unknown clinical field. ManifestError: a case without a plan, or too few cases.
    """
    from models.clinical_encoder import CLINICAL_FIELDS
    from pipelines.worldmodel.train import DEFAULT_CROP, _command, _data_extra, _identity, _prepare, _write_card

    unknown = [f for f in clinical_fields if f not in CLINICAL_FIELDS]
    if unknown:
        raise ConfigError(f"Unknown clinical field(s) {unknown}; choose from {', '.join(CLINICAL_FIELDS)}.")
    settings = LoopSettings(steps=steps or RESPONSE_DEFAULTS["steps"],
                            batch_size=batch_size or RESPONSE_DEFAULTS["batch_size"],
                            lr=lr or RESPONSE_DEFAULTS["lr"], seed=seed, weight_decay=1e-4,
                            **(schedule or {"val_every": 250, "checkpoint_every": 500}))
    crop = crop or DEFAULT_CROP
    cache, split = _prepare(manifest, crop, cache_dir, progress)
    covariates = ({r.case_id: r.covariates for r in read_manifest(cache.manifest, check_files=False)}
                  if clinical_fields else None)
    train, val = (ResponseRows.from_cache(cache, part, covariates, progress) for part in (split.train, split.val))
    config = {**(model_config or {}), "clinical_fields": list(clinical_fields)}

    def build() -> ResponsePredictor:
        return ResponsePredictor(**config)

    with torch.random.fork_rng(devices=[]):
        probe = build()
    inputs = {name: probe.inputs(rows.lesion, rows.covariates if clinical_fields else None, rows.plans)
              for name, rows in (("train", train), ("val", val))}

    def rows_of(tokens, idx):
        from models.plan_encoder import PlanTokens
        return PlanTokens(tokens.agents[idx], tokens.classes[idx], tokens.dose[idx], tokens.protocol[idx])

    def batch_loss(model: ResponsePredictor, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(train), (settings.batch_size,), generator=generator)
        features, tokens = inputs["train"]
        return F.mse_loss(model(features[idx], rows_of(tokens, idx)), train.targets[idx])

    def val_loss(model: ResponsePredictor) -> float:
        features, tokens = inputs["val"]
        return float(F.mse_loss(model(features, tokens), val.targets))

    command = _command("response", cache.manifest, Path(out), settings)
    if clinical_fields:
        command += f" --clinical-fields {','.join(clinical_fields)}"
    report = train_loop(build, batch_loss, val_loss, settings=settings, out=out, kind="response",
                        identity=_identity(cache, split), n_train=len(split.train), n_val=len(split.val),
                        resume=resume, progress=progress,
                        extra={"crop": {"spacing": list(crop.spacing), "size": list(crop.crop_size)},
                               "targets": list(RESPONSE_TARGETS), "data": _data_extra(cache, split)})
    model, _ = load_response_predictor(out)
    features, tokens = inputs["val"]
    with torch.no_grad():
        figures = response_figures(model(features, tokens), val.targets)
    report.extra["val_figures"] = figures
    card = _write_card(report, cache, settings, command=command,
                       purpose="The world model's response predictor: the expected post-treatment viable, necrosis "
                               "and Lipiodol fractions of the lesion under a plan, from pre-treatment lesion "
                               "features" + (", covariates" if clinical_fields else "") + " and the plan; the "
                               "dynamics model's response token (`models/response.py`).",
                       loss="Loss: mean squared error of the three fractions (post volume / pre lesion volume), "
                            "measured on the pairs' label maps")
    rows = "\n".join(f"| {k} | {v['spearman']:.3f} | {v['mae']:.3f} | {float(val.targets[:, j].mean()):.3f} |"
                     for j, (k, v) in enumerate(figures.items()))
    text = card.read_text().replace("## Evaluation\nEvaluation figures are appended below by the `mewm eval` "
                                    "commands.\n", "")
    card.write_text(text + CARD_FIGURES.format(n_val=len(val), rows=rows)
                    + "\n## Evaluation\nEvaluation figures are appended below by `mewm eval response`.\n")
    return report
