"""`generate_cohort`: write a virtual HCC-TACE cohort as ordinary files (NIfTI, CSV/JSON manifest, oracle apart).

Layout of ``out``::

    manifest.csv, manifest.json      one row per case (paths relative to ``out``) + cohort metadata
    plan_space.json                  the cohort's plan catalogue
    DATA_CARD.md                     equations, parameters; states that the cohort is synthetic
    cases/<case_id>/ct.nii.gz, labels.nii.gz, post_ct.nii.gz, post_labels.nii.gz, clinical.json
    oracle/README.md, oracle.csv, truth.csv   hidden truth: models must never read this folder
    dicom/<case_id>/                 DICOM series of the pre-treatment CT for the first ``dicom`` cases

The cohort is written into a temporary sibling folder and renamed at the end, so nothing is half-written.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import CaseIOError
from pipelines.cohort.anatomy import DEFAULT_SIZE, add_image_noise, build_anatomy, render_ct
from pipelines.cohort.lesions import paint_lesions
from pipelines.cohort.plan_space import cohort_plan_space, write_plan_space
from pipelines.cohort.postop import render_post
from pipelines.cohort.response import Response
from pipelines.cohort.simulate import CaseTruth, case_seeds, simulate_case
from pipelines.manifest import MANIFEST_COLUMNS, COVARIATE_COLUMNS, ManifestRecord, write_manifest
from pipelines.volume import LABELS, Volume

__all__ = ["GENERATOR_VERSION", "CohortReport", "generate_cohort", "render_case"]

GENERATOR_VERSION = "mewm-cohort 1.0"
DATA_CARD_PATH = Path(__file__).resolve().parent.parent.parent / "docs" / "DATA_CARD_cohort.md"
ORACLE_README = """# Oracle: hidden ground truth. Models must never read this folder.

