"""`mewm eval planning`: how good are the recommended plans, against a virtual cohort's known truth?

For each held-out patient (a cohort generated with a seed never used in training) every method picks one plan of
the cohort's plan space (`plan_space.json`, the plans the oracle scored). The oracle (`oracle/oracle.csv`: the
exact expected survival, RMST to 60 months, of every plan for every patient) gives the best plan and each pick's
expected survival. It is read here only, to score; no model sees it.

Metrics per method (mean over patients, with a 95% bootstrap interval):
- keyword precision, recall, F1 and Jaccard of the pick vs the oracle's best plan (the reference's Table A metric,
  `models.plan.keyword_metrics`), and F1 without Lipiodol (nearly every plan has it; two plans that are both
  Lipiodol-only-apart-from-nothing count as F1 = 1);
- regret: oracle-best expected survival minus the pick's (months; 0 is perfect);
- exact: the pick is the oracle's best plan; top-3 hit: the oracle's best plan is among the method's three best
  (methods that give no ranking report ``null``).

Methods: the world model (exhaustive search over the plan space: simulate every plan T times, score with the
survival model, lowest mean risk first), a random plan, the guideline policy alone (its preferred plan, mapped to
the nearest plan of the space for regret), the observed (administered) plan, and a lifelines Cox model on
pre-treatment features + plan (`pipelines.planning.baselines.PreTreatmentCox`, fitted on a training manifest).

The same figures apart for the patients simulated in the world model's training crop and for those whose lesion
needed an enlarged one (``by_crop``).

Per-patient results are appended to ``<out>.patients.jsonl`` as they are made, so an interrupted run resumes.
A patient the world model cannot simulate (a lesion larger than its crop, no tumour mask) is left out of every
method's figures and listed with the reason under ``patients_skipped``.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import EmptyMaskError, LesionTooLargeError, ManifestError
from models.plan import Plan, keyword_metrics
from pipelines.config import DEFAULT_STEPS
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.planning.baselines import PreTreatmentCox, nearest_candidate, random_plan
from pipelines.progress import resolve_progress

__all__ = ["METHODS", "by_crop", "evaluate_planning", "read_oracle", "pick_metrics", "summarise"]

METHODS = ("world_model", "random", "guideline", "observed", "cox_pretreatment")
LIPIODOL = "Lipiodol"
TARGETS = {"world_model_f1": 0.65, "f1_margin_over_guideline": 0.15, "f1_margin_over_random": 0.15}


def read_oracle(cohort: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``{case_id: {plan text: expected survival (months)}}`` from ``<cohort>/oracle/oracle.csv``."""
    path = Path(cohort) / "oracle" / "oracle.csv"
    if not path.is_file():
        raise ManifestError(f"No oracle at {path}: `mewm eval planning` needs a virtual cohort made by "
                            "`mewm cohort generate` (real cohorts have no oracle).")
    out: dict[str, dict[str, float]] = defaultdict(dict)
    with path.open() as f:
        for row in csv.DictReader(f):
            out[row["case_id"]][row["plan"]] = float(row["expected_survival_months"])
    return dict(out)


def _f1_without_lipiodol(pred: Plan, ref: Plan) -> float:
    p, r = set(pred.key()) - {LIPIODOL}, set(ref.key()) - {LIPIODOL}
    if not p and not r:
        return 1.0
    inter = len(p & r)
    return 2 * inter / (len(p) + len(r)) if inter else 0.0


def pick_metrics(pick: Plan, ranking: Sequence[Plan] | None, best: Plan, survival: dict[str, float],
                 space: Sequence[Plan]) -> dict[str, Any]:
    """Metrics of one method's pick for one patient (module doc). ``survival`` maps plan text → months."""
    m = keyword_metrics(pick, best)
    in_space = nearest_candidate(pick, space)
    m["f1_no_lipiodol"] = _f1_without_lipiodol(pick, best)
    m["regret_months"] = survival[best.canonical()] - survival[in_space.canonical()]
    m["exact"] = float(in_space.canonical() == best.canonical())
    m["top3_hit"] = None if ranking is None else float(best.canonical() in [p.canonical() for p in ranking[:3]])
    m["plan"] = pick.canonical()
    return m


