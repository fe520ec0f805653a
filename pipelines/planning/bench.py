"""`mewm bench planning`: seconds per case with the default search on this machine, and denoiser passes compared
with the reference search.

The reference (reference-mewm.md §6) makes one generator call per candidate evaluation — repeats across beams
included — and each call is 200 ancestral DDPM passes (batch T). For the same search we count the candidate
evaluations our beam search asks for (``requested_evaluations``) and price them as the reference would
(× 200 passes), against the denoiser passes we actually run (``[planning] steps`` of the world model's sampler,
every candidate of a step in one batched call, repeats cached). Plan quality of the two is not compared here (that
needs the reference's 200-step sampler on the same model); `mewm eval planning` reports our plan quality.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.progress import resolve_progress

__all__ = ["REFERENCE_PASSES_PER_CALL", "bench_planning"]

REFERENCE_PASSES_PER_CALL = 200


def bench_planning(cfg, cases: int = 3, out: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Plan the first ``cases`` sample cases with the configured defaults; write and return the JSON report."""
    import resource

    import torch

    from pipelines.planning.search import plan_case
    from pipelines.policy import load_policy
    from pipelines.samples import list_sample_cases, load_sample_case
    from pipelines.survival.model import load_survival_model
    from pipelines.worldmodel.weights import load_world_model

    world = load_world_model(os.path.expanduser(cfg.worldmodel.weights_dir))
    survival = load_survival_model(os.path.expanduser(cfg.planning.survival_dir))
    policy = load_policy(cfg)
    p = cfg.planning
    infos = list_sample_cases(cfg.app.sample_data_dir)[:cases]
    bar = resolve_progress(progress, "bench planning", "case")
    rows = []
    for i, info in enumerate(infos):
        case = load_sample_case(info.case_id, cfg.app.sample_data_dir)
        t0 = time.perf_counter()
        result = plan_case(case, world, survival, policy=policy, mode=p.mode, samples=p.samples, seed=p.seed,
                           steps=p.steps, guidance=p.guidance, beams=p.beams, drug_horizon=p.drug_horizon,
                           embolic_horizon=p.embolic_horizon)
        seconds = time.perf_counter() - t0
        rows.append({"case_id": info.case_id, "seconds": seconds, "plans_scored": len(result.ranked),
                     "requested_evaluations": result.requested_evaluations,
                     "denoiser_passes": result.denoiser_passes, "simulate_calls": result.simulate_calls,
                     "simulated_samples": result.simulated_samples, "timings_s": result.timings,
                     "best": result.best().plan.canonical()})
        if bar is not None:
            bar(i + 1, len(infos), info.case_id)
    ours = float(np.mean([r["denoiser_passes"] for r in rows]))
    reference = float(np.mean([r["requested_evaluations"] for r in rows])) * REFERENCE_PASSES_PER_CALL
    report = {
        "kind": "planning-benchmark",
        "command": f"mewm bench planning --cases {cases}",
        "settings": {"mode": p.mode, "samples": p.samples, "steps": p.steps, "guidance": p.guidance, "beams": p.beams,
                     "drug_horizon": p.drug_horizon, "embolic_horizon": p.embolic_horizon, "seed": p.seed,
                     "policy": policy.name, "survival_dir": p.survival_dir},
        "cases": rows,
        "seconds_per_case": {"mean": float(np.mean([r["seconds"] for r in rows])),
                             "max": float(np.max([r["seconds"] for r in rows])), "target": "<= 60 on 2 cores"},
        "denoiser_passes": {"ours_per_case": ours, "rows_note": "each pass is one batched denoiser call"},
        "reference": {"passes_per_case_same_search": reference, "passes_per_call": REFERENCE_PASSES_PER_CALL,
                      "note": "one 200-step DDPM call per candidate evaluation, repeats included (§6)"},
        "passes_ratio": {"value": reference / ours if ours else None, "target": ">= 10"},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()},
    }
    out = Path(out) if out else Path(os.path.expanduser(p.survival_dir)) / "planning_benchmark.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report
