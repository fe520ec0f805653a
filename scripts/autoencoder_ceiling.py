"""The autoencoder ceiling for any autoencoder + segmenter pair, without a dynamics model (the dynamics card's
"Version history" ceiling table, first 30 held-out patients): the true post crops of 4 plans per patient, encoded,
decoded and segmented like a simulation; pooled and within-patient Spearman of viable change, MAE, Lipiodol Dice,
and the same segmenter on the sharp true crops. "blended" is the measurement before 2026-12-06: the segmenter labelled
the decoded crop after it was blended into the pre-treatment crop (two contrast phases in one crop;
docs/worldmodel_design.md "Segment, then blend"). Each is also given for the plans with and without Lipiodol, with
its mean error (ml).

Usage: .venv/bin/python scripts/autoencoder_ceiling.py COHORT N AUTOENCODER_DIR:SEGMENTATION_DIR [...]
e.g.   .venv/bin/python scripts/autoencoder_ceiling.py runs/cohort_heldout75 30 \\
           models/weights/autoencoder:models/weights/segmentation
The crops and plans are those of `mewm eval dynamics` (`choose_plans`, seed 0; training-crop patients only).
"""

import contextlib
import sys
from types import SimpleNamespace

import numpy as np
import torch

from models.autoencoder import CropAutoencoder
from models.checkpoint import load_checkpoint
from models.errors import LesionTooLargeError
from models.segmentation import CropSegmenter
from pipelines.cohort.counterfactual import choose_plans, regenerate_cohort, render_counterfactual
from pipelines.cohort.response import plan_parts
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.preprocess import window_hu
from pipelines.worldmodel import evaluate as ev
from pipelines.worldmodel import metrics
from pipelines.worldmodel.simulate import segment_in_region
from pipelines.worldmodel.weights import load_world_model


def _net(directory: str, kind: str, cls):
    model, _ = load_checkpoint(directory, kind=kind, build=lambda c: cls(**c), command=f"mewm train {kind}")
    return model.eval()


def print_by_lipiodol(rows: list[dict], key: str) -> None:
    """Spearman of ``key`` with the true viable change and its mean error, for the plans with and without Lipiodol
    (each row has a bool ``lipiodol``)."""
    for lipiodol in (True, False):
        group = [r for r in rows if r["lipiodol"] == lipiodol]
        true = [r["true_viable_change_ml"] for r in group]
        bias = float(np.mean([r[key] - t for r, t in zip(group, true)])) if group else float("nan")
        print(f"    plans {'with' if lipiodol else 'without'} Lipiodol ({len(group)} pairs): Spearman "
              f"{metrics.spearman([r[key] for r in group], true):.3f}, mean error {bias:+.1f} ml")


@torch.no_grad()
def main(cohort_dir: str, n: int, pairs: list[str]) -> None:
    cohort = regenerate_cohort(cohort_dir)
    records = read_manifest(cohort.root)
    worlds = {}
    for pair in pairs:
        ae, seg = pair.split(":")
        worlds[pair] = SimpleNamespace(autoencoder=_net(ae, "autoencoder", CropAutoencoder),
                                       segmenter=_net(seg, "segmentation", CropSegmenter), max_batch=64,
                                       autocast=contextlib.nullcontext)
    rows: dict[str, list[dict]] = {p: [] for p in pairs}
    shipped = load_world_model()  # only for the crop and change region of each case (one 1-step simulation)
    voxel_ml = float(np.prod(shipped.crop.spacing)) / 1000.0
    for i in range(n):
        truth, case = cohort.truths[i], load_manifest_case(records[i])
        plans = choose_plans(truth.plan, cohort.plans, 4, 0, i)
        try:
            result = shipped.simulate(case, plans[:1], samples=1, steps=1, guidance=1.0)
        except LesionTooLargeError:
            continue
        if result.enlarged_crop:
            continue
        truths = [ev._truth_crop(case, render_counterfactual(truth, p, cohort.size), result.crop) for p in plans]
        pre_viable = metrics.viable_volume_ml(result.pre_labels, voxel_ml)
        for pair, world in worlds.items():
            hu, labels = ev._autoencoder_ceiling(world, result, truths)
            post = torch.stack([torch.as_tensor(tc.post_image).float() for tc in truths])
            sharp = np.where(result.region, world.segmenter.predict(post).numpy(), result.pre_labels)
            blended = segment_in_region(world, window_hu(torch.from_numpy(hu))[:, None], result.pre_labels,
                                        result.region).numpy()
            for k, (plan, tc) in enumerate(zip(plans, truths)):
                true_labels = tc.post_labels[0].numpy()
                row = ev._ceiling_row(hu[k], labels[k], sharp[k], true_labels, result.pre_labels, result.region,
                                      voxel_ml, "Lipiodol" in plan_parts(plan)[1])
                true_ml = metrics.viable_volume_ml(true_labels, voxel_ml)
                rows[pair].append({"case_id": case.case_id, **row, "true_viable_change_ml": true_ml - pre_viable,
                                   "sharp_viable_change_ml": row["segmenter_ceiling_viable_change_ml"],
                                   "blended_viable_change_ml": metrics.viable_volume_ml(blended[k], voxel_ml)
                                   - pre_viable, "lipiodol": "Lipiodol" in plan_parts(plan)[1]})
    for pair, rs in rows.items():
        true = [r["true_viable_change_ml"] for r in rs]
        for name in ("ceiling", "blended", "sharp"):
            key = f"{name}_viable_change_ml"
            print(f"{pair} [{name}] {len(rs)} pairs: pooled {metrics.spearman([r[key] for r in rs], true):.2f} "
                  f"within-patient {ev.within_patient_spearman(rs, key).mean:.2f} "
                  f"MAE {ev._mae(rs, key, 'true_viable_change_ml'):.1f}"
                  + (f" Lipiodol Dice {metrics.mean_finite(r['ceiling_lipiodol_dice'] for r in rs).mean:.2f}"
                     if name == "ceiling" else ""))
            print_by_lipiodol(rs, key)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
