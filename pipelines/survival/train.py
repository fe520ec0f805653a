"""`mewm train survival`: the two survival recipes and their model cards.

- `train_cox`: survival data of the manifest (`load_survival_data`) → `fit_cox` → ``config.json`` + ``cox.json`` +
  ``MODEL_CARD.md`` (data, features, penalizer, exact command, hazard ratios, training fit, limitations).
- `train_deep`: the same data → `pipelines.survival.deep.train_deep_model` (the one seeded, resumable
  `pipelines.training.train_loop`) → checkpoint + Breslow baseline + ``MODEL_CARD.md``.

Evaluation figures are added to the card by `mewm eval survival` (`pipelines.survival.evaluate`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pipelines.progress import ProgressFn
from pipelines.survival.cox import COX_PENALIZER, WEIGHTS_FILE, cross_validated_c_index, fit_cox
from pipelines.survival.data import SurvivalData, load_survival_data
from pipelines.worldmodel.crops import CropConfig
from pipelines.worldmodel.report import command_line, display_path

__all__ = ["CoxTrainReport", "train_cox", "train_deep", "write_deep_card", "LIMITATIONS", "POST_LABELS_WHY"]

LIMITATIONS = """- Trained on the synthetic virtual HCC-TACE cohort only (`docs/DATA_CARD_cohort.md`); not validated on real
  patients. **Research use only; not for clinical use.**
