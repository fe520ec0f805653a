"""`mewm eval survival`: how well a survival model ranks and predicts survival on a held-out cohort.

Every held-out case goes through the planning API (`SurvivalModel.predict` on its true pre-treatment crop, its
post-treatment crop labelled as the model was trained (segmenter labels or true labels) and its administered plan),
so the figures measure the model as the plan search uses it. Metrics:

- **Harrell's C-index** of the log-risk (`lifelines.utils.concordance_index(time, −η, event)`; higher = better,
  0.5 = chance); target ≥ 0.70.
- **Integrated Brier score** (IPCW; Graf et al., Stat Med 1999): ``BS(t) = 1/n Σ_i [S_i(t)² 1(T_i ≤ t, δ_i = 1) /
  G(T_i−) + (1 − S_i(t))² 1(T_i > t) / G(t)]`` with ``G`` the Kaplan-Meier estimate of the held-out cohort's
  censoring distribution, averaged (trapezoid rule) over a grid of 0.5 months from 1 month to the 90th percentile
  of the observed times (beyond it too few patients remain at risk). Lower = better. Baseline: the same score of
  the training cohort's Kaplan-Meier curve given to every patient (the "no covariates" model).
- **Risk groups**: tertiles of the predicted log-risk, Kaplan-Meier curves per group (PNG) and the multivariate
  log-rank p-value.
- **Plan ranking** (``plan_ranking=N``, virtual cohorts only): `pipelines.survival.plan_ranking`.
- **Oracle ceiling** (virtual cohorts only): the C-index of the simulator's own expected survival under the
  administered plan (`oracle/`, read for scoring only): the best any model could rank these outcomes.

The report is strict JSON (default ``<weights>/evaluation.json``); its figures are also written into the model
card's ``## Evaluation`` section.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.preprocess import unwindow_hu
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.survival.data import SurvivalData, load_survival_data
from pipelines.survival.model import SurvivalModel, load_survival_model
from pipelines.worldmodel.crops import CropConfig
from pipelines.worldmodel.report import (command_line, display_path, machine_info, metric_entry,
                                         update_card_section, write_report)

__all__ = ["C_INDEX_TARGET", "IBS_QUANTILE", "integrated_brier_score", "brier_scores", "predict_cohort",
           "oracle_expected_survival", "risk_group_plot", "evaluate_survival"]

C_INDEX_TARGET = ">= 0.70"
IBS_QUANTILE = 0.9
IBS_STEP_MONTHS = 0.5
KM_PLOT = "km_risk_groups.png"


# ------------------------------------------------------------------------------------------------ metrics
def _censoring_km(time: np.ndarray, event: np.ndarray):
    """G(t) = P(C > t), the Kaplan-Meier estimate with censoring as the event; returns ``G(t)`` and ``G(t−)``."""
    from lifelines import KaplanMeierFitter

    km = KaplanMeierFitter().fit(time, ~event.astype(bool))
    sf = km.survival_function_.iloc[:, 0]
    knots, values = sf.index.to_numpy(np.float64), sf.to_numpy(np.float64)

    def g(t: np.ndarray, left: bool = False) -> np.ndarray:
        idx = np.searchsorted(knots, np.asarray(t, np.float64), side="left" if left else "right") - 1
        return np.where(idx >= 0, values[np.clip(idx, 0, None)], 1.0)

    return g


def brier_scores(survival_at: np.ndarray, grid: np.ndarray, time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """IPCW Brier score at each time of ``grid`` (see the module doc).

    Args:
        survival_at: ``(N, G)`` predicted S(t) of each patient at the ``grid`` times.
        time, event: ``(N,)`` observed follow-up and death indicator.
    """
    time, event = np.asarray(time, np.float64), np.asarray(event, bool)
    g = _censoring_km(time, event)
    g_t = np.maximum(g(grid), 1e-12)                       # (G,)
    g_ti = np.maximum(g(time, left=True), 1e-12)           # (N,)
    died = (time[:, None] <= grid[None, :]) & event[:, None]
    alive = time[:, None] > grid[None, :]
    terms = np.where(died, survival_at ** 2 / g_ti[:, None], 0.0) + \
        np.where(alive, (1.0 - survival_at) ** 2 / g_t[None, :], 0.0)
    return terms.mean(0)


def ibs_grid(time: np.ndarray) -> np.ndarray:
    """1 month to the `IBS_QUANTILE` quantile of the observed times, every `IBS_STEP_MONTHS`."""
    t_max = float(np.quantile(np.asarray(time, np.float64), IBS_QUANTILE))
    if t_max <= 1.0:
        raise ValueError(f"The held-out follow-up is too short for an integrated Brier score (90th percentile "
                         f"{t_max:.1f} months).")
    return np.arange(1.0, t_max + 1e-9, IBS_STEP_MONTHS)


def integrated_brier_score(survival_at: np.ndarray, grid: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Trapezoid mean of `brier_scores` over ``grid``."""
    bs = brier_scores(survival_at, grid, time, event)
    return float(np.trapezoid(bs, grid) / (grid[-1] - grid[0]))


