"""Compare `mewm eval dynamics` reports on their training-crop pairs: pooled and within-patient Spearman of viable
change, MAE, HU errors, Lipiodol Dice, and the autoencoder ceiling where a report has it (the dynamics card's
"Experiment" table).

Usage: .venv/bin/python scripts/compare_dynamics_evaluations.py NAME=report.json [NAME=report.json ...]
"""

import json
import sys

import numpy as np

from pipelines.worldmodel.metrics import spearman


def _figures(rows: list[dict], key: str, lip_key: str, hu: str) -> str:
    true = [r["true_viable_change_ml"] for r in rows]
    by_case: dict[str, list[dict]] = {}
    for r in rows:
        by_case.setdefault(r["case_id"], []).append(r)
    within = [spearman([r[key] for r in rs], [r["true_viable_change_ml"] for r in rs]) for rs in by_case.values()]
    lip = [r[lip_key] for r in rows if r[lip_key] is not None]
    return (f"spearman {spearman([r[key] for r in rows], true):.3f} within-patient {np.nanmean(within):.3f} "
            f"MAE {np.mean([abs(r[key] - t) for r, t in zip(rows, true)]):.1f} "
            f"HU mean err {np.mean([abs(r[hu + '_mean'] - r['true_hu_mean']) for r in rows]):.1f} "
            f"HU sd err {np.mean([abs(r[hu + '_sd'] - r['true_hu_sd']) for r in rows]):.1f} "
            f"Lipiodol Dice {np.mean(lip):.3f} mean change {np.mean([r[key] for r in rows]):.1f} "
            f"(true {np.mean(true):.1f})")


for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    rows = [r for r in json.load(open(path))["pairs"] if not r.get("enlarged_crop")]
    print(f"{name}: {len(rows)} pairs: " + _figures(rows, "pred_viable_change_ml", "lipiodol_dice", "pred_hu"))
    if "ceiling_viable_change_ml" in rows[0]:
        print("  autoencoder ceiling: " + _figures(rows, "ceiling_viable_change_ml", "ceiling_lipiodol_dice",
                                                   "ceiling_hu"))
