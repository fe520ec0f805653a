"""One-off: the drug probe's figures of several `mewm eval drugs` reports on the same first N patients, and, for a
response-token model, how strongly its simulated drug contrasts follow the token's (slope, correlation, spread).

    python scripts/compare_drug_reports.py 20 models/weights/dynamics/experiments/v6/drug_response.json \
        models/weights/dynamics/drug_response.json
"""

import json
import sys

import numpy as np

from pipelines.worldmodel.drug_probe import PROBE_DRUGS
from pipelines.worldmodel.drug_response import _contrasts, drug_figures


def main(n: int, paths: list[str]) -> None:
    for path in paths:
        report = json.load(open(path))
        k = len(report["config"]["plans"])
        patients = [report["pairs"][i:i + k] for i in range(0, len(report["pairs"]), k)][:n]
        m = drug_figures(patients, PROBE_DRUGS)["metrics"]
        print(path, f"({len(patients)} patients)")
        for name in ("within_patient_spearman", "drug_contrast_spearman", "best_drug_agreement"):
            lo, hi = m[name]["interval_95"]
            print(f"  {name}: {m[name]['value']:.3f} [{lo:.2f}, {hi:.2f}]")
        if "token_viable_change_ml" in patients[0][0]:
            token = np.concatenate([_contrasts(rows, "token_viable_change_ml") for rows in patients])
            pred = np.concatenate([_contrasts(rows, "pred_viable_change_ml") for rows in patients])
            spread = {key: np.mean([np.std([r[key] for r in rows[1:]]) for rows in patients])
                      for key in ("pred_viable_change_ml", "token_viable_change_ml", "true_viable_change_ml")}
            print(f"  simulated vs token drug contrasts: slope {np.polyfit(token, pred, 1)[0]:.2f}, correlation "
                  f"{np.corrcoef(token, pred)[0, 1]:.2f}; spread between drugs (ml) simulated "
                  f"{spread['pred_viable_change_ml']:.1f}, token {spread['token_viable_change_ml']:.1f}, true "
                  f"{spread['true_viable_change_ml']:.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