def _step_curve(times: np.ndarray, survival: np.ndarray, at: np.ndarray) -> np.ndarray:
    """A right-continuous step curve given at ``times`` (first time 0), evaluated at ``at``."""
    idx = np.searchsorted(times, at, side="right") - 1
    return survival[np.clip(idx, 0, None)]


# ------------------------------------------------------------------------------------------------ predictions
def predict_cohort(model: SurvivalModel, data: SurvivalData, progress: bool | ProgressFn | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-risk ``(N,)``, the reporting times ``(K,)`` and curves ``(N, K)`` of every case, via ``model.predict``."""
    report = resolve_progress(progress, "predict survival", "case")
    risks, curves, times = [], [], None
    for i in range(len(data)):
        d = data.crops(i)
        pred = model.predict(unwindow_hu(d["pre"]), d["pre_labels"], unwindow_hu(d["post"])[None],
                             d["post_labels"][None], data.covariates[i], data.voxel_ml,
                             plan=data.plans[i] if data.plans else None)
        risks.append(float(pred.log_risk[0]))
        curves.append(pred.survival[0])
        times = pred.times
        if report:
            report(i + 1, len(data), data.case_ids[i])
    return np.asarray(risks), np.asarray(times), np.stack(curves)


def oracle_expected_survival(cohort_dir: Path, case_ids: list[str]) -> np.ndarray | None:
    """The oracle's expected survival (RMST-60) of each case's administered plan, or ``None`` without ``oracle/``."""
    truth, oracle = cohort_dir / "oracle" / "truth.csv", cohort_dir / "oracle" / "oracle.csv"
    if not (truth.is_file() and oracle.is_file()):
        return None
    with truth.open(newline="") as f:
        plan_of = {r["case_id"]: r["plan_index"] for r in csv.DictReader(f)}
    with oracle.open(newline="") as f:
        expected = {(r["case_id"], r["plan_index"]): float(r["expected_survival_months"]) for r in csv.DictReader(f)}
    try:
        return np.array([expected[(c, plan_of[c])] for c in case_ids])
    except KeyError:
        return None


def risk_group_plot(log_risk: np.ndarray, time: np.ndarray, event: np.ndarray, path: Path,
                    title: str) -> dict[str, Any]:
    """Kaplan-Meier curves of the risk tertiles to ``path`` (PNG); returns the groups and the log-rank p."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    cuts = np.quantile(log_risk, [1 / 3, 2 / 3])
    group = np.digitize(log_risk, cuts)  # 0 low, 1 middle, 2 high
    names = ("low risk", "middle risk", "high risk")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    groups = []
    for g, (name, colour) in enumerate(zip(names, ("tab:green", "tab:orange", "tab:red"))):
        sel = group == g
        if not sel.any():
            continue
        km = KaplanMeierFitter(label=f"{name} (n={int(sel.sum())})").fit(time[sel], event[sel])
        km.plot_survival_function(ax=ax, ci_show=True, color=colour)
        median = float(km.median_survival_time_)
        groups.append({"group": name, "n": int(sel.sum()), "deaths": int(event[sel].sum()),
                       "km_median_months": median if np.isfinite(median) else None})
    p = float(multivariate_logrank_test(time, group, event).p_value)
    ax.set_xlabel("months since TACE")
    ax.set_ylabel("overall survival")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title}\nlog-rank p = {p:.2g} (synthetic cohort; research use only)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return {"groups": groups, "logrank_p": p, "cuts": cuts.tolist()}


