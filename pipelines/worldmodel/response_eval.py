"""How well does the response predictor know a plan's effect? (``mewm eval response``)

On the first patients of a held-out virtual cohort, the world model's response predictor
(`models.response.ResponsePredictor`, fed by the same crop as `pipelines.worldmodel.simulate`) predicts the
response to every plan of the cohort's catalogue and of the drug probe (`pipelines.worldmodel.drug_probe`); the
simulator gives the counterfactual truth of each (`pipelines.cohort.response.plan_response`: viable ratio, necrosis
and Lipiodol fractions; no rendering, no segmentation). Figures:

- per target, over patients × catalogue plans: Spearman and mean absolute error;
- ``within_patient_spearman`` of the viable ratio across the catalogue plans (mean over patients): does it order
  one patient's plans?
- on the drug probe (embolics fixed, one drug per class): ``drug_contrast_spearman`` (each drug's viable ratio minus
  the patient's mean over the drugs, pooled) and ``best_drug_agreement`` (chance one over the number of drugs), the
  figures of ``mewm eval drugs`` in ratio units;
- baseline ``plan_average``: each plan's mean true response over the evaluated patients, the same for every
  patient (an optimistic reading of a model that knows the plan but not the patient): whatever the predictor
  scores above it comes from the patient's CT and labs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ConfigError, LesionTooLargeError
from models.response import RESPONSE_TARGETS
from pipelines.cohort.counterfactual import regenerate_cohort
from pipelines.cohort.plan_space import cohort_plan_space
from pipelines.cohort.response import plan_response
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.worldmodel import metrics
from pipelines.worldmodel.drug_probe import PROBE_DRUGS, probe_plans
from pipelines.worldmodel.report import (command_line, display_path, machine_info, metric_entry,
                                         update_card_section, write_report)

__all__ = ["evaluate_response", "response_metrics"]


def _truth(patient, plan) -> list[float]:
    r = plan_response(patient, plan)
    return [r.viable_ratio, r.necrosis_fraction, r.lipiodol_fraction]


def _contrast(values: np.ndarray) -> np.ndarray:
    """``(patients, drugs)`` → each drug's value minus the patient's mean over the drugs, flattened."""
    return (values - values.mean(axis=1, keepdims=True)).ravel()


def response_metrics(pred: np.ndarray, true: np.ndarray, probe_pred: np.ndarray,
                     probe_true: np.ndarray) -> dict[str, Any]:
    """Figures from ``(patients, plans, 3)`` predicted / true responses over the catalogue and over the drug probe
    (its first plan is the embolics without a drug, then one per drug). ``plan_average`` baselines in brackets."""
    base = np.broadcast_to(true.mean(axis=0, keepdims=True), true.shape)
    probe_base = np.broadcast_to(probe_true.mean(axis=0, keepdims=True), probe_true.shape)
    out: dict[str, Any] = {}
    for j, name in enumerate(RESPONSE_TARGETS):
        p, t, b = pred[..., j].ravel(), true[..., j].ravel(), base[..., j].ravel()
        out[f"{name}_spearman"] = metric_entry(metrics.spearman(list(p), list(t)),
                                               baseline=metrics.spearman(list(b), list(t)))
        out[f"{name}_mae"] = metric_entry(float(np.abs(p - t).mean()), baseline=float(np.abs(b - t).mean()))
    def within(a: np.ndarray) -> float:
        return float(np.nanmean([metrics.spearman(list(a[i, :, 0]), list(true[i, :, 0])) for i in range(len(a))]))

    out["within_patient_spearman"] = metric_entry(within(pred), baseline=within(base))
    drugs_pred, drugs_true, drugs_base = probe_pred[:, 1:, 0], probe_true[:, 1:, 0], probe_base[:, 1:, 0]
    out["drug_contrast_spearman"] = metric_entry(
        metrics.spearman(list(_contrast(drugs_pred)), list(_contrast(drugs_true))),
        baseline=metrics.spearman(list(_contrast(drugs_base)), list(_contrast(drugs_true))))
    best_true = drugs_true.argmin(axis=1)
    out["best_drug_agreement"] = metric_entry(float(np.mean(drugs_pred.argmin(axis=1) == best_true)),
                                              baseline=float(np.mean(drugs_base.argmin(axis=1) == best_true)),
                                              chance=1.0 / drugs_true.shape[1])
    return out


CARD_TEXT = """Measured on {date} against the counterfactual truth of a held-out virtual cohort (synthetic data; not a
clinical validation): {n} patients × {n_plans} catalogue plans, and the drug probe ({drugs}). Baseline: each plan's
mean true response over these patients (knows the plan, not the patient).