`oracle.csv` holds the exact expected survival (restricted mean survival time to 60 months) of every plan of
`../plan_space.json` for every case, and flags the best plan. `truth.csv` holds each case's latent biology and the
simulator's response to the administered plan. Both exist to score models (plan regret, response error), never to
train them: training code reads `manifest.csv` and the files it names.
"""


@dataclass
class CohortReport:
    """What `generate_cohort` did."""

    out: Path
    n: int
    seed: int
    size: tuple[int, int, int]
    seconds: float
    workers: int
    n_plans: int
    assigned_counts: dict[str, int] = field(default_factory=dict)
    best_counts: dict[str, int] = field(default_factory=dict)
    events: int = 0

    @property
    def cases_per_second(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        top = max(self.best_counts.values()) if self.best_counts else 0
        return "\n".join([
            f"Virtual HCC-TACE cohort (synthetic, not patient data) written to {self.out}",
            f"  {self.n} cases, seed {self.seed}, grid {'x'.join(map(str, self.size))}, {self.workers} worker(s)",
            f"  {self.seconds:.1f} s, {self.cases_per_second:.2f} cases/second",
            f"  plan space {self.n_plans} plans; {len(self.assigned_counts)} administered; "
            f"{len(self.best_counts)} distinct optimal plans (most common optimal for {top}/{self.n})",
            f"  deaths observed: {self.events}/{self.n}",
            "  oracle/ holds the hidden truth: never train on it.",
        ])


def render_case(truth: CaseTruth, size: tuple[int, int, int],
                response: Response | None = None) -> tuple[Volume, Volume, Volume, Volume]:
    """``(ct, labels, post_ct, post_labels)`` of a simulated case on a grid of ``size`` voxels.

    ``response``: render the post-TACE pair under this response instead of the administered plan's
    (``truth.response``); the anatomy, lesions and pre-treatment CT are the same (see `render_counterfactual`).
    """
    rng = np.random.default_rng(truth.render_seed)
    anatomy = build_anatomy(truth.patient.biology.cirrhosis, rng, size)
    noise_sd = float(rng.uniform(10.0, 18.0))
    hu = render_ct(anatomy, "arterial", rng)
    labels = paint_lesions(truth.patient, anatomy, hu, rng)
    hu = add_image_noise(hu, noise_sd, rng)
    post_hu, post_labels = render_post(truth.patient, anatomy, labels,
                                        truth.response if response is None else response, rng)
    post_hu = add_image_noise(post_hu, noise_sd, rng)
    aff = anatomy.affine
    return (Volume(hu, aff, "scalar", "CT"), Volume(labels, aff, "label", "labels"),
            Volume(post_hu, aff, "scalar", "post-TACE CT"), Volume(post_labels, aff, "label", "post-TACE labels"))


def _clinical(truth: CaseTruth) -> dict[str, Any]:
    return {
        "case_id": truth.case_id,
        "synthetic": True,
        "covariates": truth.patient.covariates.to_dict(),
        "plan": truth.plan.canonical(),
        "protocol": truth.plan.protocol.value,
        "note": truth.note,
        "outcome": {"time_months": truth.outcome.time_months, "event": truth.outcome.event},
        "phase": {"ct": "arterial", "post_ct": "portal-venous"},
    }


def _one_case(args: tuple) -> dict[str, Any]:
    """Worker: simulate, render and write case ``index``; return its manifest row and hidden truth."""
    from pipelines.caseio.nifti import write_nifti

    ss, index, plans, size, tmp, dicom = args
    truth = simulate_case(ss, index, plans)
    ct, labels, post_ct, post_labels = render_case(truth, size)
    rel = Path("cases") / truth.case_id
    folder = Path(tmp) / rel
    folder.mkdir(parents=True)
    write_nifti(ct, folder / "ct.nii.gz", dtype=np.int16)
    write_nifti(labels, folder / "labels.nii.gz")
    write_nifti(post_ct, folder / "post_ct.nii.gz", dtype=np.int16)
    write_nifti(post_labels, folder / "post_labels.nii.gz")
    (folder / "clinical.json").write_text(json.dumps(_clinical(truth), indent=2, sort_keys=True) + "\n")
    if dicom:
        from pipelines.caseio.dicom import write_dicom_series

        write_dicom_series(ct, Path(tmp) / "dicom" / truth.case_id, patient_id=truth.case_id,
                           series_description="MeWM virtual cohort pre-TACE CT (synthetic)", seed=index)
    cov = truth.patient.covariates.to_dict()
    record = ManifestRecord(
        case_id=truth.case_id, ct=str(rel / "ct.nii.gz"), labels=str(rel / "labels.nii.gz"),
        post_ct=str(rel / "post_ct.nii.gz"), post_labels=str(rel / "post_labels.nii.gz"),
        clinical=str(rel / "clinical.json"), plan=truth.plan.canonical(), note=truth.note,
        time_months=truth.outcome.time_months, event=truth.outcome.event,
        covariates={k: cov.get(k) for k in COVARIATE_COLUMNS},
    )
    bio = truth.patient.biology
    latent = {"case_id": truth.case_id, "cirrhosis": bio.cirrhosis, "vascularity": bio.vascularity,
              "proliferation": bio.proliferation, "heterogeneity": bio.heterogeneity,
              "lipiodol_retention": bio.lipiodol_retention,
              **{f"sensitivity_{k}": v for k, v in bio.sensitivity.items()},
              "plan_index": truth.plan_index, "kill": truth.response.kill, "harm": truth.response.harm,
              "viable_ratio": truth.response.viable_ratio, "necrosis_fraction": truth.response.necrosis_fraction,
              "lipiodol_fraction": truth.response.lipiodol_fraction,
              "viable_ml_pre": float((labels.array == LABELS["tumour"]).sum() * labels.voxel_volume_ml),
              "viable_ml_post": float((post_labels.array == LABELS["tumour"]).sum() * labels.voxel_volume_ml)}
    return {"record": record, "oracle": truth.oracle, "latent": latent, "plan_index": truth.plan_index}


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise CaseIOError(f"{out} exists and is not empty; choose a new --out or pass --overwrite to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)


def generate_cohort(n: int, seed: int, out: str | os.PathLike, dicom: int = 0,
                    size: tuple[int, int, int] | list[int] | None = None, progress: bool = True,
                    overwrite: bool = False, workers: int = 1) -> CohortReport:
    """Simulate ``n`` virtual patients with ``seed`` and write them to ``out`` (see the module docstring).

    Args:
        dicom: also write a DICOM series of the pre-treatment CT for the first ``dicom`` cases.
        size: grid in voxels ``(X, Y, Z)`` over the fixed 320 x 256 x 200 mm field of view (default 160 x 128 x 80).
        workers: processes; results are identical for any number of workers.

    Raises:
        CaseIOError: ``out`` is not empty and ``overwrite`` is false. ValueError: bad ``n``, ``size`` or ``workers``.
    """
    # 1. check inputs
    out = Path(out).expanduser().resolve()
    size = tuple(int(s) for s in (size or DEFAULT_SIZE))
    if n < 1 or workers < 1 or dicom < 0:
        raise ValueError(f"generate_cohort needs n >= 1, workers >= 1, dicom >= 0; got n={n}, workers={workers}, "
                         f"dicom={dicom}.")
    if len(size) != 3 or min(size) < 8:
        raise ValueError(f"generate_cohort size must be three integers >= 8, got {size}.")
    _prepare_out(out, overwrite)
    start = time.perf_counter()
    plans = cohort_plan_space()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # 2. simulate and write the cases
        jobs = [(ss, i, plans, size, str(tmp), i < dicom) for i, ss in enumerate(case_seeds(seed, n))]
        if workers == 1:
            results_iter = map(_one_case, jobs)
        else:
            pool = ProcessPoolExecutor(max_workers=workers)
            results_iter = pool.map(_one_case, jobs)
        if progress:
            from tqdm import tqdm

            results_iter = tqdm(results_iter, total=n, desc="virtual cohort", unit="case")
        try:
            results = list(results_iter)
        finally:
            if workers > 1:
                pool.shutdown()
        # 3. manifest, plan space, oracle, data card
        write_manifest([r["record"] for r in results], tmp / "manifest.csv")
        meta = {"name": "MeWM virtual HCC-TACE cohort", "synthetic": True, "generator_version": GENERATOR_VERSION,
                "seed": int(seed), "n": int(n), "grid": {"size": list(size), "field_of_view_mm": [320, 256, 200],
                                                          "orientation": "RAS"},
                "labels": {str(v): k for k, v in LABELS.items()}, "columns": list(MANIFEST_COLUMNS),
                "plan_space": "plan_space.json", "oracle": "oracle/ (never read by models)",
                "dicom_cases": int(min(dicom, n)), "data_card": "DATA_CARD.md"}
        (tmp / "manifest.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        write_plan_space(plans, tmp / "plan_space.json")
        _write_oracle(tmp / "oracle", results, plans)
        shutil.copyfile(DATA_CARD_PATH, tmp / "DATA_CARD.md")
        # 4. publish atomically
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    seconds = time.perf_counter() - start
    best = Counter(plans[int(np.argmax(r["oracle"]))].canonical() for r in results)
    assigned = Counter(plans[r["plan_index"]].canonical() for r in results)
    return CohortReport(out=out, n=n, seed=int(seed), size=size, seconds=seconds, workers=workers,
                        n_plans=len(plans), assigned_counts=dict(assigned), best_counts=dict(best),
                        events=sum(bool(r["record"].event) for r in results))


def _write_oracle(folder: Path, results: list[dict], plans: list[Any]) -> None:
    folder.mkdir()
    (folder / "README.md").write_text(ORACLE_README)
    with (folder / "oracle.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "plan_index", "plan", "expected_survival_months", "is_best"])
        for r in results:
            best = int(np.argmax(r["oracle"]))
            for j, p in enumerate(plans):
                w.writerow([r["record"].case_id, j, p.canonical(), f"{r['oracle'][j]:.4f}", int(j == best)])
    rows = [r["latent"] for r in results]
    with (folder / "truth.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
