"""How biased are the segmenter's volumes, and what does that cost the viable-change measurement?

Usage: .venv/bin/python scripts/segmenter_volume_bias_probe.py COHORT N [WEIGHTS_DIR] [--ratios-only]
e.g.   .venv/bin/python scripts/segmenter_volume_bias_probe.py runs/cohort_heldout75 75 --ratios-only
(WEIGHTS_DIR: a folder like models/weights, the default; only its segmenter needs to differ. --ratios-only: part 1
only, about 3 s per patient here; the ceilings render four counterfactuals per patient, about 8 s more.)

For the first N patients of a held-out cohort, in the crop `mewm simulate` uses (training crop or enlarged):
1. the segmenter on each case's own pre-treatment (arterial) and post-treatment (portal-venous) crop: viable tumour
   volume (argmax and softmax-weighted) as a ratio of the labels' volume, and the share of true viable voxels read
   as liver, mean over cases, by crop kind;
2. the two ceilings of `mewm eval dynamics` on the evaluation's plans (the same `choose_plans` draw): the true post
   crops of each plan segmented sharp ("segmenter ceiling") and through the autoencoder ("autoencoder ceiling"),
   their viable change against the truth: pooled / training-crop / enlarged-crop Spearman, mean change, MAE.
No diffusion sampling: this isolates the measurement (segmenter, autoencoder) from the dynamics model.
"""

import sys
import types

import numpy as np
import torch

from pipelines.cohort.counterfactual import choose_plans, regenerate_cohort, render_counterfactual
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.preprocess import preprocess_case
from pipelines.volume import LABELS
from pipelines.worldmodel import evaluate as ev
from pipelines.worldmodel import metrics
from pipelines.worldmodel.regions import change_region
from pipelines.worldmodel.simulate import fitting_crop
from pipelines.worldmodel.weights import load_world_model

VIABLE = LABELS["tumour"]


def volume_ratios(world, image: torch.Tensor, labels: np.ndarray) -> tuple[float, float, float]:
    """(argmax, softmax-weighted) viable volume of the segmenter over the labels' viable volume, and the share of
    the labels' viable voxels the segmenter calls liver."""
    logits = world.segmenter(image[None].float())
    argmax = logits.argmax(1)[0].numpy()
    viable = labels == VIABLE
    true = float(viable.sum())
    return (float((argmax == VIABLE).sum()) / true, float(torch.softmax(logits.float(), 1)[:, VIABLE].sum()) / true,
            float((argmax[viable] == LABELS["liver"]).mean()))


@torch.no_grad()
def main(cohort_dir: str, n: int, weights: str | None, ceilings: bool = True) -> None:
    cohort = regenerate_cohort(cohort_dir)
    records = read_manifest(cohort.root)
    world = load_world_model(weights)
    ratios: dict[bool, list] = {False: [], True: []}
    pairs = []
    for i in range(n):
        truth, case = cohort.truths[i], load_manifest_case(records[i])
        crop = fitting_crop(world, case)
        enlarged = tuple(crop.crop_size) != tuple(world.crop.crop_size)
        pair = preprocess_case(case, spacing=crop.spacing, crop_size=crop.crop_size)
        ratios[enlarged].append(volume_ratios(world, pair.image.as_tensor(), pair.labels[0].numpy())
                                + volume_ratios(world, pair.post_image.as_tensor(), pair.post_labels[0].numpy()))
        print(f"patient {i + 1}/{n}", flush=True)
        if not ceilings:
            continue
        pre_labels = crop.labels[0].numpy().astype(np.uint8)
        result = types.SimpleNamespace(crop=crop, pre_labels=pre_labels,
                                       region=change_region(pre_labels, world.change_margin_mm, crop.spacing))
        plans = choose_plans(truth.plan, cohort.plans, 4, 0, i)
        truths = [ev._truth_crop(case, render_counterfactual(truth, p, cohort.size), crop) for p in plans]
        _, decoded = ev._autoencoder_ceiling(world, result, truths)
        sharp = ev._segmenter_ceiling(world, result, truths)
        voxel_ml = float(np.prod(crop.spacing)) / 1000.0
        pre = metrics.viable_volume_ml(pre_labels, voxel_ml)
        for k, tc in enumerate(truths):
            pairs.append((metrics.viable_volume_ml(tc.post_labels[0].numpy(), voxel_ml) - pre,
                          metrics.viable_volume_ml(sharp[k], voxel_ml) - pre,
                          metrics.viable_volume_ml(decoded[k], voxel_ml) - pre, enlarged))
    for enlarged, rows in ratios.items():
        if rows:
            r = np.mean(rows, axis=0)
            print(f"{'enlarged' if enlarged else 'training'} crops ({len(rows)} cases), segmenter / labels viable "
                  f"volume: pre argmax {r[0]:.3f} soft {r[1]:.3f}; post argmax {r[3]:.3f} soft {r[4]:.3f}; true "
                  f"viable voxels read as liver: pre {r[2]:.3f}, post {r[5]:.3f}")
    if not pairs:
        return
    p = np.array(pairs, dtype=float)
    enl = p[:, 3] > 0
    for name, k in (("segmenter ceiling (sharp)", 1), ("autoencoder ceiling", 2)):
        rho = [metrics.spearman(p[m, k], p[m, 0]) for m in (slice(None), ~enl, enl)]
        print(f"{name}: Spearman pooled {rho[0]:.3f}, training crop {rho[1]:.3f} ({int((~enl).sum())}), enlarged "
              f"{rho[2]:.3f} ({int(enl.sum())}); mean change training {p[~enl, k].mean():.1f} ml (true "
              f"{p[~enl, 0].mean():.1f}), enlarged {p[enl, k].mean():.1f} ml (true {p[enl, 0].mean():.1f}); MAE "
              f"{np.abs(p[:, k] - p[:, 0]).mean():.1f} ml")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--ratios-only"]
    main(args[0], int(args[1]), args[2] if len(args) > 2 else None, ceilings="--ratios-only" not in sys.argv)
