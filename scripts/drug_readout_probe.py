"""One-off probe: can drug choice be read from the pre-treatment CT and labs at all, with simple features?

For the drug probe's plans (`pipelines.worldmodel.drug_probe.probe_plans`), the response model's viable-tumour
ratio of every training patient (`pipelines.cohort.response.plan_response`: the simulator's truth, no rendering)
is regressed per drug on four features the model could see: the lesion's mean HU minus the liver's on the
pre-treatment CT (arterial enhancement), the lesion's HU SD (texture), log AFP and the largest diameter. On held-out
patients it reports the Spearman correlation of the predicted and true drug contrasts (each drug's ratio minus the
patient's mean over the drugs, pooled) and the best-drug agreement: the figures of `mewm eval drugs`, in ratio
units, for a readout that knows nothing but those features.

Usage: .venv/bin/python scripts/drug_readout_probe.py TRAIN_COHORT HELDOUT_COHORT N_HELDOUT
e.g.   .venv/bin/python scripts/drug_readout_probe.py runs/cohort_train runs/cohort_heldout75 40
"""

import sys

import numpy as np

from pipelines.cohort.counterfactual import regenerate_cohort
from pipelines.cohort.response import plan_response
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.volume import LABELS
from pipelines.worldmodel import metrics
from pipelines.worldmodel.drug_probe import probe_plans


def features(case) -> list[float]:
    ct, labels = case.ct.array, case.labels.array
    tumour = np.isin(labels, [LABELS["tumour"]])
    liver = labels == LABELS["liver"]
    afp = case.covariates.afp if case.covariates.afp is not None else 10.0
    diameter = case.covariates.max_diameter_mm or 0.0
    return [float(ct[tumour].mean() - ct[liver].mean()), float(ct[tumour].std()), float(np.log10(afp)),
            float(diameter)]


def table(cohort_dir: str, n: int | None):
    cohort = regenerate_cohort(cohort_dir)
    records = read_manifest(cohort.root)[:n]
    plans = probe_plans()[1:]
    x = np.array([features(load_manifest_case(r)) for r in records])
    y = np.array([[plan_response(t.patient, p).viable_ratio for p in plans] for t in cohort.truths[:len(records)]])
    return x, y


def main(train_dir: str, heldout_dir: str, n: int) -> None:
    x, y = table(train_dir, None)
    xh, yh = table(heldout_dir, n)
    mu, sd = x.mean(0), x.std(0)
    design = lambda a: np.column_stack([np.ones(len(a)), (a - mu) / sd, ((a - mu) / sd) ** 2])  # noqa: E731
    coef = np.linalg.lstsq(design(x), y, rcond=None)[0]  # one least-squares fit per drug (columns of y)
    pred = design(xh) @ coef
    contrast = lambda m: (m - m.mean(1, keepdims=True)).ravel()  # noqa: E731
    spearman = metrics.spearman(contrast(pred), contrast(yh))
    agreement = float(np.mean(pred.argmin(1) == yh.argmin(1)))
    print(f"{len(x)} training patients, {len(xh)} held-out: drug-contrast Spearman {spearman:.2f}, "
          f"best-drug agreement {agreement:.2f} (chance {1 / y.shape[1]:.2f})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
