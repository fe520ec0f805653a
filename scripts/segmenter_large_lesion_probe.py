"""Where the viable-change error of large lesions comes from (dynamics card, issue-3 note of 2026-12-07).

Usage: .venv/bin/python scripts/segmenter_large_lesion_probe.py COHORT [EVALUATION_JSON]
e.g.   .venv/bin/python scripts/segmenter_large_lesion_probe.py runs/cohort_heldout75 models/weights/dynamics/evaluation.json
Prints, for lesions simulated in the training crop and in an enlarged crop:
1. from the `mewm eval dynamics` report: mean viable change (ml) true / segmenter on the sharp true post crops /
   through the autoencoder / simulated / response token;
2. the segmenter on each case's pre-treatment crop against its labels (viable ml, mean ratio);
3. for enlarged crops, the segmenter on the case's own post-treatment crop, whole and by sliding 48³ windows
   (MONAI `sliding_window_inference`), and which labels the true viable voxels receive (liver = read as liver).
"""

import json
import sys

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.preprocess import preprocess_case
from pipelines.volume import LABELS
from pipelines.worldmodel import metrics
from pipelines.worldmodel.simulate import fitting_crop
from pipelines.worldmodel.weights import load_world_model

KEYS = ("true", "segmenter_ceiling", "ceiling", "pred", "token")


@torch.no_grad()
def main(cohort: str, report: str | None) -> None:
    if report:
        pairs = json.load(open(report))["pairs"]
        for enlarged in (False, True):
            rows = [p for p in pairs if p["enlarged_crop"] == enlarged]
            means = " / ".join(f"{np.mean([p[f'{k}_viable_change_ml'] for p in rows]):.1f}" for k in KEYS
                               if f"{k}_viable_change_ml" in rows[0])
            print(f"{'enlarged' if enlarged else 'training'} crop, {len(rows)} pairs: {' / '.join(KEYS)} = {means}")
    world = load_world_model()
    pre_rows, post_rows = {False: [], True: []}, []
    for record in read_manifest(cohort):
        case = load_manifest_case(record)
        crop = fitting_crop(world, case)
        enlarged = tuple(crop.crop_size) != tuple(world.crop.crop_size)
        voxel_ml = float(np.prod(crop.spacing)) / 1000.0
        pred = world.segmenter.predict(crop.image.as_tensor()[None].float())[0].numpy()
        pre_rows[enlarged].append((metrics.viable_volume_ml(crop.labels[0].numpy(), voxel_ml),
                                   metrics.viable_volume_ml(pred, voxel_ml)))
        if not enlarged or case.post_ct is None:
            continue
        pair = preprocess_case(case, spacing=crop.spacing, crop_size=crop.crop_size)
        x = pair.post_image.as_tensor()[None].float()
        truth = pair.post_labels[0].numpy()
        whole = world.segmenter.predict(x)[0].numpy()
        windows = sliding_window_inference(x, tuple(world.crop.crop_size), 4, world.segmenter, overlap=0.5,
                                           mode="gaussian").argmax(1)[0].numpy()
        viable = truth == LABELS["tumour"]
        post_rows.append([metrics.viable_volume_ml(a, voxel_ml) for a in (truth, whole, windows)]
                         + [float((whole[viable] == LABELS["liver"]).mean())])
    for enlarged, rows in pre_rows.items():
        t, p = np.array(rows).T
        print(f"pre crops, {'enlarged' if enlarged else 'training'} ({len(rows)}): labels {t.mean():.1f} ml, "
              f"segmenter {p.mean():.1f} ml, mean ratio {np.mean(p / t):.2f}")
    if post_rows:
        r = np.array(post_rows).mean(axis=0)
        print(f"post crops, enlarged ({len(post_rows)}): viable true {r[0]:.1f} ml, segmenter whole {r[1]:.1f}, "
              f"sliding windows {r[2]:.1f}; true viable voxels read as liver {r[3]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
