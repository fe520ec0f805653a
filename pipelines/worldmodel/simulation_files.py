"""A `SimulationResult` on disk and as text: what `mewm simulate` writes and prints.

Folder layout (written into a temporary sibling and renamed at the end, so it is never half-written)::

    simulation.json                        settings, plans, volumes per sample, mean ± sd, timings, file names
    plan01/sample01_crop_ct.nii.gz         simulated crop (HU, crop grid: RAS, the model's spacing)
    plan01/sample01_crop_labels.nii.gz     its predicted labels
    plan01/sample01_ct.nii.gz              the full CT with the simulated change region pasted back
    plan01/sample01_labels.nii.gz          the full label image, likewise
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pipelines.caseio.nifti import write_nifti
from pipelines.output_dir import new_output_dir
from pipelines.volume import Volume
from pipelines.worldmodel.simulate import STRUCTURES, SimulationResult
from pipelines.worldmodel.weights import SAMPLER_NAMES

__all__ = ["write_simulation", "volume_change_table"]


def write_simulation(result: SimulationResult, out: str | os.PathLike, info: dict[str, Any] | None = None) -> Path:
    """Write ``result`` into the new folder ``out`` (see the module docstring); return the folder.

    Args:
        info: more entries for ``simulation.json`` (e.g. the case and weights the command was given).

    Raises:
        ConfigError: ``out`` exists and is not empty (results are never mixed or overwritten).
    """
    with new_output_dir(out) as tmp:
        files = []
        for p, sim in enumerate(result.plans):
            rows = []
            for t in range(result.samples):
                stem = f"plan{p + 1:02d}/sample{t + 1:02d}"
                pasted = result.paste_back(p, t)
                names = {"crop_ct": f"{stem}_crop_ct.nii.gz", "crop_labels": f"{stem}_crop_labels.nii.gz",
                         "ct": f"{stem}_ct.nii.gz", "labels": f"{stem}_labels.nii.gz"}
                write_nifti(Volume(sim.crops_hu[t], result.crop.crop_affine, "scalar", "simulated crop"),
                            tmp / names["crop_ct"])
                write_nifti(Volume(sim.labels[t], result.crop.crop_affine, "label", "simulated labels"),
                            tmp / names["crop_labels"])
                write_nifti(pasted.ct, tmp / names["ct"])
                write_nifti(pasted.labels, tmp / names["labels"])
                rows.append(names)
            files.append(rows)
        data = result.to_dict()
        for plan, rows in zip(data["plans"], files):
            plan["files"] = rows
        data.update(info or {})
        (tmp / "simulation.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return Path(out).expanduser().resolve()


def _mean_sd(mean: float, sd: float) -> str:
    return f"{mean:+.2f} ± {sd:.2f}" if math.isfinite(sd) else f"{mean:+.2f} (1 sample)"


def volume_change_table(result: SimulationResult) -> str:
    """Plain-text table: per plan, the mean ± sd change (ml) of each structure from the pre-treatment crop."""
    names = list(STRUCTURES)
    header = ["plan", *(f"{n.replace('_', ' ')} Δ ml" for n in names)]
    rows = [[sim.plan.canonical(), *(_mean_sd(sim.summary[n].mean_change_ml, sim.summary[n].sd_change_ml)
                                     for n in names)] for sim in result.plans]
    pre = ", ".join(f"{n.replace('_', ' ')} {result.pre_volumes[n]:.2f} ml" for n in names)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"Case {result.case_id}: pre-treatment crop {pre}; {result.samples} sample(s) per plan, seed "
             f"{result.seed}, {result.steps} {SAMPLER_NAMES.get(result.sampler, result.sampler)} steps, guidance "
             f"{result.guidance:g}, {result.seconds:.1f} s",
             "  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
