"""Does the world model know what the drugs do? (``mewm eval drugs``)

The plan search ranks plans by the risk of their simulated outcomes, so it can choose drugs only if the simulated
outcomes separate drugs. `evaluate_dynamics` draws plans at random, where drugs and embolics change together; this
probe holds the embolics fixed and changes only the drug. Per held-out patient it simulates, in ONE batched call,
one plan per drug class of the simulator (a representative agent: ``PROBE_DRUGS``) with the same embolics
(``PROBE_EMBOLICS``, the catalogue's cTACE ``<drug>; Lipiodol; Gelatin Sponge``), plus those embolics without a drug,
and scores them against the counterfactual truth exactly like `evaluate_dynamics` (`score_patient`, autoencoder and
segmenter ceilings included).

In the virtual cohort the drug classes' effects depend on the tumour's vascularity, proliferation and
heterogeneity (``docs/DATA_CARD_cohort.md``), which the CT shows as arterial enhancement and texture (and the AFP
as a lab): a model that reads them can tell which drug suits which tumour. Figures, for the simulation, the
autoencoder ceiling and the segmenter ceiling (sharp true crops):

- ``within_patient_spearman``: mean over patients of the Spearman correlation of predicted vs true viable change
  across the probe plans (drugs and no drug);
- ``drug_contrast_spearman``: pooled over patients and drug plans, the viable change minus that patient's mean
  over its drug plans: what is left once the patient and the embolics are taken out, the drug-specific part;
- ``best_drug_agreement``: share of patients whose lowest predicted viable change is under the drug with the
  lowest true change (chance: one over the number of drugs);
- ``drug_effect_ml`` per drug: mean viable change relative to the no-drug plan (true / segmenter ceiling /
  autoencoder ceiling / simulated): whether the model knows how much each drug adds.

The three headline figures come with 95% bootstrap intervals over patients; `drug_response_figure` draws the
per-drug effects and the drug contrasts (PNG beside the report).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.errors import ConfigError, LesionTooLargeError
from pipelines.cohort.counterfactual import regenerate_cohort
from pipelines.config import DEFAULT_STEPS
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.worldmodel import metrics
from pipelines.worldmodel.drug_probe import PROBE_DRUGS, PROBE_EMBOLICS, probe_plans
from pipelines.worldmodel.evaluate import (has_token, mean_of, score_patient, token_following,
                                           within_patient_spearman)
from pipelines.worldmodel.report import (command_line, display_path, machine_info, metric_entry,
                                         update_card_section, write_report)
from pipelines.worldmodel.weights import load_world_model

__all__ = ["SOURCES", "card_text", "drug_figures", "drug_response_figure", "evaluate_drug_response"]

# (name in the report, key prefix of the `score_patient` rows)
SOURCES = (("true", "true_"), ("segmenter_ceiling", "segmenter_ceiling_"), ("autoencoder_ceiling", "ceiling_"),
           ("simulated", "pred_"))
TOKEN_SOURCE = ("response_token", "token_")  # a response-token model: the response its samples were given


def _contrasts(rows: list[dict], key: str) -> list[float]:
    """Each drug plan's ``key`` minus the mean of ``key`` over the patient's drug plans (rows[0] is no drug)."""
    values = np.array([r[key] for r in rows[1:]], dtype=np.float64)
    return list(values - values.mean())


def _contrast_spearman(patients: list[list[dict]], prefix: str) -> float:
    pred = [c for rows in patients for c in _contrasts(rows, f"{prefix}viable_change_ml")]
    true = [c for rows in patients for c in _contrasts(rows, "true_viable_change_ml")]
    return metrics.spearman(pred, true)


def _best_drug(rows: list[dict], prefix: str) -> int:
    """Index (into the drugs) of the drug plan with the lowest ``<prefix>viable_change_ml`` (rows[0] is no drug)."""
    return int(np.argmin([r[f"{prefix}viable_change_ml"] for r in rows[1:]]))


def _best_drug_agreement(patients: list[list[dict]], prefix: str) -> float:
    return float(np.mean([_best_drug(rows, prefix) == _best_drug(rows, "true_") for rows in patients]))


def _within(patients: list[list[dict]], prefix: str) -> float:
    return within_patient_spearman([r for rows in patients for r in rows], f"{prefix}viable_change_ml").mean


FIGURES: dict[str, Callable[[list[list[dict]], str], float]] = {
    "within_patient_spearman": _within, "drug_contrast_spearman": _contrast_spearman,
    "best_drug_agreement": _best_drug_agreement}


def drug_figures(patients: list[list[dict]], drugs: tuple[str, ...], seed: int = 0) -> dict[str, Any]:
    """The probe's figures from per-patient rows of `score_patient` (each list: no-drug plan first, then one row
    per drug in ``drugs`` order): ``metrics`` (the headline figures with the ceilings, chance level and 95%
    intervals) and ``drug_effect_ml`` (per drug and source: mean viable change minus the no-drug plan's)."""
    if len(patients) < 2:
        raise ConfigError(f"The drug probe needs at least two patients it could simulate, got {len(patients)}.")
    token = has_token([r for rows in patients for r in rows])
    sources = SOURCES + ((TOKEN_SOURCE,) if token else ())
    m = {}
    for name, figure in FIGURES.items():
        sim = figure(patients, "pred_")
        extra = {"chance": 1.0 / len(drugs)} if name == "best_drug_agreement" else {}
        if token:  # what the response predictor alone knows: the figure of the token the samples were given
            extra["response_token"] = figure(patients, "token_")
        m[name] = metric_entry(sim, baseline=float("nan"), interval_95=metrics.bootstrap_interval(
                                   patients, lambda ps: figure(ps, "pred_"), seed),
                               ceiling=figure(patients, "ceiling_"),
                               segmenter_ceiling=figure(patients, "segmenter_ceiling_"), patients=len(patients),
                               **extra)
    if token:
        following = token_following([r for rows in patients for r in rows])
        m["response_token_following"] = metric_entry(
            following.mean, baseline=float("nan"), patients=following.n,
            note="mean over patients of the Spearman correlation of the simulated viable change with the response "
                 "token's across the probe plans: how faithfully the renderer draws the response it is given")
    effects = []
    for k, drug in enumerate(drugs, start=1):
        row: dict[str, Any] = {"drug": drug}
        for source, prefix in sources:
            key = f"{prefix}viable_change_ml"
            row[source] = float(np.mean([rows[k][key] - rows[0][key] for rows in patients]))
        for source, prefix in (("true", "true_"), ("simulated", "pred_")):
            row[f"best_share_{source}"] = float(np.mean([_best_drug(rows, prefix) == k - 1 for rows in patients]))
        effects.append(row)
    return {"metrics": m, "drug_effect_ml": effects}


def evaluate_drug_response(cohort_dir: str | os.PathLike, weights_dir: str | os.PathLike | None = None, *,
                           patients: int = 30, samples: int = 3, seed: int = 0, steps: int = DEFAULT_STEPS,
                           guidance: float = 2.0, precision: str | None = None,
                           response_guidance: float | None = None, sampler: str | None = None,
                           drugs: tuple[str, ...] = PROBE_DRUGS, embolics: tuple[str, ...] = PROBE_EMBOLICS,
                           out: str | os.PathLike | None = None, update_card: bool = True,
                           progress: bool | ProgressFn | None = None) -> dict[str, Any]:
    """Run the drug probe (module docstring) on the first ``patients`` patients of a held-out cohort.

    Args:
        cohort_dir: a cohort of ``mewm cohort generate`` with a seed not used for training.
        weights_dir: world-model weights (default: the configured ``[worldmodel] weights_dir``).
        samples, seed, steps, guidance, precision, response_guidance, sampler: as `evaluate_dynamics`.
        drugs, embolics: the probe's agents (`probe_plans`).
        out: JSON report (default ``<weights>/dynamics/drug_response.json``).
        update_card: write the "Drug response" section of ``<weights>/dynamics/MODEL_CARD.md``.
        progress: ``progress(done, total, message)`` per patient, ``True`` for a tqdm bar.

    Raises:
        ConfigError: ``patients`` beyond the cohort, ``samples < 1``, or fewer than two patients simulated.
    """
    start = time.perf_counter()
    plans = probe_plans(tuple(drugs), tuple(embolics))
    cohort = regenerate_cohort(cohort_dir)
    records = read_manifest(cohort.root)
    if not 2 <= patients <= len(records):
        raise ConfigError(f"evaluate_drug_response: patients={patients} but the cohort {cohort.root} has "
                          f"{len(records)}; use --patients between 2 and {len(records)}.")
    if samples < 1:
        raise ConfigError(f"evaluate_drug_response needs samples >= 1, got {samples}.")
    world = load_world_model(weights_dir, precision=precision, response_guidance=response_guidance, sampler=sampler)
    report_progress = resolve_progress(progress, "eval drugs", "patient")
    per_patient: list[list[dict]] = []
    skipped: list[dict] = []
    seconds = {"simulate": 0.0, "truth": 0.0}
    for i in range(patients):
        truth, case = cohort.truths[i], load_manifest_case(records[i])
        try:
            scored = score_patient(world, cohort, truth, case, plans, samples=samples, seed=seed, steps=steps,
                                   guidance=guidance)
        except LesionTooLargeError as e:
            skipped.append({"case_id": case.case_id, "reason": str(e)})
        else:
            per_patient.append(scored.rows)
            for key in seconds:
                seconds[key] += scored.seconds[key]
        if report_progress:
            report_progress(i + 1, patients, case.case_id)
    figures = drug_figures(per_patient, tuple(drugs), seed=seed)
    seconds["total"] = time.perf_counter() - start
    command = command_line("eval", "drugs", cohort=cohort.root, weights=world.weights_dir, patients=patients,
                           samples=samples, seed=seed, steps=steps, guidance=guidance,
                           response_guidance=world.token_guidance, precision=world.precision,
                           sampler=world.sampler)
    if tuple(drugs) != PROBE_DRUGS:
        command += f" --drugs {','.join(drugs)!r}"
    if tuple(embolics) != PROBE_EMBOLICS:
        command += f" --embolics {','.join(embolics)!r}"
    report = {
        "kind": "drug-response-evaluation", "command": command, "weights": str(world.weights_dir),
        "cohort": {"path": display_path(cohort.root), "seed": cohort.seed, "n": len(records)},
        "config": {"patients": patients, "patients_evaluated": len(per_patient), "samples": samples, "seed": seed,
                   "steps": steps, "guidance": guidance, "response_guidance": world.token_guidance,
                   "precision": world.precision, "sampler": world.sampler,
                   "plans": [p.canonical() for p in plans]},
        "machine": machine_info(), **figures,
        "true_viable_change_ml": mean_of([r for rows in per_patient for r in rows], "true_viable_change_ml"),
        "pairs": [r for rows in per_patient for r in rows], "skipped": skipped, "timing_s": seconds,
    }
    out = Path(out) if out is not None else world.weights_dir / "dynamics" / "drug_response.json"
    write_report(report, out)
    figure = drug_response_figure(report)
    figure.savefig(out.with_suffix(".png"))
    _close(figure)
    if update_card:
        update_card_section(world.weights_dir / "dynamics" / "MODEL_CARD.md", "Drug response", card_text(report, out))
    return metrics.json_safe(report)


COLOURS = {"true": "#222222", "segmenter_ceiling": "#7f7f7f", "autoencoder_ceiling": "#1f77b4",
           "simulated": "#d62728", "response_token": "#2ca02c"}


def drug_response_figure(report: dict[str, Any]):
    """A matplotlib figure of a drug-probe report: left, each drug's mean viable change against no drug (true,
    ceilings, simulated); right, every (patient, drug) contrast simulated and through the autoencoder against the
    truth (the drug-contrast Spearman's points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(10.0, 4.0), dpi=110)
    effects = report["drug_effect_ml"]
    x = np.arange(len(effects))
    token = "response_token" in effects[0]
    sources = SOURCES + ((TOKEN_SOURCE,) if token else ())
    width = 0.8 / len(sources)
    for k, (source, _) in enumerate(sources):
        bars.bar(x + (k - (len(sources) - 1) / 2) * width, [r[source] for r in effects], width,
                 label=source.replace("_", " "), color=COLOURS[source])
    bars.set_xticks(x, [r["drug"] for r in effects], rotation=20, fontsize=8)
    bars.axhline(0, color="black", lw=0.6)
    bars.set_ylabel("viable-tumour change vs no drug (ml)")
    bars.set_title("Each drug's effect (mean over patients)", fontsize=9)
    bars.legend(fontsize=7)
    n = len(report["config"]["plans"])
    patients = [report["pairs"][i:i + n] for i in range(0, len(report["pairs"]), n)]
    true = [c for rows in patients for c in _contrasts(rows, "true_viable_change_ml")]
    shown = (("autoencoder_ceiling", "ceiling_", "ceiling"), ("simulated", "pred_", "value"))
    for source, prefix, figure_key in shown + ((TOKEN_SOURCE + ("response_token",),) if token else ()):
        value = report["metrics"]["drug_contrast_spearman"][figure_key]
        scatter.scatter(true, [c for rows in patients for c in _contrasts(rows, f"{prefix}viable_change_ml")], s=10,
                        alpha=0.6, color=COLOURS[source],
                        label=f"{source.replace('_', ' ')} (Spearman {_fmt(value)})")
    lim = max([abs(v) for v in true] + [1.0])
    scatter.plot([-lim, lim], [-lim, lim], color="black", lw=0.6)
    scatter.set_xlabel("true drug contrast (ml)")
    scatter.set_ylabel("predicted drug contrast (ml)")
    scatter.set_title("Viable change minus the patient's mean over its drugs", fontsize=9)
    scatter.legend(fontsize=7)
    fig.suptitle("Drug probe on a held-out virtual cohort (synthetic data; research use only)", fontsize=9)
    fig.tight_layout()
    return fig


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def _fmt(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def card_text(report: dict[str, Any], out: Path) -> str:
    """Markdown of a drug-probe report: the headline figures and the per-drug effects."""
    m = report["metrics"]
    token = "response_token_following" in m
    token_head = " response token |" if token else ""
    lines = ["Plans that differ only in the drug (" + " | ".join(report["config"]["plans"]) + "), simulated per "
             "held-out patient and scored against the simulator's counterfactual truth (synthetic data). "
             "Autoencoder ceiling: the true post crops through the autoencoder and segmenter; segmenter ceiling: "
             "the sharp true post crops through the segmenter."
             + (" Response token: the response predictor's viable change, which the samples were conditioned on."
                if token else ""), "",
             "| figure | simulated (95% interval) | autoencoder ceiling | segmenter ceiling | chance |" + token_head,
             "|---|---|---|---|---|" + ("---|" if token else "")]
    for name, e in m.items():
        if name == "response_token_following":
            continue
        lo, hi = e["interval_95"]
        lines.append(f"| {name} | {_fmt(e['value'])} [{_fmt(lo)}, {_fmt(hi)}] | {_fmt(e['ceiling'])} | "
                     f"{_fmt(e['segmenter_ceiling'])} | {_fmt(e.get('chance', float('nan')))} |"
                     + (f" {_fmt(e['response_token'])} |" if token else ""))
    if token:
        lines += ["", f"Token following (within-patient Spearman of the simulated viable change with the token's): "
                      f"{_fmt(m['response_token_following']['value'])}."]
    lines += ["", "Viable-tumour change of each drug relative to the same embolics without a drug (ml, mean over "
                  "patients; negative = the drug kills more), and how often each drug is the best of the probe:", "",
              "| drug | true | segmenter ceiling | autoencoder ceiling | simulated | best (true) | best (simulated) |"
              + token_head, "|---|---|---|---|---|---|---|" + ("---|" if token else "")]
    for r in report["drug_effect_ml"]:
        lines.append(f"| {r['drug']} | {_fmt(r['true'], 1)} | {_fmt(r['segmenter_ceiling'], 1)} | "
                     f"{_fmt(r['autoencoder_ceiling'], 1)} | {_fmt(r['simulated'], 1)} | "
                     f"{_fmt(r['best_share_true'])} | {_fmt(r['best_share_simulated'])} |"
                     + (f" {_fmt(r['response_token'], 1)} |" if token else ""))
    machine = report["machine"]
    lines += ["", f"- Command: `{report['command']}`",
              f"- Patients: {report['config']['patients_evaluated']} of {report['config']['patients']} "
              f"({len(report['skipped'])} lesions too large for the crop)",
              f"- Machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch {machine['torch']}; "
              f"{report['timing_s']['total']:.0f} s; full report: `{out.name}`, picture: "
              f"`{out.with_suffix('.png').name}`"]
    return "\n".join(lines)
