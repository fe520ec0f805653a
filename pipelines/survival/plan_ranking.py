"""How well a survival model ranks PLANS when the outcomes are right: planning with a perfect world model.

For the first ``patients`` patients of a virtual cohort, every plan of the cohort's plan space is rendered by the
simulator (`pipelines.cohort.counterfactual.render_counterfactual`: the post-treatment CT and labels that patient
WOULD have had under that plan), cropped like the world model's crops, labelled as the survival model was trained
(segmenter or true labels), and scored by ``model.predict(..., plan=plan)``. The predicted ranking of the plans
(log-risk, lower = better) is compared with the oracle's expected survival (RMST-60, ``oracle/oracle.csv``, read for
scoring only). This isolates the survival model's part of planning from the world model's errors: it is the
best the plan search can do with this survival model.

Per patient: Spearman correlation between −log-risk and the oracle's RMST over the plans, whether the predicted
best plan is the oracle's best (top-1) or among the predicted top three (top-3), and the regret (oracle RMST of the
oracle's best plan − that of the predicted best plan, months); baseline: the mean regret of a random plan.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ManifestError
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.survival.model import SurvivalModel
from pipelines.worldmodel.crops import CropConfig

__all__ = ["counterfactual_plan_ranking"]


def _oracle_table(cohort_dir: Path) -> dict[tuple[str, int], float]:
    path = cohort_dir / "oracle" / "oracle.csv"
    if not path.is_file():
        raise ManifestError(f"{cohort_dir} has no oracle/oracle.csv; plan ranking needs a virtual cohort made by "
                            "`mewm cohort generate`.")
    with path.open(newline="") as f:
        return {(r["case_id"], int(r["plan_index"])): float(r["expected_survival_months"]) for r in csv.DictReader(f)}


def counterfactual_plan_ranking(model: SurvivalModel, cohort_dir: str | os.PathLike, *, patients: int,
                                crop: CropConfig, post_labels: str, segmenter_dir: str | os.PathLike | None = None,
                                progress: bool | ProgressFn | None = None) -> dict[str, Any]:
    """Rank every plan of the plan space for the first ``patients`` patients (see the module doc).

    Returns:
        ``{"patients", "plans", "spearman", "top1", "top3", "regret_months", "random_regret_months", "rows"}``
        (means over patients; ``rows`` per patient).
    """
    from pipelines.cohort.counterfactual import regenerate_cohort, render_counterfactual
    from pipelines.manifest import load_manifest_case, read_manifest
    from pipelines.preprocess import unwindow_hu
    from pipelines.survival.data import default_segmenter_dir, post_labeller
    from pipelines.worldmodel.evaluate import _truth_crop
    from pipelines.worldmodel.metrics import spearman

    cohort_dir = Path(cohort_dir).expanduser()
    cohort = regenerate_cohort(cohort_dir)
    oracle = _oracle_table(cohort_dir)
    records = read_manifest(cohort_dir)
    patients = min(int(patients), len(records))
    labeller = None
    if post_labels != "true":
        seg_dir = Path(segmenter_dir).expanduser() if segmenter_dir is not None else default_segmenter_dir()
        labeller, _ = post_labeller(post_labels, seg_dir, crop)
    voxel_ml = float(np.prod(crop.spacing)) / 1000.0
    report = resolve_progress(progress, "plan ranking", "plan")
    total, done, rows = patients * len(cohort.plans), 0, []
    for i in range(patients):
        case, truth = load_manifest_case(records[i]), cohort.truths[i]
        pre_hu = pre_labels = pre_image = None
        posts, post_truth = [], []
        for plan in cohort.plans:
            sample = _truth_crop(case, render_counterfactual(truth, plan, cohort.size), crop)
            if pre_hu is None:
                pre_image = sample.image[0].numpy()
                pre_hu = unwindow_hu(pre_image)
                pre_labels = sample.labels[0].numpy().astype(np.uint8)
            posts.append(sample.post_image[0].numpy())
            post_truth.append(sample.post_labels[0].numpy().astype(np.uint8))
            done += 1
            if report:
                report(done, total, case.case_id)
        post = np.stack(posts)
        labels = (labeller(np.stack([pre_image] * len(post)), post, np.stack([pre_labels] * len(post)))
                  if labeller is not None else np.stack(post_truth))
        risk = np.array([model.predict(pre_hu, pre_labels, unwindow_hu(p)[None], lab[None], case.covariates, voxel_ml,
                                       plan=plan).log_risk[0]
                         for p, lab, plan in zip(post, labels, cohort.plans)])
        truth_rmst = np.array([oracle[(case.case_id, j)] for j in range(len(cohort.plans))])
        order = np.argsort(risk, kind="stable")
        best = int(np.argmax(truth_rmst))
        rows.append({"case_id": case.case_id, "spearman": spearman(-risk, truth_rmst),
                     "top1": bool(order[0] == best), "top3": bool(best in order[:3]),
                     "regret_months": float(truth_rmst[best] - truth_rmst[order[0]]),
                     "random_regret_months": float(truth_rmst[best] - truth_rmst.mean()),
                     "predicted_best": cohort.plans[order[0]].canonical(),
                     "oracle_best": cohort.plans[best].canonical()})

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    return {"patients": patients, "plans": len(cohort.plans), "post_labels": post_labels,
            "spearman": mean("spearman"), "top1": mean("top1"), "top3": mean("top3"),
            "regret_months": mean("regret_months"), "random_regret_months": mean("random_regret_months"),
            "rows": rows}