- {plan_limit}
- Proportional hazards are assumed (true in the cohort's Weibull PH world, unverified anywhere else); the survival
  curves come from the training cohort's Breslow baseline and inherit its follow-up (censoring at 6-60 months).
- Satellite lesions outside the crop are seen only through the covariates (n_lesions, max_diameter_mm)."""

PLAN_LIMITS = {
    "blind": "It sees the tumour crop (2 mm, 48³, centred on the largest lesion) and the clinical covariates, **not "
             "the plan**: the cohort's hazard also rises with the toxicity of the plan in a fragile liver (harm, "
             "invisible in the image), so it cannot penalise an aggressive plan for that harm; a plan search should "
             "not rely on it alone for patients with poor liver function.",
    "plan": "It sees the plan only through four coarse features (numbers of drugs and embolics, and each times the "
            "Child-Pugh excess over 5), learned from observational (confounded) treatment assignment; agent-specific "
            "toxicity is not modelled. Callers must pass `plan=` to `predict`, or these features are imputed "
            "(flagged) and the harm of aggressive plans is invisible.",
}

POST_LABELS_WHY = {
    "segmented": "the world model's segmenter applied to the true post-treatment crop, with the pre-treatment labels "
                 "kept outside the change region (exactly how `mewm simulate` labels a simulated crop); at planning "
                 "time the model only sees segmenter labels, so training on them keeps its inputs in the "
                 "distribution it is used on (segmenter errors included)",
    "decoded": "the world model's segmenter applied to the true post-treatment crop after the world model's "
               "autoencoder has encoded and decoded it (faded into the pre-treatment crop at the change region's "
               "edge), with the pre-treatment labels kept outside the change region: the whole chain a simulated "
               "crop goes through, so the autoencoder's blur is in the training inputs as it is at planning time",
    "true": "the cohort's own post-treatment labels (the simulator's truth)",
}


@dataclass
class CoxTrainReport:
    """What `train_cox` did."""

    out: Path
    n_cases: int
    n_events: int
    training_c_index: float
    hazard_ratios: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        top = sorted(self.hazard_ratios.items(), key=lambda kv: -abs(kv[1] - 1))[:5]
        return "\n".join([
            f"Trained survival cox on {self.n_cases} cases ({self.n_events} deaths); training C-index "
            f"{self.training_c_index:.3f}",
            "  largest hazard ratios per SD: " + ", ".join(f"{k} {v:.2f}" for k, v in top),
            f"  config.json, {WEIGHTS_FILE} and MODEL_CARD.md in {display_path(self.out)}",
        ])


def _data_lines(data: SurvivalData) -> str:
    s = data.summary()
    synthetic = " (synthetic: the virtual HCC-TACE cohort, not patient data)" if s["synthetic"] else ""
    seg = f" (segmenter `{s['segmenter'].get('dir')}`)" if s["segmenter"] else ""
    crop = s["crop"]
    return "\n".join([
        f"- Manifest: `{display_path(s['manifest'])}`{synthetic}",
        f"- Cases: {s['n_cases']} with a tumour crop and an outcome, {s['n_events']} deaths observed; "
        f"{s['n_skipped']} left out",
        f"- Crops: tumour-centred, {' × '.join(f'{v:g}' for v in crop['spacing'])} mm voxels, "
        f"{' × '.join(str(v) for v in crop['crop_size'])} voxels (the world model's)",
        f"- Post-treatment labels: `{data.post_source}`{seg}: {POST_LABELS_WHY[data.post_source]}",
    ])


def _command(kind: str, manifest, out, **options: Any) -> str:
    return command_line("train", "survival", kind=kind, manifest=Path(manifest), out=Path(out),
                        **{k: (Path(v) if k == "segmenter" and v is not None else v) for k, v in options.items()})


COX_CARD = """# MeWM Workbench survival model: cox

The planning default for inverse dynamics: a Cox proportional-hazards model (lifelines `CoxPHFitter`) on measured
outcome features of a treated tumour (`pipelines/survival/features.py`) and clinical covariates. It turns a
pre-treatment crop and a (simulated) post-treatment crop into an unbounded log-risk, survival curve, median and
RMST-60.

**Research use only. Not a medical device; its outputs are not for clinical decisions.**

## Data
{data}

## Model
- Features (standardised with the training mean and SD): {features}
- Left out (no information in the training cases): {left_out}
- Plan features ({plan_note}): the administered plan in training, the candidate plan (`predict(..., plan=)`) in
  planning
- Missing covariates (or a missing `plan=`) at prediction time: replaced by the training means and flagged
  (`RiskPrediction.imputed`, `ImputationWarning`)
- `CoxPHFitter(penalizer={penalizer:g}, l1_ratio=0)`: ridge penalty ½·λ·‖β‖² on the standardised features; Efron
  ties; curves from the Breslow baseline of the training cohort ({n_times} event times); stored as JSON
  (`config.json`, `cox.json`), no pickle

| feature | coefficient (per SD) | hazard ratio per SD |
|---|---|---|
{table}

## Training
- Command: `{command}`
- Training fit: C-index {c_index:.3f} (on the training cases themselves: optimistic), partial log-likelihood
  {loglik:.2f}; 5-fold cross-validated C-index on the training cohort {cv}
- Fitted {today} on a 2-core CPU in {seconds:.1f} s (feature extraction included)

## Limitations
{limitations}

## Evaluation
Evaluation figures are added below by `mewm eval survival`.
"""


def train_cox(manifest: str | os.PathLike, out: str | os.PathLike, *, penalizer: float = COX_PENALIZER,
              post_labels: str = "segmented", segmenter_dir: str | os.PathLike | None = None,
              crop: CropConfig | None = None, cache_dir: str | os.PathLike | None = None,
              progress: bool | ProgressFn | None = True) -> CoxTrainReport:
    """Fit the cox survival model on ``manifest`` and write it with its card to ``out``.

    Args:
        penalizer: lifelines' ridge penalty. post_labels, segmenter_dir, crop, cache_dir: as `load_survival_data`.
    """
    import time

    t0 = time.perf_counter()
    data = load_survival_data(manifest, crop=crop, post_labels=post_labels, segmenter_dir=segmenter_dir,
                              cache_dir=cache_dir, progress=progress)
    model, cph = fit_cox(data, penalizer=penalizer)
    cv = cross_validated_c_index(data, penalizer=penalizer)
    model.extra["cv_c_index"] = cv
    command = _command("cox", data.cache.manifest.parent, out, penalizer=penalizer, post_labels=post_labels,
                       segmenter=segmenter_dir)
    model.extra["command"] = command
    model.save(out)
    seconds = time.perf_counter() - t0
    table = "\n".join(f"| {f} | {b:+.3f} | {hr:.2f} |"
                      for f, b, hr in zip(model.features, model.coefficients, model.hazard_ratios().values()))
    plan_note = "used" if model.uses_plan else "not used: some training cases have no plan"
    text = COX_CARD.format(data=_data_lines(data), features=", ".join(model.features), penalizer=penalizer,
                           plan_note=plan_note,
                           left_out="; ".join(f"{k} ({v})" for k, v in model.config.get("left_out", {}).items())
                           or "none",
                           n_times=len(model.baseline.event_times), table=table, command=command,
                           c_index=model.extra["training_c_index"], loglik=model.extra["training_log_likelihood"],
                           cv="–" if cv is None else f"{cv:.3f}",
                           today=date.today().isoformat(), seconds=seconds,
                           limitations=LIMITATIONS.format(plan_limit=PLAN_LIMITS["plan" if model.uses_plan else "blind"]))
    Path(out, "MODEL_CARD.md").write_text(text)
    return CoxTrainReport(out=Path(out), n_cases=len(data), n_events=int(data.event.sum()),
                          training_c_index=model.extra["training_c_index"], hazard_ratios=model.hazard_ratios())


DEEP_CARD = """# MeWM Workbench survival model: deep

A 3D CNN (`models.survival.SurvivalCNN`, MONAI residual units) that scores a pre-treatment and a (simulated)
post-treatment tumour crop plus clinical covariates with an unbounded log-risk, trained with the Cox partial
likelihood; survival curves, medians and RMST-60 come from the Breslow baseline of its training patients.

**Research use only. Not a medical device; its outputs are not for clinical decisions.**

## Data
{data}
- Split: {n_train} patients for training, {n_val} held out for validation (the fixed seeded split of
  `pipelines.training.split_cases`)

## Model
- Inputs: {inputs}; covariates {covariates} (standardised with the training mean and SD; missing ones replaced by
  the mean and flagged)
- {n_params:,} parameters; config (`config.json`):

```json
{config}
```

## Training
- Command: `{command}`
- Start: {warm}
- Loss: negative Cox partial log-likelihood per event (Efron ties), each mini-batch = {batch_size} distinct
  patients (one crop each, random flips): one risk set with one entry per patient
- AdamW, lr {lr:g}, weight decay {wd:g}, batch {batch_size}, {steps} steps, seed {seed}, gradient norm clipped at
  {clip}{resumed}
- Final training loss {train_loss:.4f}; validation loss (all held-out patients in one risk set) {val_loss:.4f}
- C-index: training {train_c:.3f} (optimistic), validation {val_c:.3f} ({n_val} patients)
- {seconds:.0f} s ({s_per_step:.3f} s/step) {hardware}; trained {today}
- Loss curve: `train_log.jsonl`

## Limitations
{limitations}

## Evaluation
Evaluation figures are added below by `mewm eval survival`.
"""


def write_deep_card(report, data: SurvivalData, settings, segmenter_dir=None) -> Path:
    """``MODEL_CARD.md`` of a deep survival run (`pipelines.survival.deep.train_deep_model`)."""
    import json

    extra = report.extra
    command = _command("deep", data.cache.manifest.parent, report.out, steps=settings.steps,
                       batch_size=settings.batch_size, lr=f"{settings.lr:g}", seed=settings.seed,
                       post_labels=data.post_source, segmenter=segmenter_dir,
                       device=settings.device if settings.device != "cpu" else None)
    command += " --amp" if settings.amp else ""
    text = DEEP_CARD.format(
        warm=("the linear covariate skip at the ridge Cox coefficients of the training covariates ("
              + ", ".join(f"{k} {v:+.2f}" for k, v in extra["warm_start"].items())
              + "), the head's last layer at zero: training begins at the covariate Cox model"
              if extra.get("warm_start") else "seeded random weights"),
        data=_data_lines(data), n_train=report.n_train, n_val=report.n_val, inputs=extra["inputs"],
        covariates=", ".join(extra["covariates"]["names"]), n_params=report.n_params,
        config=json.dumps(report.model_config, indent=2), command=command, batch_size=settings.batch_size,
        lr=settings.lr, wd=settings.weight_decay, steps=report.steps, seed=settings.seed, clip=settings.grad_clip,
        resumed=f"; resumed at step {report.start_step}" if report.start_step else "",
        train_loss=report.final_train_loss, val_loss=report.final_val_loss, train_c=extra["train_c_index"],
        val_c=extra["val_c_index"], seconds=report.seconds, s_per_step=report.seconds_per_step,
        hardware=report.hardware, today=date.today().isoformat(),
        limitations=LIMITATIONS.format(plan_limit=PLAN_LIMITS["blind"]))
    path = Path(report.out) / "MODEL_CARD.md"
    path.write_text(text)
    return path


def train_deep(manifest: str | os.PathLike, out: str | os.PathLike, **kwargs: Any):
    """Train the deep survival model (see `pipelines.survival.deep.train_deep_model`)."""
    from pipelines.survival.deep import train_deep_model

    return train_deep_model(manifest, out, **kwargs)
