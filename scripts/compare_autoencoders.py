"""Reconstruction error of autoencoders on one held-out split, and a picture of the same crops through each.

Prints the L1 (HU) of the clamped reconstructions over whole crops and inside the true tumour, on the held-out split
of a training manifest (the split `mewm train autoencoder` holds out, `split_cases`), and writes a PNG of held-out
post-treatment crops of a cohort, sharp and through each autoencoder (the slice with the most tumour).

Usage: .venv/bin/python scripts/compare_autoencoders.py MANIFEST COHORT OUT.png [NAME=]AUTOENCODER_DIR [...]
e.g.   .venv/bin/python scripts/compare_autoencoders.py runs/cohort_train/manifest_followups.csv \\
           runs/cohort_heldout75 models/weights/autoencoder/decoder_comparison.png "version 2=<its dir>" \
           "version 3=models/weights/autoencoder"
(the autoencoder card's figures; synthetic data only, research use).
"""

import sys

import matplotlib
import numpy as np
import torch

from models.autoencoder import CropAutoencoder
from models.checkpoint import load_checkpoint
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.preprocess import preprocess_case, unwindow_hu
from pipelines.worldmodel.crops import AutoencoderCrops
from pipelines.worldmodel.regions import TUMOUR_LABELS
from pipelines.worldmodel.train import DEFAULT_CROP, VAL_BATCH, _prepare

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CASES = ("VC00003", "VC00010", "VC00021")


def _load(directory):
    return load_checkpoint(directory, kind="autoencoder", build=lambda c: CropAutoencoder(**c), command="x")[0].eval()


@torch.no_grad()
def _errors(model, val: AutoencoderCrops) -> tuple[float, float]:
    total = tumour = n = nt = 0.0
    for s in range(0, len(val), VAL_BATCH):
        x, y = val.images[s:s + VAL_BATCH], val.labels[s:s + VAL_BATCH].long()
        err = unwindow_hu(model.decode(model.encode(x)).clamp(-1, 1)) - unwindow_hu(x)
        t = torch.isin(y, torch.tensor(TUMOUR_LABELS))
        total, n = total + float(err.abs().sum()), n + err.numel()
        tumour, nt = tumour + float(err.abs()[t].sum()), nt + float(t.sum())
    return total / n, tumour / nt


@torch.no_grad()
def _figure(models, names, cohort, path) -> None:
    rows = [r for r in read_manifest(cohort) if r.case_id in CASES]
    size = (3 * (1 + len(models)), 3 * len(rows))
    fig, axes = plt.subplots(len(rows), 1 + len(models), figsize=size, squeeze=False)
    for i, record in enumerate(rows):
        sample = preprocess_case(load_manifest_case(record), spacing=DEFAULT_CROP.spacing,
                                 crop_size=DEFAULT_CROP.crop_size)
        x, labels = sample.post_image.as_tensor()[None].float(), sample.post_labels[0].numpy()
        tumour = np.isin(labels, TUMOUR_LABELS)
        z = int(tumour.sum(axis=(0, 1)).argmax())
        truth = unwindow_hu(x[0, 0].numpy())
        decoded = [(name, unwindow_hu(m.decode(m.encode(x)).clamp(-1, 1)[0, 0].numpy()))
                   for m, name in zip(models, names)]
        for j, (title, hu) in enumerate([("true post crop", truth)] + decoded):
            ax = axes[i, j]
            ax.imshow(hu[:, :, z].T, cmap="gray", vmin=-100, vmax=300, origin="lower")
            ax.contour(tumour[:, :, z].T, levels=[0.5], colors="y", linewidths=0.6)
            err = "" if j == 0 else f"  tumour L1 {np.abs(hu - truth)[:, :, z][tumour[:, :, z]].mean():.1f} HU"
            ax.set_title(f"{record.case_id} {title}{err}", fontsize=7)
            ax.axis("off")
    fig.suptitle("Synthetic virtual cohort (held out); W/L 400/100; yellow: true tumour. Research use only.",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(manifest: str, cohort: str, out: str, *dirs: str) -> None:
    cache, split = _prepare(manifest, DEFAULT_CROP, None, False)
    val = AutoencoderCrops(cache, split.val)
    names = [d.split("=", 1)[0] if "=" in d else d for d in dirs]
    models = [_load(d.split("=", 1)[-1]) for d in dirs]
    for name, m in zip(names, models):
        l1, tumour = _errors(m, val)
        print(f"{name}: L1 {l1:.2f} HU, tumour L1 {tumour:.2f} HU ({len(val)} held-out crops)")
    _figure(models, names, cohort, out)
    print("wrote", out)


if __name__ == "__main__":
    main(*sys.argv[1:])
