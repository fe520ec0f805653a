"""Baselines of the planning evaluation, each a rule for picking one plan (and, where it can, a ranking) of a
candidate list for a patient, without the world model.

- `random_plan`: a uniformly random candidate (seeded per patient).
- `nearest_candidate`: maps a plan outside the candidate list (the guideline's own plan) onto the candidate with
  the highest keyword F1 to it (ties: catalogue order), so its expected survival can be read from the oracle.
- `PreTreatmentCox`: lifelines `CoxPHFitter` on pre-treatment covariates, the plan's agents (one indicator per
  agent, plus the protocol) and agent × (Child-Pugh score, log tumour diameter) interactions, fitted on a training
  cohort's administered plans and outcomes; for a new patient it ranks the candidates by predicted log partial
  hazard. This is what a statistician would do with the same observational data and no images of the outcome.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.action_base import default_action_base
from models.plan import Plan, keyword_metrics
from pipelines.manifest import ManifestRecord

__all__ = ["random_plan", "nearest_candidate", "PreTreatmentCox", "PRE_TREATMENT_COVARIATES"]

PRE_TREATMENT_COVARIATES = ("age", "afp", "albumin", "bilirubin", "child_pugh_score", "ecog", "vascular_invasion",
                            "n_lesions", "max_diameter_mm")
INTERACTING = ("child_pugh_score", "log_diameter")


def random_plan(candidates: Sequence[Plan], rng: np.random.Generator, k: int = 3) -> list[Plan]:
    """``k`` distinct random candidates (the first is the pick)."""
    idx = rng.permutation(len(candidates))[:k]
    return [candidates[i] for i in idx]


def nearest_candidate(plan: Plan, candidates: Sequence[Plan]) -> Plan:
    """The candidate with the highest keyword F1 to ``plan`` (``plan`` itself if it is a candidate)."""
    best, best_f1 = candidates[0], -1.0
    for c in candidates:
        f1 = 1.01 if (c.key() == plan.key() and c.protocol == plan.protocol) else keyword_metrics(c, plan)["f1"]
        if f1 > best_f1:
            best, best_f1 = c, f1
    return best


def _covariates(record: ManifestRecord) -> dict[str, float]:
    cov = record.covariates
    out = {}
    for name in PRE_TREATMENT_COVARIATES:
        v = cov.get(name)
        if isinstance(v, str):
            v = {"true": 1.0, "false": 0.0}.get(v.lower(), v)
        out[name] = float(v) if v is not None and v == v else float("nan")
    out["afp"] = math.log10(max(out["afp"], 1.0)) if math.isfinite(out["afp"]) else float("nan")
    d = out.pop("max_diameter_mm")
    out["log_diameter"] = math.log(max(d, 1.0)) if math.isfinite(d) else float("nan")
    return out


@dataclass
class PreTreatmentCox:
    """The pre-treatment Cox baseline (module doc). Fit with `fit`, rank with `rank`."""

    penalizer: float = 0.1
    columns: list[str] = field(default_factory=list)
    means: dict[str, float] = field(default_factory=dict)
    fitter: object = None

    def _row(self, cov: dict[str, float], plan: Plan) -> dict[str, float]:
        ab = default_action_base()
        row = {k: (v if math.isfinite(v) else self.means.get(k, 0.0)) for k, v in cov.items()}
        agents = set(plan.key())
        for agent in ab.agents:
            on = float(agent.name in agents)
            row[f"agent[{agent.name}]"] = on
            for k in INTERACTING:
                row[f"agent[{agent.name}]*{k}"] = on * (row[k] - self.means.get(k, 0.0))
        for proto in ("cTACE", "DEB-TACE"):
            row[f"protocol[{proto}]"] = float(plan.protocol.value == proto)
        return row

    def fit(self, records: Sequence[ManifestRecord]) -> "PreTreatmentCox":
        """Fit on records with an administered plan, a survival time and an event flag."""
        import pandas as pd
        from lifelines import CoxPHFitter

        usable = [r for r in records if r.plan and r.time_months is not None and r.event is not None]
        if len(usable) < 20:
            from models.errors import ManifestError

            raise ManifestError(f"The pre-treatment Cox baseline needs >= 20 cases with plan, time and event; "
                                f"the training manifest has {len(usable)}.")
        covs = [_covariates(r) for r in usable]
        finite = {k: [c[k] for c in covs if math.isfinite(c[k])] for k in covs[0]}
        self.means = {k: float(np.mean(v)) if v else 0.0 for k, v in finite.items()}  # never given: constant, dropped
        rows = [self._row(c, Plan.parse(r.plan)) for c, r in zip(covs, usable)]
        df = pd.DataFrame(rows)
        df = df.loc[:, df.std(ddof=0) > 0]  # agents never given carry no information
        self.columns = list(df.columns)
        df["T"] = [r.time_months for r in usable]
        df["E"] = [int(bool(r.event)) for r in usable]
        self.fitter = CoxPHFitter(penalizer=self.penalizer).fit(df, duration_col="T", event_col="E")
        return self

    def rank(self, record: ManifestRecord, candidates: Sequence[Plan]) -> list[Plan]:
        """Candidates ordered by predicted log partial hazard for this patient (lowest first; ties: order)."""
        import pandas as pd

        cov = _covariates(record)
        df = pd.DataFrame([self._row(cov, p) for p in candidates]).reindex(columns=self.columns, fill_value=0.0)
        risk = np.asarray(self.fitter.predict_log_partial_hazard(df), dtype=np.float64)
        order = sorted(range(len(candidates)), key=lambda i: (risk[i], i))
        return [candidates[i] for i in order]
