"""The same simulations measured two ways (docs/worldmodel_design.md "Segment, then blend"): the segmenter's labels
of the whole decoded crop (the measurement since 2026-12-06) and of the decoded crop blended into the pre-treatment
crop first (the measurement before). Plans, samples, seed, steps and guidance are those of `mewm eval dynamics`, so
the figures isolate the measurement from the precision and from sampling noise.

Usage: .venv/bin/python scripts/blend_measurement_probe.py COHORT N [WEIGHTS_DIR]
e.g.   .venv/bin/python scripts/blend_measurement_probe.py runs/cohort_heldout75 20
Prints pooled and within-patient Spearman of the viable change against the truth for both measurements, and the
same for the plans with and without Lipiodol with the mean error (ml).
"""

import sys

import numpy as np
import torch

from models.errors import LesionTooLargeError
from pipelines.cohort.counterfactual import choose_plans, regenerate_cohort, render_counterfactual
from pipelines.cohort.response import plan_parts
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.worldmodel import evaluate as ev
from pipelines.worldmodel import metrics
from pipelines.worldmodel.simulate import blend_weight, segment_in_region
from pipelines.worldmodel.weights import load_world_model

from autoencoder_ceiling import print_by_lipiodol  # scripts/ is on sys.path when run as a script


@torch.no_grad()
def main(cohort_dir: str, n: int, weights_dir: str | None = None) -> None:
    cohort = regenerate_cohort(cohort_dir)
    records = read_manifest(cohort.root)
    world = load_world_model(weights_dir)
    decoded: list[torch.Tensor] = []
    predict = world.segmenter.predict

    def recording_predict(x):  # decode_and_segment hands the segmenter every decoded crop, in row order
        decoded.append(x.clone())
        return predict(x)

    world.segmenter.predict = recording_predict
    rows = []
    for i in range(n):
        truth, case = cohort.truths[i], load_manifest_case(records[i])
        plans = choose_plans(truth.plan, cohort.plans, 4, 0, i)
        decoded.clear()
        try:
            result = world.simulate(case, plans, samples=3, seed=0, steps=25, guidance=2.0)
        except LesionTooLargeError:
            continue
        region = result.region
        weight = blend_weight(region)
        pre = torch.as_tensor(result.crop.image).float()[None]
        x = torch.cat(decoded)
        blended = segment_in_region(world, pre + weight * (x - pre), result.pre_labels, region).numpy()
        voxel_ml = float(np.prod(result.crop.spacing)) / 1000.0
        pre_viable = metrics.viable_volume_ml(result.pre_labels, voxel_ml)
        for k, (plan, sim) in enumerate(zip(plans, result.plans)):
            tc = ev._truth_crop(case, render_counterfactual(truth, plan, cohort.size), result.crop)
            old = [metrics.viable_volume_ml(blended[k * result.samples + t], voxel_ml) - pre_viable
                   for t in range(result.samples)]
            rows.append({"case_id": case.case_id, "lipiodol": "Lipiodol" in plan_parts(plan)[1],
                         "true_viable_change_ml": metrics.viable_volume_ml(tc.post_labels[0].numpy(), voxel_ml)
                         - pre_viable,
                         "whole_viable_change_ml": float(np.mean(sim.changes["viable_tumour"])),
                         "blended_viable_change_ml": float(np.mean(old))})
    for name in ("whole", "blended"):
        key = f"{name}_viable_change_ml"
        true = [r["true_viable_change_ml"] for r in rows]
        print(f"[{name}] {len(rows)} pairs: pooled {metrics.spearman([r[key] for r in rows], true):.3f} "
              f"within-patient {ev.within_patient_spearman(rows, key).mean:.3f} "
              f"MAE {ev._mae(rows, key, 'true_viable_change_ml'):.1f}")
        print_by_lipiodol(rows, key)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
