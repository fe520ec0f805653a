"""`evaluate_policy`: how good a policy is *as a candidate generator and as a planner on its own*, on a virtual cohort.

Per patient, against the cohort's oracle (expected RMST-60 of every plan of the cohort's plan space; models never
read it, only this scorer does):

- **preferred plan** (the policy alone): keyword precision/recall/F1/Jaccard vs the oracle's best plan, F1 without
  Lipiodol, regret (months; the preferred plan is mapped to the nearest plan of the space to look up its survival),
  exact match. Same definitions as `mewm eval planning` (`pipelines.planning.evaluate.pick_metrics`).
- **candidate coverage**: is the oracle's best plan among `Proposal.candidate_plans()`? And the best regret any search
  restricted to the proposal can reach (best space plan among the candidates; None when none is in the space).
- baselines with no sampling: a uniformly random plan of the space (expected F1 and regret, exact), and the coverage
  a random candidate set of the same size would have (its in-space count / space size).

The plan search ranks only the proposal's candidates, so coverage bounds what the search can achieve.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import MeWMError
from models.plan import Plan, keyword_metrics
from pipelines.progress import resolve_progress

__all__ = ["evaluate_policy"]


def _plan_key(plan: Plan) -> tuple:
    return (plan.key(), plan.protocol)


def evaluate_policy(cohort: str | os.PathLike, policy: Any = None, *, patients: int | None = None,
                    out: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Score ``policy`` (default: `load_policy()`) on the first ``patients`` cases of ``cohort``; write JSON to ``out``.

    Raises:
        ManifestError: the cohort has no manifest, plan space or oracle.
    """
    from pipelines.cohort.plan_space import read_plan_space
    from pipelines.manifest import load_manifest_case, read_manifest
    from pipelines.planning.evaluate import pick_metrics, read_oracle

    if policy is None:
        from pipelines.policy import load_policy

        policy = load_policy()
    cohort = Path(cohort)
    records = read_manifest(cohort)
    records = records if patients is None else records[:patients]
    space = read_plan_space(cohort)
    oracle = read_oracle(cohort)
    space_by_key = {_plan_key(p): p for p in space}
    bar = resolve_progress(progress, "policy eval", "case")
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    models: set[str] = set()
    start = time.perf_counter()
    for i, record in enumerate(records):
        survival = oracle[record.case_id]
        best = max(space, key=lambda p: survival[p.canonical()])
        try:
            proposal = policy.propose(load_manifest_case(record))
            candidates = proposal.candidate_plans()
        except MeWMError as e:  # a failed case is recorded with its reason; the run goes on
            failures.append({"case_id": record.case_id, "error": f"{type(e).__name__}: {e}"})
            continue
        models.add(proposal.model)
        in_space = [space_by_key[_plan_key(c)] for c in candidates if _plan_key(c) in space_by_key]
        best_in = max((survival[p.canonical()] for p in in_space), default=None)
        row = {
            "case_id": record.case_id,
            "best": best.canonical(),
            "preferred": pick_metrics(proposal.preferred, None, best, survival, space),
            "n_candidates": len(candidates),
            "n_candidates_in_space": len(in_space),
            "best_covered": float(_plan_key(best) in {_plan_key(c) for c in candidates}),
            "best_candidate_regret_months": None if best_in is None else survival[best.canonical()] - best_in,
            "random_f1": float(np.mean([keyword_metrics(p, best)["f1"] for p in space])),
            "random_regret_months": float(survival[best.canonical()] - np.mean([survival[p.canonical()]
                                                                                 for p in space])),
            "random_coverage": len(in_space) / len(space),
            "rules_fired": proposal.details.get("rules_fired"),
        }
        rows.append(row)
        if bar:
            bar(i + 1, len(records), record.case_id)
    report = {
        "cohort": str(cohort),
        "policy": {"backend": getattr(policy, "name", "?"), "model": sorted(models)},
        "patients": len(records),
        "scored": len(rows),
        "failed": failures,
        "plan_space_size": len(space),
        "seconds": round(time.perf_counter() - start, 2),
        "summary": _summary(rows),
        "per_patient": rows,
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, allow_nan=False))
        tmp.replace(out)
    return report


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return None if not vals else round(float(np.mean(vals)), 4)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    pref = [r["preferred"] for r in rows]
    return {
        "preferred": {k: _mean([p[k] for p in pref]) for k in
                      ("precision", "recall", "f1", "jaccard", "f1_no_lipiodol", "regret_months", "exact")},
        "random_plan": {"f1": _mean([r["random_f1"] for r in rows]),
                        "regret_months": _mean([r["random_regret_months"] for r in rows])},
        "candidates": {
            "mean_count": _mean([r["n_candidates"] for r in rows]),
            "mean_in_space": _mean([r["n_candidates_in_space"] for r in rows]),
            "best_covered": _mean([r["best_covered"] for r in rows]),
            "random_set_coverage": _mean([r["random_coverage"] for r in rows]),
            "best_candidate_regret_months": _mean([r["best_candidate_regret_months"] for r in rows]),
            "no_candidate_in_space": sum(r["n_candidates_in_space"] == 0 for r in rows),
        },
    }