| figure | predictor | plan-average baseline |
|---|---|---|
{rows}

- Command: `{command}`
- Cohort: {cohort} ({n} patients evaluated, {skipped} skipped: lesion larger than the largest crop)
- Machine: {machine}; {seconds:.0f} s; full report: `{report}`
"""


def evaluate_response(cohort_dir: str | os.PathLike, weights_dir: str | os.PathLike, *, patients: int | None = None,
                      out: str | os.PathLike | None = None, update_card: bool = True,
                      progress: bool | ProgressFn | None = None) -> dict[str, Any]:
    """Evaluate the response predictor of ``weights_dir`` (module docstring); write the JSON report (default
    ``<weights>/response/evaluation.json``) and the card section "Evaluation" of ``<weights>/response``.

    Raises:
        ConfigError: the weights hold no response predictor, ``patients`` beyond the cohort, or fewer than two
            patients evaluated.
    """
    from pipelines.worldmodel.simulate import fitting_crop, predicted_responses
    from pipelines.worldmodel.weights import load_world_model

    start = time.perf_counter()
    world = load_world_model(weights_dir)
    if world.response is None:
        raise ConfigError(f"The world model in {weights_dir} has no response predictor (its dynamics model reads no "
                          "response token); nothing to evaluate.")
    cohort = regenerate_cohort(cohort_dir)
    records = read_manifest(cohort.root)
    n = len(records) if patients is None else int(patients)
    if not 2 <= n <= len(records):
        raise ConfigError(f"--patients must be between 2 and the cohort's {len(records)} patients, got {n}.")
    catalogue, probe = cohort_plan_space(), probe_plans()
    plans = catalogue + probe
    report_progress = resolve_progress(progress, "eval response", "patient")
    pred, true, skipped = [], [], 0
    for i in range(n):
        case = load_manifest_case(records[i])
        try:
            crop = fitting_crop(world, case)
        except LesionTooLargeError:
            skipped += 1
            continue
        pre = crop.image.as_tensor()[None].float()
        pre_labels = crop.labels[0].cpu().numpy().astype(np.uint8)
        voxel_ml = float(np.prod(crop.spacing)) / 1000.0
        pred.append(predicted_responses(world, case, pre, pre_labels, plans, voxel_ml).numpy())
        true.append([_truth(cohort.truths[i].patient, p) for p in plans])
        if report_progress is not None:
            report_progress(i + 1, n, case.case_id)
    if len(pred) < 2:
        raise ConfigError(f"Only {len(pred)} patient(s) could be cropped; the evaluation needs two or more.")
    pred_a, true_a = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    k = len(catalogue)
    figures = response_metrics(pred_a[:, :k], true_a[:, :k], pred_a[:, k:], true_a[:, k:])
    out = Path(out) if out is not None else world.weights_dir / "response" / "evaluation.json"
    command = command_line("eval", "response", cohort=cohort_dir, weights=weights_dir, patients=patients)
    seconds = time.perf_counter() - start
    report = {"metrics": figures, "command": command, "cohort": display_path(cohort_dir),
              "patients_evaluated": len(pred), "skipped": skipped, "catalogue_plans": k,
              "probe_drugs": list(PROBE_DRUGS), "machine": machine_info(), "seconds": seconds,
              "synthetic": True}
    write_report(report, out)
    m = report["machine"]
    rows = "\n".join(f"| {name} | {v['value']:.3f} | {v['baseline']:.3f} |" for name, v in figures.items())
    if update_card:
        update_card_section(world.weights_dir / "response" / "MODEL_CARD.md", "Evaluation", CARD_TEXT.format(
            date=time.strftime("%Y-%m-%d"), n=len(pred), n_plans=k, drugs=", ".join(PROBE_DRUGS), rows=rows,
            command=command, cohort=display_path(cohort_dir), skipped=skipped,
            machine=f"{m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}", seconds=seconds,
            report=display_path(out)))
    report["summary"] = [f"Response predictor on {len(pred)} held-out patients (synthetic cohort; research use "
                         "only):"] + [f"  {name}: {v['value']:.3f} (plan-average baseline {v['baseline']:.3f})"
                                      for name, v in figures.items()] + [f"  report: {display_path(out)}"]
    return report