def _bootstrap(values: np.ndarray, rng: np.random.Generator, n: int = 2000) -> list[float]:
    if values.size == 0:
        return [float("nan"), float("nan")]
    idx = rng.integers(0, values.size, size=(n, values.size))
    means = values[idx].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def summarise(rows: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Mean and 95% bootstrap interval of every metric per method over the per-patient rows."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for method in METHODS:
        per = [r["methods"][method] for r in rows if method in r["methods"]]
        summary: dict[str, Any] = {"n": len(per)}
        for key in ("precision", "recall", "f1", "jaccard", "f1_no_lipiodol", "regret_months", "exact", "top3_hit"):
            vals = np.asarray([p[key] for p in per if p.get(key) is not None], dtype=np.float64)
            summary[key] = None if vals.size == 0 else {"mean": float(vals.mean()), "ci95": _bootstrap(vals, rng)}
        if per:
            reg = np.asarray([p["regret_months"] for p in per])
            summary["regret_months"]["median"] = float(np.median(reg))
        out[method] = summary
    return out


def by_crop(rows: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """`summarise` apart for the patients simulated in the world model's training crop and those whose lesion
    needed an enlarged crop (outside its training distribution), so a failure confined to large lesions shows."""
    out = {}
    for name, flag in (("training_crop", False), ("enlarged_crop", True)):
        group = [r for r in rows if r.get("enlarged_crop") is flag]
        out[name] = {"patients": len(group), "methods": summarise(group, seed) if group else {}}
    return out


def evaluate_planning(cohort: str | os.PathLike, world_dir: str | os.PathLike, survival_dir: str | os.PathLike,
                      train_manifest: str | os.PathLike, *, patients: int | None = 100, samples: int = 2,
                      steps: int = DEFAULT_STEPS, guidance: float = 2.0, seed: int = 0,
                      out: str | os.PathLike | None = None,
                      policy: Any = None, survival_sees_plan: bool = True,
                      progress: bool = True) -> dict[str, Any]:
    """Evaluate plan choice on ``cohort`` (module doc); write and return the JSON report."""
    from pipelines.cohort.plan_space import read_plan_space
    from pipelines.planning.search import plan_case
    from pipelines.survival.model import load_survival_model
    from pipelines.worldmodel.weights import load_world_model

    cohort = Path(cohort)
    records = read_manifest(cohort)
    if patients is not None:
        records = records[:patients]
    space = read_plan_space(cohort)
    oracle = read_oracle(cohort)
    world = load_world_model(world_dir)
    survival = load_survival_model(survival_dir)
    if policy is None:
        from pipelines.policy import load_policy

        policy = load_policy()
    cox = PreTreatmentCox().fit(read_manifest(train_manifest, check_files=False))
    out = Path(out) if out is not None else Path(survival_dir) / "planning_evaluation.json"
    log = out.with_suffix(".patients.jsonl")
    settings = {"cohort": str(cohort), "patients": len(records), "samples": samples, "steps": steps,
                "guidance": guidance, "seed": seed, "world_model": str(world_dir),
                "world_model_precision": world.precision, "world_model_sampler": world.sampler,
                "world_model_response_guidance": world.token_guidance, "survival": str(survival_dir),
                "survival_kind": survival.kind, "train_manifest": str(train_manifest), "policy": policy.name,
                "survival_sees_plan": survival_sees_plan}
    done: dict[str, dict] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            if row.get("settings") == settings:
                done[row["case_id"]] = row
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = resolve_progress(progress, "eval planning", "patient")
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with log.open("a") as f:
        for i, record in enumerate(records):
            if record.case_id in done:
                rows.append(done[record.case_id])
                continue
            survival_of = oracle.get(record.case_id)
            if survival_of is None:
                raise ManifestError(f"The oracle has no row for {record.case_id}.")
            best = max(space, key=lambda p: (survival_of[p.canonical()], -space.index(p)))
            case = load_manifest_case(record)
            t0 = time.perf_counter()
            try:
                result = plan_case(case, world, survival, candidates=space, samples=samples, seed=seed,
                                   steps=steps, guidance=guidance, survival_sees_plan=survival_sees_plan)
            except (LesionTooLargeError, EmptyMaskError) as e:  # the world model cannot plan this patient: say so
                row = {"case_id": record.case_id, "settings": settings, "skipped": f"{type(e).__name__}: {e}"}
                f.write(json.dumps(row) + "\n")
                f.flush()
                rows.append(row)
                continue
            wm_seconds = time.perf_counter() - t0
            wm_rank = [s.plan for s in result.ranked]
            proposal = policy.propose(case)
            guideline = proposal.preferred or proposal.candidate_plans()[0]
            rng = np.random.default_rng([seed, i])
            rand = random_plan(space, rng)
            cox_rank = cox.rank(record, space)
            methods = {
                "world_model": pick_metrics(wm_rank[0], wm_rank, best, survival_of, space),
                "random": pick_metrics(rand[0], rand, best, survival_of, space),
                "guideline": pick_metrics(guideline, None, best, survival_of, space),
                "cox_pretreatment": pick_metrics(cox_rank[0], cox_rank, best, survival_of, space),
            }
            if record.plan:
                methods["observed"] = pick_metrics(Plan.parse(record.plan), None, best, survival_of, space)
            row = {"case_id": record.case_id, "settings": settings, "best": best.canonical(),
                   "best_months": survival_of[best.canonical()], "methods": methods,
                   "enlarged_crop": result.crop_note is not None,
                   "world_model_seconds": wm_seconds, "denoiser_passes": result.denoiser_passes,
                   "world_model_risks": {s.plan.canonical(): s.risk_mean for s in result.ranked}}
            f.write(json.dumps(row) + "\n")
            f.flush()
            rows.append(row)
            if bar is not None:
                bar(i + 1, len(records), record.case_id)
    skipped = [{"case_id": r["case_id"], "reason": r["skipped"]} for r in rows if "skipped" in r]
    rows = [r for r in rows if "skipped" not in r]
    summary = summarise(rows, seed)
    wm, gl, rd = (summary[m]["f1"]["mean"] if summary[m]["f1"] else float("nan")
                  for m in ("world_model", "guideline", "random"))
    metrics = {
        "world_model_f1": {"value": wm, "target": f">= {TARGETS['world_model_f1']}",
                           "pass": bool(wm >= TARGETS["world_model_f1"])},
        "f1_margin_over_guideline": {"value": wm - gl, "target": f">= {TARGETS['f1_margin_over_guideline']}",
                                     "pass": bool(wm - gl >= TARGETS["f1_margin_over_guideline"])},
        "f1_margin_over_random": {"value": wm - rd, "target": f">= {TARGETS['f1_margin_over_random']}",
                                  "pass": bool(wm - rd >= TARGETS["f1_margin_over_random"])},
    }
    secs = [r["world_model_seconds"] for r in rows]
    report = {
        "kind": "planning-evaluation", "settings": settings, "metrics": metrics, "methods": summary,
        "world_model_seconds_per_patient": {"mean": float(np.mean(secs)) if secs else None,
                                            "note": "not a benchmark: other jobs shared the CPU"},
        "by_crop": by_crop(rows, seed),
        "plans_in_space": len(space), "distinct_best_plans": len({r["best"] for r in rows}),
        "patients_scored": len(rows), "patients_skipped": skipped,
        "wall_seconds_this_run": time.perf_counter() - start,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "notice": "Synthetic cohort: figures measure the pipeline against the simulator's truth, not patients.",
    }
    from pipelines.worldmodel.metrics import json_safe

    out.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    return report
