"""`evaluate_realdata` (`mewm eval realdata`): what an imported real cohort can and cannot tell about the models.

Measured per case on the world model's tumour-centred crop, from three sources of post-treatment labels:

- ``none``: no post-treatment image (the post labels are the pre-treatment ones): pre-treatment tumour + covariates;
- ``simulated``: the world model's simulation of the *administered* plan (`WorldModel.simulate`, ``samples`` draws,
  features averaged over them), segmented by its segmenter: what planning would see;
- ``observed``: the registered follow-up's labels from `mewm register` (segmenter pseudo-labels): a reference for
  how much a real post-treatment image adds.

1. Survival: the `pipelines.survival.features` of each source, a lifelines Cox model (ridge penalty, the survival
   package's recipe), and Harrell's C-index on OS: cross-validated (``folds`` folds) when the cohort has at least
   5 cases per fold, otherwise the *apparent* (in-sample) C-index, labelled as such: on a handful of cases it only
   shows the pipeline runs, never how good a model is.
2. Response: the mRECIST category implied by the viable-tumour change of each source (diameter ratio = volume
   ratio^(1/3): no viable tumour CR, ≤ 0.7 PR, ≥ 1.2 PD, else SD) against the readers' majority: accuracy over the
   four categories, responder (CR/PR) accuracy, and the AUC of viable shrinkage for responders.
3. Plan choice: **not evaluable** here: each patient received one regimen and nobody observed what another would
   have done (no counterfactuals). The report says so; the virtual cohort's oracle (`mewm eval planning`) is where
   plan choice is scored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ManifestError
from pipelines.config import DEFAULT_STEPS
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.volume import LABELS

__all__ = ["SOURCES", "PLAN_CHOICE_STATEMENT", "mrecist_from_ratio", "evaluate_realdata"]

SOURCES = ("none", "simulated", "observed")
PLAN_CHOICE_STATEMENT = (
    "Plan choice cannot be judged against truth on a real observational cohort: each patient received one regimen "
    "chosen by the physicians, and the outcome under any other plan was never observed (no counterfactuals). "
    "Agreement with the administered regimen is not a measure of quality. Plan choice is scored only on the virtual "
    "cohort, whose oracle knows every plan's expected survival (`mewm eval planning`).")
MIN_CASES_PER_FOLD = 5


def mrecist_from_ratio(viable_pre_ml: float, viable_post_ml: float) -> str:
    """The mRECIST category implied by a viable-tumour volume change (see the module docstring)."""
    if viable_post_ml <= 0:
        return "CR"
    d = (viable_post_ml / max(viable_pre_ml, 1e-9)) ** (1 / 3)
    return "PR" if d <= 0.7 else ("PD" if d >= 1.2 else "SD")


def _auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    pos, neg = score[positive], score[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def _c_index(features: list[dict[str, float]], time: np.ndarray, event: np.ndarray, folds: int,
             seed: int) -> dict[str, Any]:
    import pandas as pd
    from lifelines import CoxPHFitter
    from lifelines.utils import concordance_index, k_fold_cross_validation

    from pipelines.survival.cox import COX_PENALIZER

    names = list(features[0])
    x = np.array([[f[n] for n in names] for f in features], dtype=np.float64)
    finite = np.isfinite(x)
    counts = finite.sum(axis=0)
    means = np.where(counts > 0, np.where(finite, x, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)
    keep = counts > 0  # a covariate no case has (HCC-TACE-Seg has no albumin/bilirubin) is left out
    x = np.where(np.isfinite(x), x, means[None, :])[:, keep]
    names = [n for n, k in zip(names, keep) if k]
    sd = x.std(axis=0)
    x, names = x[:, sd > 1e-12], [n for n, s in zip(names, sd) if s > 1e-12]
    if not names:
        return {"value": None, "kind": None, "features": [], "why": "no feature varies across the cases"}
    df = pd.DataFrame((x - x.mean(0)) / x.std(0), columns=names)
    df["time"], df["event"] = time, event.astype(int)
    if len(df) >= MIN_CASES_PER_FOLD * folds and folds >= 2:
        scores = k_fold_cross_validation(CoxPHFitter(penalizer=COX_PENALIZER), df, duration_col="time",
                                         event_col="event", k=folds, scoring_method="concordance_index", seed=seed)
        return {"value": round(float(np.mean(scores)), 4), "kind": f"{folds}-fold cross-validated",
                "folds": [round(float(s), 4) for s in scores], "features": names}
    cph = CoxPHFitter(penalizer=COX_PENALIZER).fit(df, duration_col="time", event_col="event")
    risk = cph.predict_partial_hazard(df).to_numpy()
    return {"value": round(float(concordance_index(time, -risk, event)), 4), "features": names,
            "kind": f"apparent (in-sample): {len(df)} cases are too few for {folds}-fold cross-validation "
                    f"(needs {MIN_CASES_PER_FOLD * folds}); this only shows the pipeline runs"}


def evaluate_realdata(cohort: str | os.PathLike, *, weights_dir: str | os.PathLike | None = None,
                      out: str | os.PathLike | None = None, folds: int = 5, samples: int = 1,
                      steps: int = DEFAULT_STEPS,
                      seed: int = 0, config: Any = None,
                      progress: bool | ProgressFn | None = True) -> dict[str, Any]:
    """Evaluate on an imported (and registered) cohort; writes and returns the JSON report (module docstring).

    Raises:
        ManifestError: no manifest, or fewer than 3 cases with a tumour, an outcome and a death.
        CheckpointNotFoundError: no world model in ``weights_dir``.
    """
    from pipelines.config import resolve_config
    from pipelines.manifest import load_manifest_case, read_manifest
    from pipelines.preprocess import preprocess_case
    from pipelines.survival.features import outcome_features
    from pipelines.worldmodel.weights import load_world_model

    # 1. cases with an outcome; the world model once
    cohort = Path(cohort).expanduser()
    cohort = cohort.parent if cohort.suffix == ".csv" else cohort
    records = [r for r in read_manifest(cohort) if r.time_months is not None and r.event is not None]
    config = resolve_config(config)
    world = load_world_model(weights_dir or config.worldmodel.weights_dir)
    crop = world.crop
    report_progress = resolve_progress(progress, "eval realdata", "case")
    rows: list[dict[str, Any]] = []
    for n, record in enumerate(records):
        case = load_manifest_case(record, config=config)
        info = json.loads(Path(record.clinical).read_text()) if record.clinical else {}
        if case.plan is None:
            rows.append({"case_id": case.case_id, "excluded": "no administered plan to simulate"})
            continue
        # 2. the three post-label sources on the world model's crop
        result = world.simulate(case, [case.plan], samples=samples, seed=seed, steps=steps)
        pre = result.pre_labels
        voxel_ml = float(np.prod(crop.spacing)) / 1000.0
        sims = result.plans[0].labels
        sources = {"none": [pre], "simulated": list(sims)}
        if case.post_labels is not None:
            sample = preprocess_case(case, spacing=result.crop.spacing, crop_size=result.crop.crop_size)
            sources["observed"] = [sample.post_labels[0].numpy().astype(np.uint8)]
        feats, viable = {}, {}
        for name, posts in sources.items():
            per = [outcome_features(pre, p, voxel_ml, case.covariates) for p in posts]
            feats[name] = {k: float(np.mean([f[k] for f in per])) for k in per[0]}
            viable[name] = float(np.mean([(p == LABELS["tumour"]).sum() for p in posts])) * voxel_ml
        pre_viable = float((pre == LABELS["tumour"]).sum()) * voxel_ml
        rows.append({"case_id": case.case_id, "time": case.outcome.time_months, "event": bool(case.outcome.event),
                     "mrecist": (info.get("response") or {}).get("mrecist"), "features": feats,
                     "viable_pre_ml": pre_viable, "viable_post_ml": viable,
                     "mrecist_predicted": {k: mrecist_from_ratio(pre_viable, v) for k, v in viable.items()}})
        if report_progress:
            report_progress(n + 1, len(records), case.case_id)
    used = [r for r in rows if "excluded" not in r]
    time = np.array([r["time"] for r in used], dtype=np.float64)
    event = np.array([r["event"] for r in used], dtype=bool)
    if len(used) < 3 or not event.any():
        raise ManifestError(f"{cohort} has {len(used)} usable case(s) with {int(event.sum())} death(s); the "
                            f"evaluation needs at least 3 cases and one death.")
    # 3. survival C-index per source
    survival = {}
    for source in SOURCES:
        have = [r for r in used if source in r["features"]]
        if len(have) < 3:
            survival[source] = {"value": None, "why": f"{len(have)} case(s) with {source} post-treatment labels"}
            continue
        idx = [used.index(r) for r in have]
        survival[source] = {"n": len(have), **_c_index([r["features"][source] for r in have], time[idx],
                                                       event[idx], folds, seed)}
    # 4. response vs the readers' mRECIST majority
    response = {}
    for source in ("simulated", "observed"):
        pairs = [(r["mrecist_predicted"][source], r["mrecist"], r["viable_post_ml"][source] / max(r["viable_pre_ml"],
                                                                                                    1e-9))
                 for r in used if r.get("mrecist") and source in r["mrecist_predicted"]]
        if not pairs:
            response[source] = {"n": 0, "why": "no case with both a reader majority and this source"}
            continue
        pred, truth, ratio = (np.array(v) for v in zip(*pairs))
        responder = np.isin(truth, ["CR", "PR"])
        response[source] = {"n": len(pairs), "accuracy_4_class": round(float(np.mean(pred == truth)), 4),
                            "responder_accuracy": round(float(np.mean(np.isin(pred, ["CR", "PR"]) == responder)), 4),
                            "responder_auc_viable_shrinkage": _auc(-ratio.astype(float), responder),
                            "majority_class_rate": round(float(max(np.mean(responder), 1 - np.mean(responder))), 4)}
    report = {"cohort": str(cohort), "n": len(used), "n_events": int(event.sum()),
              "excluded": [r for r in rows if "excluded" in r], "weights": str(world.weights_dir),
              "settings": {"folds": folds, "samples": samples, "steps": steps, "seed": seed,
                           "crop": crop.to_dict()},
              "survival": survival, "response": response,
              "plan_choice": {"evaluable": False, "statement": PLAN_CHOICE_STATEMENT},
              "note": "Research use only, not for clinical use. 'observed' post labels are segmenter pseudo-labels "
                      "of the registered follow-up, not expert masks.",
              "cases": used}
    out = Path(out) if out else cohort / "evaluation_realdata.json"
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    report["out"] = str(out)
    return report
