"""Probe of the sampling settings (the response-token guidance, `WorldModel.response_guidance`,
`simulate.combine_guidance`; the sampler and its steps): the same patients, plans, samples and seed as `mewm eval
dynamics`, simulated once per setting, against the counterfactual truth rendered once.

Usage: .venv/bin/python scripts/response_guidance_probe.py COHORT N SETTING [SETTING ...]
  SETTING is G:R[:S[:SAMPLER]] (classifier-free guidance G, response guidance R; R = G or "-" is the two-branch
  sampler; S sampler steps and SAMPLER "ddim" or "dpm_solver", the defaults (15, dpm_solver) when left out).
e.g.   .venv/bin/python scripts/response_guidance_probe.py runs/cohort_val_s5 20 2:- 2:4 2:7 2:4:25:ddim
Prints per setting: pooled, training-crop and within-patient Spearman of the simulated viable change against the
truth, its MAE (ml), how the simulation follows the response token (within patient), and seconds per patient;
then the mean simulated and true viable change per embolic group (where a systematic bias sits).
"""

import dataclasses
import sys
import time

import numpy as np
import torch

from models.errors import LesionTooLargeError
from pipelines.cohort.counterfactual import choose_plans, regenerate_cohort, render_counterfactual
from pipelines.config import DEFAULT_SAMPLER, DEFAULT_STEPS
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.worldmodel import evaluate as ev
from pipelines.worldmodel import metrics
from pipelines.worldmodel.crops import embolic_group
from pipelines.worldmodel.weights import load_world_model


def parse_setting(text: str) -> tuple[float, float | None, int, str]:
    g, _, rest = text.partition(":")
    r, _, rest = rest.partition(":")
    steps, _, sampler = rest.partition(":")
    return float(g), None if r in ("", "-") else float(r), int(steps or DEFAULT_STEPS), sampler or DEFAULT_SAMPLER


@torch.no_grad()
def main(cohort_dir: str, n: int, settings: list[str]) -> None:
    cohort = regenerate_cohort(cohort_dir)
    records = read_manifest(cohort.root)
    world = load_world_model()
    rows: dict[str, list[dict]] = {s: [] for s in settings}
    seconds = {s: 0.0 for s in settings}
    for i in range(n):
        truth, case = cohort.truths[i], load_manifest_case(records[i])
        plans = choose_plans(truth.plan, cohort.plans, 4, 0, i)
        true_change = None
        for setting in settings:
            g, r, steps, sampler = parse_setting(setting)
            t0 = time.perf_counter()
            try:
                sampled = dataclasses.replace(world, response_guidance=r, sampler=sampler)
                result = sampled.simulate(case, plans, samples=3, seed=0, steps=steps, guidance=g)
            except LesionTooLargeError:
                break
            seconds[setting] += time.perf_counter() - t0
            voxel_ml = float(np.prod(result.crop.spacing)) / 1000.0
            pre_viable = metrics.viable_volume_ml(result.pre_labels, voxel_ml)
            if true_change is None:
                true_change = [metrics.viable_volume_ml(ev._truth_crop(
                    case, render_counterfactual(truth, plan, cohort.size), result.crop).post_labels[0].numpy(),
                    voxel_ml) - pre_viable for plan in plans]
            for plan, sim, true in zip(plans, result.plans, true_change):
                rows[setting].append({"case_id": case.case_id, "enlarged_crop": result.enlarged_crop,
                                      "embolics": embolic_group(plan),
                                      "true_viable_change_ml": true,
                                      "pred_viable_change_ml": float(np.mean(sim.changes["viable_tumour"])),
                                      **ev._token_row(sim, result.pre_labels, pre_viable, voxel_ml)})
        print(f"patient {i + 1}/{n} done", flush=True)
    for setting in settings:
        r = rows[setting]
        train = [x for x in r if not x["enlarged_crop"]]
        key, true = "pred_viable_change_ml", "true_viable_change_ml"
        line = (f"{setting:>8}: {len(r)} pairs, pooled {ev.spearman_of(r, key):.3f}, training crop "
                f"{metrics.spearman([x[key] for x in train], [x[true] for x in train]):.3f} ({len(train)}), "
                f"within-patient {ev.within_patient_spearman(r, key).mean:.3f}, MAE {ev._mae(r, key, true):.1f} ml")
        if ev.has_token(r):
            line += f", token following {ev.token_following(r).mean:.3f}"
        print(line + f", {seconds[setting] / max(1, len({x['case_id'] for x in r})):.1f} s/patient", flush=True)
        for group in sorted({x["embolics"] for x in r}):
            g_rows = [x for x in r if x["embolics"] == group]
            print(f"          {group:<32} {len(g_rows):3d} pairs: simulated "
                  f"{np.mean([x[key] for x in g_rows]):7.1f} ml, true {np.mean([x[true] for x in g_rows]):7.1f} ml",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