# ------------------------------------------------------------------------------------------------ the command
def _training_segmenter(recorded: dict[str, Any]) -> Path:
    """The segmenter the model was trained with: its recorded folder (relative to the working directory) or else
    the configured world model's, checked against the recorded weights sha256 so that held-out crops are labelled
    exactly as the training crops were."""
    import hashlib

    from models.errors import ConfigError
    from pipelines.survival.data import default_segmenter_dir

    candidate = Path(recorded["dir"]) if recorded.get("dir") else default_segmenter_dir()
    if not (candidate / "model.pt").is_file():
        candidate = default_segmenter_dir()
    if recorded.get("weights_sha256") and (candidate / "model.pt").is_file():
        sha = hashlib.sha256((candidate / "model.pt").read_bytes()).hexdigest()
        if sha != recorded["weights_sha256"]:
            raise ConfigError(f"The survival model was trained on post-treatment labels of the segmenter with weights "
                              f"sha256 {recorded['weights_sha256'][:12]}…, but {candidate} holds {sha[:12]}…. Pass "
                              "that segmenter with --segmenter DIR (or another one on purpose).")
    autoencoder = candidate.parent / "autoencoder" / "model.pt"
    if recorded.get("autoencoder_sha256") and autoencoder.is_file():  # post labels "decoded"
        sha = hashlib.sha256(autoencoder.read_bytes()).hexdigest()
        if sha != recorded["autoencoder_sha256"]:
            raise ConfigError(f"The survival model was trained on post-treatment crops decoded by the autoencoder "
                              f"with weights sha256 {recorded['autoencoder_sha256'][:12]}…, but {autoencoder} "
                              f"holds {sha[:12]}…. Pass the segmenter of that world model with --segmenter DIR.")
    return candidate


def _card_body(report: dict[str, Any]) -> str:
    m = report["metrics"]

    def fmt(v):
        return "–" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

    def ok(p):
        return "–" if p is None else ("yes" if p else "no")

    lines = ["Held-out evaluation on a virtual cohort (synthetic data; not a clinical validation).", "",
             "| metric | value | target | pass | baseline |", "|---|---|---|---|---|"]
    for name, e in m.items():
        lines.append(f"| {name} | {fmt(e['value'])} | {e['target'] or '–'} | {ok(e['pass'])} | "
                     f"{fmt(e['baseline'])}{' (' + e['baseline_name'] + ')' if e.get('baseline_name') else ''} |")
    oracle = m["oracle_c_index"]["value"]
    if oracle is not None:
        lines += ["", f"The oracle row is the C-index of the simulator's own expected survival (RMST-60) under each "
                      f"patient's administered plan: the ranking by the true expected survival, which a model can "
                      f"only beat by chance, since the observed times add random (Weibull and censoring) noise. The model's C-index is "
                      f"{m['c_index']['value'] / oracle:.0%} of it."]
    r = report.get("plan_ranking")
    if r:
        lines += ["", f"Plan ranking on counterfactual outcomes (`--plan-ranking {r['patients']}`: every one of the "
                      f"{r['plans']} plans of the plan space rendered by the simulator for each of the first "
                      f"{r['patients']} patients, {r['post_labels']} post labels, ranked by the model, compared with "
                      f"the oracle; the best plan search this model allows with a perfect world model): mean "
                      f"within-patient Spearman {r['spearman']:.2f}, oracle-best plan ranked first "
                      f"{r['top1']:.0%}, in the top 3 {r['top3']:.0%}, regret {r['regret_months']:.1f} months "
                      f"(random plan: {r['random_regret_months']:.1f})."]
    lines += ["", "Risk tertiles (Kaplan-Meier plot `km_risk_groups.png`):", ""]
    lines += [f"- {g['group']}: {g['n']} patients, {g['deaths']} deaths, KM median "
              f"{fmt(g['km_median_months'])} months" for g in report["risk_groups"]["groups"]]
    lines += ["", f"- Command: `{report['command']}`",
              f"- Cohort: {report['cohort']} ({report['n']} cases, {report['n_events']} deaths)",
              f"- Post-treatment labels: {report['post_labels']}; IBS over {report['ibs_range_months'][0]:g}–"
              f"{report['ibs_range_months'][1]:g} months",
              f"- Machine: {report['machine']['platform']}, {report['machine']['cpu_count']} CPUs, torch "
              f"{report['machine']['torch']} ({report['machine']['torch_threads']} threads)",
              f"- Time: {report['seconds']:.0f} s; full report: `{Path(report['out']).name}`"]
    return "\n".join(lines)


