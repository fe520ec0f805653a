"""Extra follow-ups for training the dynamics model: each virtual patient rendered under several other plans.

A real cohort shows every patient under one plan only, so a dynamics model trained on it must tell the effect of the
plan from the patient's own biology across patients. The virtual cohort can do better for its own training set: the
simulator re-renders a patient's post-TACE CT under any plan (`render_counterfactual`), which gives the model
matched pairs (same patient, same pre-treatment CT, different plans). `write_followups` adds ``per_patient`` such
follow-ups to a cohort folder and writes a second manifest that lists them beside the observed ones::

    <cohort>/followups/<case_id>/<k>_post_ct.nii.gz, <k>_post_labels.nii.gz
    <cohort>/manifest_followups.csv      the cohort's rows, then one row per extra follow-up
    <cohort>/manifest_followups.json     the cohort's metadata (synthetic: true) plus the follow-up settings

An extra row's ``case_id`` is ``<case_id>~cf<k>`` (`followup_id`); its ``ct``/``labels`` are the patient's own
pre-treatment files; ``plan`` and ``note`` are the counterfactual plan with doses drawn like the administered plan's;
``clinical`` is empty (the patient's clinical JSON names the administered plan), so covariates come from the
manifest columns; survival columns are empty (these follow-ups have no observed outcome, so survival training must use
``manifest.csv``). `pipelines.training.split_cases` keeps all rows of one patient on the same side of the
train/validation split (`patient_of`).

With ``drug_matched = m``, each patient also gets up to ``m`` follow-ups (numbered after the ``per_patient`` ones)
under plans with exactly the administered plan's embolics and other drugs (`choose_drug_matched`): pairs that differ
in the drug only, so the drug's own effect is not confounded with the embolics' (``mewm eval drugs`` measures it).

Only for simulated training cohorts: a held-out evaluation cohort must never get follow-ups that a model trains on,
and real data has no counterfactuals. Files are written per patient and skipped when present (resumable); the
manifest is written last and atomically.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.cohort.counterfactual import choose_plans, regenerate_cohort, render_counterfactual

__all__ = ["FOLLOWUP_SEP", "FOLLOWUPS_MANIFEST", "FollowupReport", "choose_drug_matched", "followup_id", "patient_of",
           "write_followups"]

FOLLOWUP_SEP = "~cf"
FOLLOWUPS_MANIFEST = "manifest_followups.csv"


def followup_id(case_id: str, k: int) -> str:
    """The manifest id of extra follow-up ``k`` (1-based) of ``case_id``."""
    return f"{case_id}{FOLLOWUP_SEP}{k}"


def patient_of(case_id: str) -> str:
    """The patient a manifest row belongs to: ``case_id`` itself, or the case of an extra follow-up."""
    return case_id.split(FOLLOWUP_SEP, 1)[0]


@dataclass
class FollowupReport:
    """What `write_followups` did."""

    manifest: Path
    patients: int
    followups: int
    written: int
    seconds: float

    def summary(self) -> str:
        return (f"{self.followups} extra follow-ups of {self.patients} virtual patients ({self.written} rendered now, "
                f"{self.followups - self.written} already present) in {self.seconds:.0f} s; training manifest "
                f"{self.manifest} (synthetic counterfactuals: never for evaluation, never on real data)")


def choose_drug_matched(administered: Any, plan_space: list[Any], exclude: list[Any], k: int, seed: int,
                        index: int) -> list[Any]:
    """Up to ``k`` plans of ``plan_space`` whose embolics are exactly ``administered``'s (so they differ in the
    drugs), none of ``exclude`` or the administered plan, drawn without replacement by a generator seeded by
    ``(seed, index)``; fewer when the plan space has fewer such plans."""
    embolics = sorted(administered.embolics)
    taken = {administered.key(), *(p.key() for p in exclude)}
    candidates = [p for p in plan_space if sorted(p.embolics) == embolics and p.key() not in taken]
    rng = np.random.default_rng([int(seed), int(index), 11])
    return [candidates[j] for j in sorted(rng.choice(len(candidates), size=min(k, len(candidates)), replace=False))]


def _doses_plan(plan: Any, seed: int, index: int, k: int) -> tuple[Any, str]:
    """``plan`` with doses and a procedure note drawn like an administered plan's, seeded by (seed, index, k)."""
    from models.plan import Plan
    from pipelines.cohort.notes import procedure_note, sample_doses

    rng = np.random.default_rng([int(seed), int(index), int(k), 7])
    doses = sample_doses(plan, rng)
    dosed = Plan.from_agents(plan.agents, doses=doses, protocol=plan.protocol)
    return dosed, procedure_note(dosed, doses, rng)


