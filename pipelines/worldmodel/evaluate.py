"""Held-out evaluation of the world model against the virtual cohort's truth (``mewm eval dynamics|segmentation``).

`evaluate_dynamics` is one recipe per patient of a held-out cohort (generated with another seed than training):

1. choose plans: the administered plan (with its doses) plus ``plans_per_patient - 1`` others of the cohort's plan
   space, drawn with a generator seeded by ``(seed, patient index)``;
2. simulate all of them in ONE batched call (`WorldModel.simulate`, T samples each);
3. render the counterfactual truth of every plan (`pipelines.cohort.counterfactual`; the evaluator may use the
   simulator, the models never do) and crop it with the same `preprocess_case` crop as the simulation; the
   regenerated pre-treatment CT must equal the cohort's file (a check, not an assumption);
4. per (patient, plan): predicted vs true viable-tumour change (ml) in the crop, Lipiodol Dice (plans with
   Lipiodol), mean/SD HU in the change region; the same figures for the **autoencoder ceiling** (the true post crop
   encoded, decoded, segmented and blended exactly like a simulation, `simulate.decode_and_segment`: what a perfect
   latent dynamics model would score through this autoencoder and segmenter); per patient: action sensitivity
   (`metrics.action_sensitivity`);

then across patients: Spearman of the volume changes (pooled, and within each patient across its plans: the order
plan choice needs), the realism C2ST (`c2st.classifier_two_sample_test`, true
post crops vs sample 0 of each simulation, patient-disjoint halves), and the same metrics for the trivial baseline
"post = pre", so that the figures have context. Intensities are compared inside the change region and in the
model's HU window [-175, 600] (both sides clipped alike). The C2ST sees only the change region (zero outside): the
model keeps the pre-treatment voxels outside it by design, and the true post CT is another contrast phase there,
which would make the test trivial without measuring what the model generates.

`evaluate_segmentation` scores the segmenter alone (Dice per structure, `metrics.DICE_STRUCTURES`) on the pre- and
post-treatment crops of the held-out cases. Both write a strict-JSON report and the "Evaluation" section of the
model card in the weights folder.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import load_checkpoint
from models.errors import ConfigError, GeometryMismatchError, LesionTooLargeError, ManifestError
from models.segmentation import CropSegmenter
from pipelines.case import Case, Covariates
from pipelines.cohort.counterfactual import choose_plans, regenerate_cohort, render_counterfactual
from pipelines.cohort.response import plan_parts
from pipelines.config import DEFAULT_STEPS
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.preprocess import crop_size_ladder, lesion_fits, preprocess_case, unwindow_hu, window_hu
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.volume import LABELS
from pipelines.worldmodel import metrics
from pipelines.worldmodel.c2st import classifier_two_sample_test
from pipelines.worldmodel.crops import WHOLE_LESION_STEP, CropConfig, embolic_group
from pipelines.worldmodel.regions import TUMOUR_LABELS
from pipelines.worldmodel.report import (command_line, display_path, machine_info, metric_entry,
                                         update_card_section, write_report)
from pipelines.worldmodel.simulate import STRUCTURES, decode_and_segment, segment_in_region
from pipelines.worldmodel.weights import TRAIN_COMMANDS, load_world_model

__all__ = ["TARGETS", "ScoredPatient", "choose_plans", "evaluate_dynamics", "evaluate_segmentation", "mean_of",
           "has_token", "score_patient", "spearman_of", "token_following", "within_patient_spearman"]

TARGETS = {"action_sensitivity_ratio": ">= 2", "action_sensitivity_outcome_ratio": ">= 2",
           "viable_change_spearman": ">= 0.7", "c2st_accuracy": "<= 0.70",
           "dice_liver": ">= 0.90", "dice_tumour": ">= 0.75"}
PRE_CT_TOLERANCE_HU = 0.5  # the cohort stores HU as int16: regenerated and stored CT differ by rounding only


def _truth_crop(case: Case, cf, crop: CropConfig | Any):
    """The counterfactual post pair cropped exactly like the simulation (same case, lesion and crop geometry)."""
    if np.max(np.abs(cf.ct.array - case.ct.array)) > PRE_CT_TOLERANCE_HU or not np.array_equal(
            cf.labels.array, case.labels.array):
        raise GeometryMismatchError(
            f"Case {case.case_id!r}: the regenerated pre-treatment CT/labels differ from the cohort's files, so the "
            "counterfactual truth would not belong to this image. Regenerate the cohort with this version's "
            "`mewm cohort generate`.")
    pair = Case(case_id=case.case_id, ct=case.ct, labels=case.labels, post_ct=cf.post_ct,
                post_labels=cf.post_labels)
    return preprocess_case(pair, spacing=crop.spacing, crop_size=crop.crop_size)


def _pair_row(case_id: str, plan, sim, truth_hu: np.ndarray, truth_labels: np.ndarray, pre_hu: np.ndarray,
              pre_labels: np.ndarray, region: np.ndarray, voxel_ml: float) -> dict[str, Any]:
    """Per-(patient, plan) figures of the model and of the post = pre baseline."""
    pre_viable = metrics.viable_volume_ml(pre_labels, voxel_ml)
    true_change = metrics.viable_volume_ml(truth_labels, voxel_ml) - pre_viable
    true_lip = truth_labels == LABELS["lipiodol"]
    embolics = plan_parts(plan)[1]
    has_lipiodol = "Lipiodol" in embolics
    true_mean, true_sd = metrics.hu_mean_sd(truth_hu, region)
    pred_stats = np.array([metrics.hu_mean_sd(h, region) for h in sim.crops_hu])
    pre_mean, pre_sd = metrics.hu_mean_sd(pre_hu, region)
    return {
        "case_id": case_id, "plan": plan.canonical(),
        "true_viable_change_ml": true_change,
        "pred_viable_change_ml": float(np.mean(sim.changes["viable_tumour"])),
        "pred_viable_change_sd_ml": float(np.std(sim.changes["viable_tumour"], ddof=1)) if len(sim.crops_hu) > 1
        else float("nan"),
        "embolics": embolic_group(plan),
        "true_necrosis_change_ml": metrics.label_volume_ml(truth_labels, LABELS["necrosis"], voxel_ml)
        - metrics.label_volume_ml(pre_labels, LABELS["necrosis"], voxel_ml),
        "pred_necrosis_change_ml": float(np.mean(sim.changes["necrosis"])),
        "has_lipiodol": has_lipiodol,
        "lipiodol_dice": (metrics.mean_finite(metrics.dice(lab == LABELS["lipiodol"], true_lip) for lab in sim.labels)
                          .mean if has_lipiodol else float("nan")),
        "baseline_lipiodol_dice": (metrics.dice(pre_labels == LABELS["lipiodol"], true_lip) if has_lipiodol
                                   else float("nan")),
        "true_lipiodol_ml": metrics.label_volume_ml(truth_labels, LABELS["lipiodol"], voxel_ml),
        "pred_lipiodol_ml": float(np.mean(sim.volumes["lipiodol"])),
        "baseline_lipiodol_ml": metrics.label_volume_ml(pre_labels, LABELS["lipiodol"], voxel_ml),
        "true_hu_mean": true_mean, "true_hu_sd": true_sd,
        "pred_hu_mean": float(pred_stats[:, 0].mean()), "pred_hu_sd": float(pred_stats[:, 1].mean()),
        "baseline_hu_mean": pre_mean, "baseline_hu_sd": pre_sd,
        **_token_row(sim, pre_labels, pre_viable, voxel_ml),
    }


def _token_row(sim, pre_labels: np.ndarray, pre_viable_ml: float, voxel_ml: float) -> dict[str, float]:
    """With a response-token model: the viable change (ml) of the response the samples were conditioned on (the
    predictor's viable fraction of the pre-treatment lesion), so a report can tell the response predictor's
    error from the renderer's; else nothing."""
    if sim.response is None:
        return {}
    lesion_ml = float(np.isin(pre_labels, TUMOUR_LABELS).sum()) * voxel_ml
    return {"token_viable_change_ml": sim.response["viable"] * lesion_ml - pre_viable_ml}


def has_token(rows: list[dict]) -> bool:
    """Whether every row carries the response token's viable change (`_token_row`)."""
    return bool(rows) and all("token_viable_change_ml" in r for r in rows)


def token_following(rows: list[dict]) -> metrics.MeanResult:
    """Mean over patients of the Spearman correlation between the simulated viable change and the response token's
    across that patient's plans: how faithfully the renderer draws the response it is given."""
    return within_patient_spearman(rows, "pred_viable_change_ml", against="token_viable_change_ml")


BIAS_FIGURES = (("viable", "viable_change_ml"), ("necrosis", "necrosis_change_ml"), ("lipiodol", "lipiodol_ml"))
# `evaluate_segmentation`: whole-crop HU offsets whose effect on the labels is reported.
HU_SHIFTS = (-40.0, -10.0, 10.0, 40.0)
BIAS_SOURCES = (("true", "true_"), ("sharp", "segmenter_ceiling_"), ("autoencoder", "ceiling_"), ("pred", "pred_"))


def bias_by_embolics(pairs: list[dict]) -> list[dict[str, Any]]:
    """Per embolic combination of the plans: the number of pairs, then the mean viable change, necrosis change and
    Lipiodol volume (ml) of the truth, the segmenter ceiling (sharp true post crops), the autoencoder ceiling and
    the simulation, and the simulation's viable-change Spearman. A kind of plan whose simulated outcome is too good
    or too bad pulls the plan search toward or away from it; the ceilings tell whether the measurement or the
    dynamics model is biased."""
    rows = []
    for name in sorted({r["embolics"] for r in pairs}):
        group = [r for r in pairs if r["embolics"] == name]
        row: dict[str, Any] = {"embolics": name, "pairs": len(group)}
        for short, key in BIAS_FIGURES:
            for source, prefix in BIAS_SOURCES:
                row[f"{source}_{short}_ml"] = mean_of(group, f"{prefix}{key}")
        row["viable_spearman"] = spearman_of(group, "pred_viable_change_ml")
        rows.append(row)
    return rows


def _masked(hu: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Windowed ``[-1, 1]`` image inside the change region, 0 outside (the C2ST input)."""
    return np.where(region, window_hu(np.asarray(hu, dtype=np.float32)), 0.0).astype(np.float32)


def _pooled_ratio(results: list) -> float:
    """Mean between-plan distance over mean within-plan distance, pooled over patients (``nan`` if undefined)."""
    within = float(np.mean([r.within_plan for r in results]))
    return float(np.mean([r.between_plans for r in results])) / within if within > 0 else float("nan")


def mean_of(rows: list[dict], key: str) -> float:
    """Mean of ``key`` over rows (``nan`` for none)."""
    return metrics.mean_finite(r[key] for r in rows).mean


def spearman_of(rows: list[dict], key: str) -> float:
    """Spearman of ``key`` vs the true viable change over ``rows`` (``nan`` for fewer than 3)."""
    return (metrics.spearman([r[key] for r in rows], [r["true_viable_change_ml"] for r in rows]) if len(rows) > 2
            else float("nan"))


def _mae(rows: list[dict], a: str, b: str) -> float:
    return metrics.mean_finite(abs(r[a] - r[b]) for r in rows).mean


def _autoencoder_ceiling(world, result, truth_crops) -> tuple[np.ndarray, np.ndarray]:
    """The true post crops of a patient's plans through the autoencoder and `decode_and_segment`: what a perfect
    dynamics model (one that predicts the true post latent) would score through this autoencoder and segmenter.

    Returns HU crops ``(P, X, Y, Z)`` and labels ``(P, X, Y, Z)``.
    """
    post = torch.stack([torch.as_tensor(tc.post_image).float() for tc in truth_crops])  # (P, 1, X, Y, Z)
    latents = torch.cat([world.autoencoder.encode(post[s:s + world.max_batch])
                         for s in range(0, len(post), world.max_batch)])
    pre = torch.as_tensor(result.crop.image).float()[None]
    decoded, labels = decode_and_segment(world, latents, pre, result.pre_labels, result.region)
    return unwindow_hu(decoded).numpy().astype(np.float32), labels.numpy()


def _segmenter_ceiling(world, result, truth_crops) -> np.ndarray:
    """The segmenter's labels of the sharp true post crops (no autoencoder), outside the change region the
    pre-treatment labels as in `decode_and_segment`: how well the measurement itself reads the truth.

    Returns labels ``(P, X, Y, Z)``.
    """
    post = torch.stack([torch.as_tensor(tc.post_image).float() for tc in truth_crops])  # (P, 1, X, Y, Z)
    return torch.cat([segment_in_region(world, post[s:s + world.max_batch], result.pre_labels, result.region)
                      for s in range(0, len(post), world.max_batch)]).numpy()


def _ceiling_row(hu: np.ndarray, labels: np.ndarray, sharp_labels: np.ndarray, truth_labels: np.ndarray,
                 pre_labels: np.ndarray, region: np.ndarray, voxel_ml: float, has_lipiodol: bool) -> dict[str, Any]:
    """Per-pair figures of the autoencoder ceiling (`_autoencoder_ceiling`) and of the segmenter ceiling
    (`_segmenter_ceiling`, ``sharp_labels``)."""
    mean, sd = metrics.hu_mean_sd(hu, region)
    pre_viable = metrics.viable_volume_ml(pre_labels, voxel_ml)
    pre_necrosis = metrics.label_volume_ml(pre_labels, LABELS["necrosis"], voxel_ml)
    return {"ceiling_viable_change_ml": metrics.viable_volume_ml(labels, voxel_ml) - pre_viable,
            "segmenter_ceiling_viable_change_ml": metrics.viable_volume_ml(sharp_labels, voxel_ml) - pre_viable,
            "ceiling_necrosis_change_ml": metrics.label_volume_ml(labels, LABELS["necrosis"], voxel_ml) - pre_necrosis,
            "segmenter_ceiling_necrosis_change_ml": metrics.label_volume_ml(sharp_labels, LABELS["necrosis"], voxel_ml)
            - pre_necrosis,
            "segmenter_ceiling_lipiodol_ml": metrics.label_volume_ml(sharp_labels, LABELS["lipiodol"], voxel_ml),
            "ceiling_lipiodol_dice": (metrics.dice(labels == LABELS["lipiodol"], truth_labels == LABELS["lipiodol"])
                                      if has_lipiodol else float("nan")),
            "ceiling_lipiodol_ml": metrics.label_volume_ml(labels, LABELS["lipiodol"], voxel_ml),
            "ceiling_hu_mean": mean, "ceiling_hu_sd": sd}


def within_patient_spearman(rows: list[dict], key: str,
                            against: str = "true_viable_change_ml") -> metrics.MeanResult:
    """Mean over patients of the Spearman correlation between ``key`` and ``against`` (default the true viable
    change) across that patient's plans (what plan choice needs: the right order of plans for one patient)."""
    return metrics.mean_finite(metrics.spearman([r[key] for r in rs], [r[against] for r in rs])
                               for rs in rows_by_case(rows).values())


def rows_by_case(rows: list[dict]) -> dict[str, list[dict]]:
    """``rows`` grouped by their ``case_id`` (patient), in order of first appearance."""
    by_case: dict[str, list[dict]] = {}
    for r in rows:
        by_case.setdefault(r["case_id"], []).append(r)
    return by_case


def patient_interval(rows: list[dict], statistic: Callable[[list[dict]], float], seed: int = 0) -> list[float | None]:
    """95% bootstrap interval of ``statistic(rows)`` with the patients (``case_id``) resampled, each with all its
    rows (`metrics.bootstrap_interval`)."""
    return metrics.bootstrap_interval(list(rows_by_case(rows).values()),
                                      lambda groups: statistic([r for g in groups for r in g]), seed)


@dataclasses.dataclass(frozen=True, eq=False)
class ScoredPatient:
    """One patient's plans simulated in one batched call and scored against the counterfactual truth."""

    result: Any  # `simulate.SimulationResult`
    rows: list[dict[str, Any]]  # per plan: `_pair_row` + `_ceiling_row` figures + ``enlarged_crop``
    truth_hu: list[np.ndarray]  # per plan: the true post crop (HU)
    ceiling_hu: np.ndarray  # (P, X, Y, Z) the true post crops through the autoencoder (HU)
    seconds: dict[str, float]  # "simulate" and "truth" (rendering, cropping, ceilings)


def score_patient(world, cohort, truth, case: Case, plans: list, *, samples: int, seed: int, steps: int,
                  guidance: float, without_labs: bool = False) -> ScoredPatient:
    """Steps 2-4 of the module's recipe for one patient: simulate ``plans`` in ONE batched call, render and crop
    their counterfactual truth, pass it through the autoencoder and segmenter (the ceilings) and compute the
    per-pair figures.

    Args:
        world: a loaded `WorldModel`. cohort: `regenerate_cohort` of the case's cohort; truth: its `CaseTruth`.
        case: the cohort's case (its files). plans: `Plan` objects the simulator has an effect model for.
        without_labs: simulate the case with its covariates removed (see `evaluate_dynamics`).

    Raises:
        LesionTooLargeError: the lesion does not fit the largest crop the model allows.
    """
    t0 = time.perf_counter()
    shown = dataclasses.replace(case, covariates=Covariates()) if without_labs else case
    result = world.simulate(shown, plans, samples=samples, seed=seed, steps=steps, guidance=guidance)
    t1 = time.perf_counter()
    voxel_ml = float(np.prod(result.crop.spacing)) / 1000.0
    pre_hu, pre_labels, region = result.pre_hu, result.pre_labels, result.region
    truth_crops = [_truth_crop(case, render_counterfactual(truth, plan, cohort.size), result.crop) for plan in plans]
    ceiling_hu, ceiling_labels = _autoencoder_ceiling(world, result, truth_crops)
    sharp_labels = _segmenter_ceiling(world, result, truth_crops)
    rows, truth_hus = [], []
    for k, (plan, sim, tc) in enumerate(zip(plans, result.plans, truth_crops)):
        truth_hu = unwindow_hu(tc.post_image[0].numpy())
        truth_labels = tc.post_labels[0].numpy()
        row = _pair_row(case.case_id, plan, sim, truth_hu, truth_labels, pre_hu, pre_labels, region, voxel_ml)
        rows.append({**row, **_ceiling_row(ceiling_hu[k], ceiling_labels[k], sharp_labels[k], truth_labels,
                                           pre_labels, region, voxel_ml, row["has_lipiodol"]),
                     "enlarged_crop": result.enlarged_crop})
        truth_hus.append(truth_hu)
    return ScoredPatient(result=result, rows=rows, truth_hu=truth_hus, ceiling_hu=ceiling_hu,
                         seconds={"simulate": t1 - t0, "truth": time.perf_counter() - t1})


def evaluate_dynamics(cohort_dir: str | os.PathLike, weights_dir: str | os.PathLike | None = None, *,
                      patients: int = 50, plans_per_patient: int = 4, samples: int = 3, seed: int = 0,
                      steps: int = DEFAULT_STEPS, guidance: float = 2.0, c2st_epochs: int = 5,
                      precision: str | None = None,
                      response_guidance: float | None = None, sampler: str | None = None,
                      out: str | os.PathLike | None = None, update_card: bool = True, without_labs: bool = False,
                      progress: bool | ProgressFn | None = None) -> dict[str, Any]:
    """Score the dynamics world model on a held-out virtual cohort (see the module docstring for the recipe).

    Args:
        cohort_dir: a cohort written by ``mewm cohort generate`` with a seed not used for training.
        weights_dir: world-model weights (default: the configured ``[worldmodel] weights_dir``).
        patients: how many patients (the first rows of the manifest; at most the cohort's size).
        plans_per_patient: plans per patient, the administered one included (>= 2 for action sensitivity).
        samples: T >= 2 samples per plan. seed: plan choice, sampling noise and the C2ST.
        steps, guidance: sampler steps and classifier-free guidance of `WorldModel.simulate`.
        precision: `WorldModel.precision` (default: the configured ``[worldmodel] precision``).
        response_guidance: `WorldModel.response_guidance` (default: the configured ``[worldmodel]
            response_guidance``).
        sampler: `WorldModel.sampler` (default: the configured ``[worldmodel] sampler``).
        c2st_epochs: training epochs of the C2ST classifier.
        out: JSON report path (default ``<weights>/dynamics/evaluation.json``).
        update_card: write the "Evaluation" section of ``<weights>/dynamics/MODEL_CARD.md``.
        without_labs: simulate every case with its covariates removed (an ablation of a model that reads labs,
            ``clinical_fields``: what it does for cases without them; no effect on a CT-and-plan model).
        progress: ``progress(done, total, message)`` per patient, ``True`` for a tqdm bar.

    Returns:
        the JSON-safe report: ``config``, ``cohort``, ``machine``, ``metrics`` (value, target, pass, baseline),
        ``pairs`` (per patient and plan), ``skipped`` (patients whose lesion does not fit the model's crop) and
        ``timing_s``.

    Raises:
        ManifestError: not a cohort of this simulator. CheckpointNotFoundError: missing or mismatched weights.
        ConfigError: ``patients`` beyond the cohort, ``samples < 2``, ``plans_per_patient < 2``, or fewer than two
            patients left to evaluate.
    """
    # 1. check inputs, load the cohort's truth and the model
    start = time.perf_counter()
    cohort = regenerate_cohort(cohort_dir)
    records = read_manifest(cohort.root)
    if not 2 <= patients <= len(records):
        raise ConfigError(f"evaluate_dynamics: patients={patients} but the cohort {cohort.root} has {len(records)}; "
                         f"use --patients between 2 and {len(records)} or generate a larger held-out cohort.")
    if samples < 2 or plans_per_patient < 2:
        raise ConfigError(f"evaluate_dynamics needs samples >= 2 and plans_per_patient >= 2 to compare plans with "
                         f"seeds, got samples={samples}, plans_per_patient={plans_per_patient}.")
    world = load_world_model(weights_dir, precision=precision, response_guidance=response_guidance, sampler=sampler)
    report_progress = resolve_progress(progress, "eval dynamics", "patient")
    pairs: list[dict] = []
    skipped: list[dict] = []
    sensitivity, outcome_sensitivity = [], []
    real, fake, base, ceiling, groups = [], [], [], [], []
    seconds = {"simulate": 0.0, "truth": 0.0}

    for i in range(patients):
        truth, case = cohort.truths[i], load_manifest_case(records[i])
        plans = choose_plans(truth.plan, cohort.plans, plans_per_patient, seed, i)
        # 2.-4. one batched simulation per patient, its counterfactual truth and per-pair figures
        try:
            scored = score_patient(world, cohort, truth, case, plans, samples=samples, seed=seed, steps=steps,
                                   guidance=guidance, without_labs=without_labs)
        except LesionTooLargeError as e:
            skipped.append({"case_id": case.case_id, "reason": str(e)})
            if report_progress:
                report_progress(i + 1, patients, f"{case.case_id} skipped")
            continue
        result, region = scored.result, scored.result.region
        for key in seconds:
            seconds[key] += scored.seconds[key]
        pairs.extend(scored.rows)
        if not result.enlarged_crop:  # the C2ST classifier takes one crop size: the training crop's
            for k, (sim, truth_hu) in enumerate(zip(result.plans, scored.truth_hu)):
                real.append(_masked(truth_hu, region))
                fake.append(_masked(sim.crops_hu[0], region))
                base.append(_masked(result.pre_hu, region))
                ceiling.append(_masked(scored.ceiling_hu[k], region))
                groups.append(case.case_id)
        outputs = np.stack([sim.crops_hu for sim in result.plans])  # (P, T, X, Y, Z)
        sensitivity.append(metrics.action_sensitivity(outputs, region))
        outcomes = np.stack([np.stack([sim.volumes[k] for k in STRUCTURES], axis=-1)
                             for sim in result.plans])  # (P, T, 3) ml
        outcome_sensitivity.append(metrics.action_sensitivity(outcomes))
        if report_progress:
            report_progress(i + 1, patients, case.case_id)
    evaluated = len({r["case_id"] for r in pairs})
    if evaluated < 2:
        raise ConfigError(f"evaluate_dynamics: only {evaluated} of {patients} patients could be simulated "
                         f"({len(skipped)} lesions larger than the model's crop); use a larger --patients.")

    # 5. across patients: correlations, realism, baselines
    t0 = time.perf_counter()
    c2st = classifier_two_sample_test(np.stack(real), np.stack(fake), groups, groups, seed=seed, epochs=c2st_epochs)
    c2st_base = classifier_two_sample_test(np.stack(real), np.stack(base), groups, groups, seed=seed,
                                           epochs=c2st_epochs)
    c2st_ceiling = classifier_two_sample_test(np.stack(real), np.stack(ceiling), groups, groups, seed=seed,
                                              epochs=c2st_epochs)
    seconds["c2st"] = time.perf_counter() - t0
    between = float(np.mean([s.between_plans for s in sensitivity]))
    within = float(np.mean([s.within_plan for s in sensitivity]))
    true_change = [r["true_viable_change_ml"] for r in pairs]
    by_crop = {name: [r for r in pairs if r["enlarged_crop"] == flag] for name, flag in (("training", False),
                                                                                         ("enlarged", True))}
    lip_rows = [r for r in pairs if r["has_lipiodol"]]
    lip = metrics.mean_finite(r["lipiodol_dice"] for r in lip_rows)
    no_lip_rows = [r for r in pairs if not r["has_lipiodol"]]
    within_patient = within_patient_spearman(pairs, "pred_viable_change_ml")
    m = {
        "action_sensitivity_ratio": metric_entry(
            between / within if within > 0 else float("nan"), TARGETS["action_sensitivity_ratio"],
            baseline=float("nan"), between_plans_hu=between, within_plan_hu=within,
            per_patient_median=float(np.median([s.ratio for s in sensitivity])),
            note="mean pairwise L2 (HU, change region) between plan means / between samples of one plan; the "
                 "baseline has no spread (0 / 0)"),
        "action_sensitivity_outcome_ratio": metric_entry(
            _pooled_ratio(outcome_sensitivity), TARGETS["action_sensitivity_outcome_ratio"], baseline=float("nan"),
            between_plans_ml=float(np.mean([s.between_plans for s in outcome_sensitivity])),
            within_plan_ml=float(np.mean([s.within_plan for s in outcome_sensitivity])),
            per_patient_median=float(np.median([s.ratio for s in outcome_sensitivity])),
            note="the same ratio on what the segmenter measures in each simulated crop: the vector of viable "
                 "tumour, necrosis and Lipiodol volumes (ml), so sampled voxel texture does not count as a "
                 "difference"),
        "viable_change_spearman": metric_entry(
            spearman_of(pairs, "pred_viable_change_ml"), TARGETS["viable_change_spearman"],
            baseline=metrics.spearman([0.0] * len(pairs), true_change),
            ceiling=spearman_of(pairs, "ceiling_viable_change_ml"),
            segmenter_ceiling=spearman_of(pairs, "segmenter_ceiling_viable_change_ml"),
            interval_95=patient_interval(pairs, lambda rs: spearman_of(rs, "pred_viable_change_ml"), seed),
            n_pairs=len(pairs), note="predicted (mean over samples) vs true viable-tumour change in the crop, ml; "
                                     "the baseline predicts no change (undefined correlation); ceiling: the true "
                                     "post crops through the autoencoder and segmenter; segmenter_ceiling: the "
                                     "sharp true post crops through the segmenter alone (how well the measurement "
                                     "reads the truth)",
            **{f"{name}_crop_{k}": v for name, rows in by_crop.items() for k, v in (
                ("pairs", len(rows)),
                ("spearman", spearman_of(rows, "pred_viable_change_ml")),
                ("ceiling", spearman_of(rows, "ceiling_viable_change_ml")),
                ("segmenter_ceiling", spearman_of(rows, "segmenter_ceiling_viable_change_ml")))}),
        "viable_change_within_patient_spearman": metric_entry(
            within_patient.mean, baseline=float("nan"), patients=within_patient.n,
            interval_95=patient_interval(
                pairs, lambda rs: within_patient_spearman(rs, "pred_viable_change_ml").mean, seed),
            ceiling=within_patient_spearman(pairs, "ceiling_viable_change_ml").mean,
            note="mean over patients of the Spearman correlation across that patient's plans (the order plan choice "
                 "needs; -1 = reversed); ceiling = the true post crops through the autoencoder and segmenter"),
        "viable_change_mae_ml": metric_entry(
            _mae(pairs, "pred_viable_change_ml", "true_viable_change_ml"),
            baseline=metrics.mean_finite(abs(c) for c in true_change).mean,
            ceiling=_mae(pairs, "ceiling_viable_change_ml", "true_viable_change_ml"),
            segmenter_ceiling=_mae(pairs, "segmenter_ceiling_viable_change_ml", "true_viable_change_ml")),
        "lipiodol_dice": metric_entry(lip.mean, baseline=metrics.mean_finite(
            r["baseline_lipiodol_dice"] for r in lip_rows).mean, n_pairs=lip.n,
            ceiling=metrics.mean_finite(r["ceiling_lipiodol_dice"] for r in lip_rows).mean,
            note="plans with Lipiodol; pairs where neither side has Lipiodol are undefined and left out"),
        "false_lipiodol_ml": metric_entry(
            mean_of(no_lip_rows, "pred_lipiodol_ml"), baseline=mean_of(no_lip_rows, "baseline_lipiodol_ml"),
            ceiling=mean_of(no_lip_rows, "ceiling_lipiodol_ml"), true=mean_of(no_lip_rows, "true_lipiodol_ml"),
            n_pairs=len(no_lip_rows),
            with_lipiodol_ml=mean_of(lip_rows, "pred_lipiodol_ml"),
            true_with_lipiodol_ml=mean_of(lip_rows, "true_lipiodol_ml"),
            note="mean Lipiodol volume (ml) the segmenter finds in simulations of plans WITHOUT Lipiodol (bland or "
                 "drug-eluting beads), where the truth has none to speak of; with_lipiodol_ml: the same under "
                 "Lipiodol plans, for scale"),
        "hu_mean_abs_error": metric_entry(_mae(pairs, "pred_hu_mean", "true_hu_mean"),
                                          baseline=_mae(pairs, "baseline_hu_mean", "true_hu_mean"),
                                          ceiling=_mae(pairs, "ceiling_hu_mean", "true_hu_mean"),
                                          true=float(np.mean([r["true_hu_mean"] for r in pairs])),
                                          predicted=float(np.mean([r["pred_hu_mean"] for r in pairs]))),
        "hu_sd_abs_error": metric_entry(_mae(pairs, "pred_hu_sd", "true_hu_sd"),
                                        baseline=_mae(pairs, "baseline_hu_sd", "true_hu_sd"),
                                        ceiling=_mae(pairs, "ceiling_hu_sd", "true_hu_sd"),
                                        true=float(np.mean([r["true_hu_sd"] for r in pairs])),
                                        predicted=float(np.mean([r["pred_hu_sd"] for r in pairs]))),
        "c2st_accuracy": metric_entry(c2st.accuracy, TARGETS["c2st_accuracy"], baseline=c2st_base.accuracy,
                                      ceiling=c2st_ceiling.accuracy,
                                      n_train=c2st.n_train, n_test=c2st.n_test, epochs=c2st.epochs,
                                      note="true post crops vs sample 0 of each simulation, change region only, "
                                           "patient-disjoint halves, patients simulated in the training crop only "
                                           "(one input size); 0.5 = indistinguishable; ceiling: true post crops vs "
                                           "the same crops through the autoencoder (what its blur alone gives away)"),
    }
    if has_token(pairs):
        m["response_token_viable_change_spearman"] = metric_entry(
            spearman_of(pairs, "token_viable_change_ml"), baseline=float("nan"), n_pairs=len(pairs),
            within_patient=within_patient_spearman(pairs, "token_viable_change_ml").mean,
            mae_ml=_mae(pairs, "token_viable_change_ml", "true_viable_change_ml"),
            note="the response predictor's viable change (its viable fraction of the pre-treatment lesion, the "
                 "token the samples were conditioned on) vs the true one: what the renderer is told")
        following = token_following(pairs)
        m["response_token_following"] = metric_entry(
            following.mean, baseline=float("nan"), patients=following.n,
            pooled=metrics.spearman([r["pred_viable_change_ml"] for r in pairs],
                                    [r["token_viable_change_ml"] for r in pairs]),
            note="mean over patients of the Spearman correlation of the simulated viable change with the token's "
                 "across that patient's plans (pooled: over all pairs): how faithfully the renderer draws it")
    seconds["total"] = time.perf_counter() - start
    seconds["per_plan"] = seconds["simulate"] / len(pairs)

    # 6. the report, its JSON file and the model card
    command = command_line("eval", "dynamics", cohort=cohort.root, weights=world.weights_dir, patients=patients,
                           plans=plans_per_patient, samples=samples, seed=seed, steps=steps,
                           guidance=guidance, response_guidance=world.token_guidance,
                           precision=world.precision, sampler=world.sampler)
    command += " --without-labs" if without_labs else ""
    report = {
        "kind": "dynamics-evaluation", "baseline": "post = pre", "command": command, "weights": str(world.weights_dir),
        "cohort": {"path": display_path(cohort.root), "seed": cohort.seed, "n": len(records), "grid": list(cohort.size)},
        "config": {"patients": patients, "patients_evaluated": evaluated, "plans_per_patient": plans_per_patient,
                   "samples": samples, "seed": seed, "steps": steps, "guidance": guidance,
                   "response_guidance": world.token_guidance, "precision": world.precision,
                   "sampler": world.sampler,
                   "without_labs": without_labs,
                   "clinical_fields": list(world.dynamics.config.get("clinical_fields") or []),
                   "c2st_epochs": c2st_epochs, "crop": world.crop.to_dict(),
                   "max_crop_voxels": world.max_crop_voxels, "change_margin_mm": world.change_margin_mm},
        "machine": machine_info(), "metrics": m, "bias_by_embolics": bias_by_embolics(pairs), "pairs": pairs,
        "skipped": skipped, "timing_s": seconds,
    }
    out = Path(out) if out is not None else world.weights_dir / "dynamics" / "evaluation.json"
    write_report(report, out)
    if update_card:
        update_card_section(world.weights_dir / "dynamics" / "MODEL_CARD.md", "Evaluation",
                            _card_text(report, out))
    return metrics.json_safe(report)


# ------------------------------------------------------------------------------------------------ segmentation
def _load_segmenter(weights_dir) -> tuple[CropSegmenter, CropConfig, Path]:
    if weights_dir is None:
        from pipelines.config import load_config

        weights_dir = load_config().worldmodel.weights_dir
    root = Path(weights_dir).expanduser()
    model, meta = load_checkpoint(root / "segmentation", kind="segmentation", build=lambda c: CropSegmenter(**c),
                                  command=TRAIN_COMMANDS["segmentation"])
    crop = meta.extra.get("crop") or {}
    if "spacing" not in crop or "size" not in crop:
        from models.errors import CheckpointNotFoundError

        raise CheckpointNotFoundError(f"The segmentation checkpoint in {root / 'segmentation'} records no crop "
                                      f"geometry (extra['crop']); re-make it with `{TRAIN_COMMANDS['segmentation']}`.")
    return model, CropConfig(tuple(crop["spacing"]), tuple(crop["size"])), root


def _hu_shift_row(model: CropSegmenter, x: torch.Tensor, pred: np.ndarray, truth: np.ndarray) -> dict[str, dict]:
    """The segmenter's labels of the crop ``x`` (windowed ``(1, 1, *S)``) with every voxel shifted by each of
    `HU_SHIFTS`: the share of true-tumour voxels whose label changes against ``pred`` (its labels of the unshifted
    crop) and the tumour Dice. A scanner's calibration or the contrast timing moves real CT by this much, and a
    decoded crop's intensity errors are of this size (the dynamics card's HU error)."""
    tumour = np.isin(truth, metrics.DICE_STRUCTURES["tumour"])
    hu = unwindow_hu(x)
    out = {}
    for shift in HU_SHIFTS:
        shifted = model.predict(window_hu(hu + shift))[0].numpy()
        out[f"{shift:+g}"] = {
            "relabelled_tumour": float((shifted != pred)[tumour].mean()) if tumour.any() else float("nan"),
            "dice_tumour": metrics.dice_per_structure(shifted, truth)["tumour"]}
    return out


@torch.no_grad()
def _whole_lesion_rows(model, case: Case, crop: CropConfig, largest: int, sample=None) -> list[dict[str, Any]]:
    """For a lesion larger than the training ``crop``: Dice per structure and the viable volume read over the
    labels' (pre and post) in the smallest crop of `crop_size_ladder` (steps of `WHOLE_LESION_STEP`, up to
    ``largest``) that holds it, where `simulate` measures it; ``[]`` for a lesion that fits (or fits none).
    ``sample``: the case's `preprocess_case` in ``crop`` when already made."""
    sample = sample if sample is not None else preprocess_case(case, spacing=crop.spacing, crop_size=crop.crop_size)
    if lesion_fits(case, sample):
        return []
    for size in crop_size_ladder(crop.crop_size, WHOLE_LESION_STEP, max(largest, max(crop.crop_size)))[1:]:
        sample = preprocess_case(case, spacing=crop.spacing, crop_size=size)
        if lesion_fits(case, sample):
            break
    else:
        return []
    rows = []
    for phase, image, labels in (("pre", sample.image, sample.labels), ("post", sample.post_image, sample.post_labels)):
        if image is None or labels is None:
            continue
        pred = model.predict(image.as_tensor()[None].float())[0].numpy()
        truth = labels[0].numpy()
        viable = int((truth == LABELS["tumour"]).sum())
        rows.append({"case_id": case.case_id, "phase": phase, "crop_size": list(size),
                     **metrics.dice_per_structure(pred, truth),
                     "viable_ratio": float((pred == LABELS["tumour"]).sum() / viable) if viable else float("nan")})
    return rows


def evaluate_segmentation(cohort_dir: str | os.PathLike, weights_dir: str | os.PathLike | None = None, *,
                          patients: int | None = None, out: str | os.PathLike | None = None,
                          update_card: bool = True, progress: bool | ProgressFn | None = None) -> dict[str, Any]:
    """Dice per structure of the segmenter on the pre- and post-treatment crops of held-out cases.

    The baseline labels every voxel of the crop liver: in a tumour-centred crop the liver fills most of the field,
    so liver Dice is only meaningful next to it. Lesions larger than the training crop are also scored whole, in
    the larger crop `simulate` measures them in (``whole_lesion``: Dice per structure, and the viable volume read
    over the labels', pre and post; up to ``[worldmodel] max_crop_voxels``).

    Args:
        cohort_dir: a manifest folder whose cases have labels (and post pairs, scored when present).
        weights_dir: world-model weights (only ``segmentation/`` is read).
        patients: the first N cases (default all).
        out: JSON report path (default ``<weights>/segmentation/evaluation.json``).
        update_card: write the "Evaluation" section of ``<weights>/segmentation/MODEL_CARD.md``.

    Returns:
        the JSON-safe report: ``metrics`` per structure (mean Dice over pre and post crops, and each apart),
        ``cases`` (per case and phase), ``config``, ``machine``, ``timing_s``.
    """
    start = time.perf_counter()
    records = read_manifest(cohort_dir)
    n = len(records) if patients is None else int(patients)
    if not 1 <= n <= len(records):
        raise ConfigError(f"evaluate_segmentation: patients={patients} but {cohort_dir} has {len(records)} cases.")
    model, crop, root = _load_segmenter(weights_dir)
    from pipelines.config import load_config

    largest = load_config().worldmodel.max_crop_voxels
    report_progress = resolve_progress(progress, "eval segmentation", "case")
    rows, whole_rows = [], []
    for i, record in enumerate(records[:n]):
        case = load_manifest_case(record)
        if case.labels is None:
            raise ManifestError(f"Case {case.case_id!r} of {cohort_dir} has no labels to score against.")
        sample = preprocess_case(case, spacing=crop.spacing, crop_size=crop.crop_size)
        for phase, image, labels in (("pre", sample.image, sample.labels),
                                     ("post", sample.post_image, sample.post_labels)):
            if image is None or labels is None:
                continue
            x = image.as_tensor()[None].float()
            pred = model.predict(x)[0].numpy()
            truth = labels[0].numpy()
            rows.append({"case_id": case.case_id, "phase": phase, **metrics.dice_per_structure(pred, truth),
                         "baseline": metrics.dice_per_structure(np.full_like(truth, LABELS["liver"]), truth),
                         "hu_shift": _hu_shift_row(model, x, pred, truth)})
        whole_rows += _whole_lesion_rows(model, case, crop, largest, sample)
        if report_progress:
            report_progress(i + 1, n, case.case_id)
    m = {}
    for name in metrics.DICE_STRUCTURES:
        target = TARGETS.get(f"dice_{name}")
        per_phase = {phase: metrics.mean_finite(r[name] for r in rows if r["phase"] == phase) for phase in
                     ("pre", "post")}
        overall = metrics.mean_finite(r[name] for r in rows)
        baseline = metrics.mean_finite(r["baseline"][name] for r in rows).mean
        m[f"dice_{name}"] = metric_entry(overall.mean, target, baseline=baseline, n=overall.n,
                                         pre=per_phase["pre"].mean, post=per_phase["post"].mean)
    hu_shift = {f"{shift:+g}": {key: metrics.mean_finite(r["hu_shift"][f"{shift:+g}"][key] for r in rows).mean
                                for key in ("relabelled_tumour", "dice_tumour")} for shift in HU_SHIFTS}
    whole = {"cases": len({r["case_id"] for r in whole_rows}), "max_crop_voxels": largest,
             **{f"dice_{name}": {phase: metrics.mean_finite(r[name] for r in whole_rows if r["phase"] == phase).mean
                                 for phase in ("pre", "post")} for name in metrics.DICE_STRUCTURES},
             "viable_ratio": {phase: metrics.mean_finite(r["viable_ratio"] for r in whole_rows
                                                         if r["phase"] == phase).mean for phase in ("pre", "post")},
             "rows": whole_rows}
    command = command_line("eval", "segmentation", cohort=Path(cohort_dir).expanduser().resolve(),
                           weights=root, patients=patients)
    report = {"kind": "segmentation-evaluation", "baseline": "every voxel liver", "command": command,
              "weights": str(root),
              "cohort": {"path": display_path(cohort_dir), "n": len(records)},
              "config": {"patients": n, "crop": crop.to_dict()}, "machine": machine_info(), "metrics": m,
              "hu_shift": hu_shift, "whole_lesion": whole, "cases": rows,
              "timing_s": {"total": time.perf_counter() - start}}
    out = Path(out) if out is not None else root / "segmentation" / "evaluation.json"
    write_report(report, out)
    if update_card:
        update_card_section(root / "segmentation" / "MODEL_CARD.md", "Evaluation", _card_text(report, out))
    return metrics.json_safe(report)


# ------------------------------------------------------------------------------------------------ model cards
def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _fmt_ml(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{value:.1f}"


def _card_text(report: dict[str, Any], out: Path) -> str:
    """Markdown of a report: the table of metrics (value, target, pass, baseline), command, cohort, machine."""
    machine = report["machine"]
    columns = [(key, title) for key, title in (("ceiling", "autoencoder ceiling"),
                                               ("segmenter_ceiling", "segmenter ceiling"))
               if any(key in e for e in report["metrics"].values())]
    lines = ["Held-out evaluation on a virtual cohort (synthetic data; not a clinical validation).", "",
             f"| metric | value | target | pass | baseline ({report['baseline']}) |"
             + "".join(f" {title} |" for _, title in columns), "|---|---|---|---|---|" + "---|" * len(columns)]
    for name, e in report["metrics"].items():
        passed = {True: "yes", False: "**no**", None: "–"}[e["pass"]]
        lines.append(f"| {name} | {_fmt(e['value'])} | {e['target'] or '–'} | {passed} | {_fmt(e.get('baseline'))} |"
                     + "".join(f" {_fmt(e[key]) if key in e else '–'} |" for key, _ in columns))
    if columns:
        lines += ["", "Autoencoder ceiling: the true post-treatment crops encoded and decoded by the autoencoder, "
                      "segmented and blended exactly like a simulation: what a dynamics model that predicted the true "
                      "latent would score with this autoencoder and segmenter."
                  + (" Segmenter ceiling: the sharp true post-treatment crops through the segmenter alone: how well "
                     "the measurement reads the truth without the autoencoder." if len(columns) > 1 else "")]
    cohort = report["cohort"]
    lines += ["", f"- Command: `{report['command']}`",
              f"- Cohort: {cohort['path']} ({cohort['n']} cases"
              + (f", seed {cohort['seed']}, grid {'x'.join(map(str, cohort['grid']))}" if "seed" in cohort else "")
              + ")",
              f"- Config: {', '.join(f'{k}={v}' for k, v in report['config'].items() if not isinstance(v, dict))}",
              f"- Machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch {machine['torch']} "
              f"({machine['torch_threads']} threads){', GPU ' + machine['cuda'] if machine['cuda'] else ''}",
              f"- Time: {report['timing_s']['total']:.0f} s; full report: `{out.name}`"]
    intervals = [f"{name} [{_fmt(e['interval_95'][0])}, {_fmt(e['interval_95'][1])}]"
                 for name, e in report["metrics"].items() if e.get("interval_95")]
    if intervals:
        lines.append(f"- 95% intervals (patients resampled with replacement, {metrics.BOOTSTRAP_SAMPLES} times): "
                     + "; ".join(intervals))
    sp = report["metrics"].get("viable_change_spearman", {})
    if sp.get("enlarged_crop_pairs"):
        enlarged = len({r["case_id"] for r in report["pairs"] if r.get("enlarged_crop")})
        lines.append(f"- Lesions larger than the training crop: {enlarged} patient(s) simulated in an enlarged crop "
                     f"(same voxel size, up to {report['config'].get('max_crop_voxels')} voxels a side); "
                     f"viable-change Spearman {_fmt(sp['training_crop_spearman'])} on the "
                     f"{sp['training_crop_pairs']} training-crop pairs, {_fmt(sp['enlarged_crop_spearman'])} on the "
                     f"{sp['enlarged_crop_pairs']} enlarged-crop pairs"
                     + (f" (autoencoder ceiling {_fmt(sp['training_crop_ceiling'])} / "
                        f"{_fmt(sp['enlarged_crop_ceiling'])}, segmenter ceiling "
                        f"{_fmt(sp['training_crop_segmenter_ceiling'])} / "
                        f"{_fmt(sp['enlarged_crop_segmenter_ceiling'])})"
                        if "training_crop_segmenter_ceiling" in sp else "")
                     + "; the C2ST uses training-crop patients only")
    if report.get("skipped"):
        lines.append(f"- Skipped: {len(report['skipped'])} patient(s) whose lesion does not fit the largest allowed "
                     "crop")
    if report.get("hu_shift"):
        lines += ["", "Every voxel of the crop shifted by a fixed HU offset (scanner calibration and contrast timing "
                      "move real CT by this much; decoded crops err by about 13 HU): the share of true-tumour voxels "
                      "whose label changes, and the tumour Dice.", "",
                  "| shift (HU) | tumour voxels relabelled | tumour Dice |", "|---|---|---|"]
        for shift, r in report["hu_shift"].items():
            lines.append(f"| {shift} | {_fmt(r['relabelled_tumour'])} | {_fmt(r['dice_tumour'])} |")
    whole = report.get("whole_lesion")
    if whole and whole.get("cases"):
        lines += ["", f"Lesions larger than the training crop, scored whole in the larger crop `simulate` measures them "
                      f"in ({whole['cases']} case(s), up to {whole['max_crop_voxels']} voxels a side; pre / post):", "",
                  "| structure | Dice (pre / post) |", "|---|---|"]
        for name in metrics.DICE_STRUCTURES:
            d = whole[f"dice_{name}"]
            lines.append(f"| {name} | {_fmt(d['pre'])} / {_fmt(d['post'])} |")
        lines.append(f"| viable volume read / labels | {_fmt(whole['viable_ratio']['pre'])} / "
                     f"{_fmt(whole['viable_ratio']['post'])} |")
    if report.get("bias_by_embolics"):
        lines += ["", "By the plans' embolics (mean over pairs, ml: true / segmenter ceiling / autoencoder ceiling / "
                      "simulated): a kind of plan whose simulated outcome is too good or too bad pulls the plan "
                      "search toward or away from it; the ceilings tell whether the measurement or the dynamics model "
                      "is biased.", "",
                  "| embolics | pairs | viable change | necrosis change | Lipiodol | viable Spearman (simulated) |",
                  "|---|---|---|---|---|---|"]
        for r in report["bias_by_embolics"]:
            lines.append(f"| {r['embolics']} | {r['pairs']} | " + " | ".join(
                " / ".join(_fmt_ml(r.get(f"{source}_{k}_ml")) for source, _ in BIAS_SOURCES) for k, _ in BIAS_FIGURES)
                + f" | {_fmt(r['viable_spearman'])} |")
    return "\n".join(lines)