def evaluate_survival(cohort_dir: str | os.PathLike, weights_dir: str | os.PathLike, *,
                      out: str | os.PathLike | None = None, plot: str | os.PathLike | None = None,
                      segmenter_dir: str | os.PathLike | None = None, update_card: bool = True,
                      cache_dir: str | os.PathLike | None = None, plan_ranking: int = 0,
                      progress: bool | ProgressFn | None = None) -> dict[str, Any]:
    """Evaluate the survival model in ``weights_dir`` on the held-out cohort ``cohort_dir`` (see the module doc).

    Args:
        out: the JSON report (default ``<weights>/evaluation.json``). plot: the KM PNG (default beside ``out``).
        segmenter_dir: the segmenter for ``segmented`` post labels (default: the one the model was trained with,
            else the configured world model's).
        update_card: write the figures into ``<weights>/MODEL_CARD.md``.
        plan_ranking: also rank every plan of the plan space for this many patients on their counterfactual
            outcomes (`pipelines.survival.plan_ranking`; slow: every plan is rendered by the simulator).

    Raises:
        CheckpointNotFoundError: no survival model. ManifestError: a cohort without outcomes.
    """
    t0 = time.perf_counter()
    weights_dir, cohort_dir = Path(weights_dir).expanduser(), Path(cohort_dir).expanduser()
    model = load_survival_model(weights_dir)
    trained = model.extra.get("data", {})
    crop = CropConfig(**trained["crop"]) if trained.get("crop") else None
    post_labels = trained.get("post_labels", "segmented")
    if segmenter_dir is None and post_labels in ("segmented", "decoded"):
        segmenter_dir = _training_segmenter(trained.get("segmenter") or {})
    data = load_survival_data(cohort_dir, crop=crop, post_labels=post_labels, segmenter_dir=segmenter_dir,
                              cache_dir=cache_dir, progress=progress)
    log_risk, times, curves = predict_cohort(model, data, progress)
    t, e = data.time, data.event

    # 1. ranking
    from lifelines.utils import concordance_index

    c_index = float(concordance_index(t, -log_risk, e))
    expected = oracle_expected_survival(cohort_dir, data.case_ids)
    oracle_c = float(concordance_index(t, expected, e)) if expected is not None else None

    # 2. calibration over time (IPCW integrated Brier score) vs the training Kaplan-Meier curve
    grid = ibs_grid(t)
    model_at = np.stack([_step_curve(times, c, grid) for c in curves])
    ibs = integrated_brier_score(model_at, grid, t, e)
    km = model.extra.get("training_km")
    null_ibs = None
    if km:
        null_at = _step_curve(np.asarray(km["times"]), np.asarray(km["survival"]), grid)
        null_ibs = integrated_brier_score(np.broadcast_to(null_at, model_at.shape), grid, t, e)

    # 3. risk groups and the plot
    out = Path(out) if out is not None else weights_dir / "evaluation.json"
    plot = Path(plot) if plot is not None else out.parent / KM_PLOT
    groups = risk_group_plot(log_risk, t, e, plot, f"{model.kind} survival model: held-out risk tertiles")

    ranking = None
    if plan_ranking:
        from pipelines.survival.plan_ranking import counterfactual_plan_ranking

        ranking = counterfactual_plan_ranking(model, cohort_dir, patients=plan_ranking, crop=data.cache.config,
                                              post_labels=post_labels, segmenter_dir=segmenter_dir, progress=progress)

    command = command_line("eval", "survival", cohort=cohort_dir, weights=weights_dir,
                           out=out if out != weights_dir / "evaluation.json" else None,
                           plan_ranking=plan_ranking or None)
    report = {
        "kind": model.kind, "weights": display_path(weights_dir), "cohort": display_path(cohort_dir),
        "n": len(data), "n_events": int(e.sum()), "post_labels": post_labels,
        "metrics": {
            "c_index": metric_entry(c_index, C_INDEX_TARGET, baseline=0.5, baseline_name="chance"),
            "integrated_brier_score": metric_entry(ibs, None, baseline=null_ibs,
                                                   baseline_name="training Kaplan-Meier for everyone"),
            "logrank_p_tertiles": metric_entry(groups["logrank_p"], None),
            "oracle_c_index": metric_entry(oracle_c, None, note="simulator's expected survival of the administered "
                                                                "plan: the ceiling on this cohort"),
        },
        "ibs_range_months": [float(grid[0]), float(grid[-1])],
        "plan_ranking": ranking, "risk_groups": groups, "plot": display_path(plot), "out": display_path(out), "command": command,
        "machine": machine_info(), "seconds": time.perf_counter() - t0,
        "predictions": {"case_id": data.case_ids, "log_risk": log_risk.tolist(), "time": t.tolist(),
                        "event": e.astype(int).tolist()},
    }
    write_report(report, out)
    if update_card:
        update_card_section(weights_dir / "MODEL_CARD.md", "Evaluation", _card_body(report))
    return report