def _one_patient(args: tuple) -> tuple[list[dict[str, Any]], int]:
    """Worker: render and write the extra follow-ups of one patient; return their row fields and how many were new."""
    from pipelines.caseio.nifti import write_nifti

    truth, index, plans, size, root, per_patient, drug_matched, seed = args
    chosen = choose_plans(truth.plan, plans, per_patient + 1, seed, index)[1:]
    if drug_matched:
        chosen += choose_drug_matched(truth.plan, plans, chosen, drug_matched, seed, index)
    folder = Path(root) / "followups" / truth.case_id
    rows, written = [], 0
    for k, plan in enumerate(chosen, start=1):
        dosed, note = _doses_plan(plan, seed, index, k)
        ct_path, lab_path = folder / f"{k}_post_ct.nii.gz", folder / f"{k}_post_labels.nii.gz"
        if not (ct_path.exists() and lab_path.exists()):
            cf = render_counterfactual(truth, dosed, size)
            folder.mkdir(parents=True, exist_ok=True)
            write_nifti(cf.post_ct, ct_path, dtype=np.int16)
            write_nifti(cf.post_labels, lab_path)
            written += 1
        rows.append({"k": k, "plan": dosed.canonical(), "note": note,
                     "post_ct": str(ct_path.relative_to(root)), "post_labels": str(lab_path.relative_to(root))})
    return rows, written


def write_followups(cohort_dir: str | os.PathLike, per_patient: int = 3, seed: int = 0, workers: int = 1,
                    progress: bool = True, drug_matched: int = 0) -> FollowupReport:
    """Add ``per_patient`` counterfactual follow-ups per patient to a virtual cohort (see the module docstring).

    Args:
        cohort_dir: a folder written by ``mewm cohort generate`` (its seed and grid are re-simulated).
        per_patient: extra plans per patient, drawn without replacement among plans with other agents than the
            administered one (`choose_plans`).
        seed: plan and dose draws; the same seed gives the same files.
        drug_matched: up to this many more per patient with the administered plan's embolics and other drugs
            (`choose_drug_matched`); the first ``per_patient`` follow-ups do not depend on it.
        workers: processes; the files do not depend on it.

    Raises:
        ManifestError: not a cohort of this simulator. ConfigError: ``per_patient`` beyond the plan space.
        ValueError: ``per_patient < 1``, ``drug_matched < 0`` or ``workers < 1``.
    """
    from dataclasses import replace

    from pipelines.manifest import read_manifest, write_manifest

    if per_patient < 1 or workers < 1 or drug_matched < 0:
        raise ValueError(f"write_followups needs per_patient >= 1, workers >= 1 and drug_matched >= 0, got "
                         f"{per_patient}, {workers}, {drug_matched}.")
    start = time.perf_counter()
    cohort = regenerate_cohort(cohort_dir)
    records = read_manifest(cohort.root)
    jobs = [(t, i, cohort.plans, cohort.size, str(cohort.root), per_patient, drug_matched, seed)
            for i, t in enumerate(cohort.truths)]
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    results = pool.map(_one_patient, jobs) if pool else map(_one_patient, jobs)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(jobs), desc="extra follow-ups", unit="patient")
    try:
        done = list(results)
    finally:
        if pool:
            pool.shutdown()
    # read_manifest makes paths absolute; the new manifest lives in the same folder, so write them relative again
    out_rows = []
    for r in records:
        rel = {c: (os.path.relpath(getattr(r, c), cohort.root) if getattr(r, c) else None)
               for c in ("ct", "labels", "post_ct", "post_labels", "clinical")}
        out_rows.append(replace(r, **rel))
    for r, (rows, _) in zip(out_rows, done):
        for row in rows:
            out_rows.append(replace(r, case_id=followup_id(r.case_id, row["k"]), post_ct=row["post_ct"],
                                    post_labels=row["post_labels"], plan=row["plan"], note=row["note"],
                                    clinical=None, time_months=None, event=None))
    out_rows = sorted(out_rows, key=lambda r: (patient_of(r.case_id), r.case_id))
    path = cohort.root / FOLLOWUPS_MANIFEST
    meta = json.loads((cohort.root / "manifest.json").read_text())
    meta["followups"] = {"per_patient": int(per_patient), "drug_matched": int(drug_matched), "seed": int(seed),
                         "rows": len(out_rows),
                         "note": "extra simulated follow-ups under other plans (counterfactuals of the simulator) "
                                 "for dynamics training only; no survival outcomes"}
    for target, text in ((path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True) + "\n"),
                         (path, None)):
        tmp = target.with_name(f".{target.name}.tmp")
        if text is None:
            write_manifest(out_rows, tmp)
        else:
            tmp.write_text(text)
        os.replace(tmp, target)
    return FollowupReport(manifest=path, patients=len(records), followups=sum(len(rows) for rows, _ in done),
                          written=sum(w for _, w in done), seconds=time.perf_counter() - start)
