"""``mewm bench dynamics``: how fast the world model simulates, batched vs one sample at a time, on this machine.

A benchmark, not a test: figures depend on the machine and its load, and are written with the machine's
description. Recipe of `bench_dynamics`:

1. load the weights and a case (default: the first sample case); pick ``plans`` plans spread over the cohort's
   plan space; one warm-up call (not timed into the figures);
2. batched: all plans × samples in ONE `WorldModel.simulate` call, ``repeats`` times;
3. one at a time: the same number of samples, one plan and one sample per call, ``repeats`` times;
4. samples per second of both (best repeat), the speed-up, seconds per simulated plan, denoiser passes per plan
   compared with the reference MeWM (200 ancestral DDPM steps per sample, batches of 5, reference-mewm.md §3),
   peak memory (``ru_maxrss`` of the process: the peak so far, loading included) and torch threads.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from models.errors import ConfigError
from pipelines.case import Case
from pipelines.cohort.plan_space import cohort_plan_space
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.worldmodel.metrics import json_safe
from pipelines.worldmodel.report import (command_line, machine_info, metric_entry, peak_rss_mb,
                                         update_card_section, write_report)
from pipelines.worldmodel.weights import load_world_model

__all__ = ["REFERENCE", "SPEEDUP_TARGET", "bench_dynamics"]

# The reference MeWM sampler (reference-mewm.md §3): 200-step ancestral DDPM, no guidance, T = 5 samples per batch.
REFERENCE = {"denoiser_passes_per_sample": 200, "samples_per_batch": 5, "denoiser_calls_per_plan": 200}
SPEEDUP_TARGET = ">= 3"


def _spread(items: list[Any], k: int) -> list[Any]:
    """``k`` items evenly spread over ``items`` (all protocols of the catalogue appear for k >= 3)."""
    if not 1 <= k <= len(items):
        raise ConfigError(f"bench_dynamics: plans must be between 1 and {len(items)}, got {k}.")
    return [items[round(i * (len(items) - 1) / max(k - 1, 1))] for i in range(k)]


def bench_dynamics(weights_dir: str | os.PathLike | None = None, *, plans: int = 8, samples: int = 5,
                   steps: int = 25, repeats: int = 2, guidance: float = 2.0, case: Case | None = None,
                   out: str | os.PathLike | None = None, update_card: bool = True,
                   progress: bool | ProgressFn | None = None) -> dict[str, Any]:
    """Time batched vs one-at-a-time sampling (see the module docstring).

    Args:
        weights_dir: world-model weights (default: the configured ``[worldmodel] weights_dir``).
        plans, samples: P plans × T samples simulated per repeat. steps, guidance: as in `WorldModel.simulate`.
        repeats: timed repeats of each mode (the best is reported, all are kept).
        case: the case to simulate (default: the first sample case).
        out: JSON path (default ``<weights>/dynamics/benchmark.json``).
        update_card: write the "Benchmark" section of ``<weights>/dynamics/MODEL_CARD.md``.
        progress: ``progress(done, total, message)`` per simulate call, ``True`` for a tqdm bar.

    Returns:
        the JSON-safe report: ``batched`` and ``one_at_a_time`` (seconds per repeat, samples per second),
        ``speedup``, ``seconds_per_plan``, ``denoiser`` (passes per plan and sample vs ``reference``),
        ``peak_rss_mb``, ``machine``, ``config``.
    """
    # 1. inputs, weights, case, plans, warm-up
    if min(samples, steps, repeats) < 1:
        raise ConfigError(f"bench_dynamics needs samples, steps and repeats >= 1, got {samples}, {steps}, {repeats}.")
    world = load_world_model(weights_dir)
    if case is None:
        from pipelines.samples import list_sample_cases, load_sample_case

        case = load_sample_case(list_sample_cases()[0].case_id)
    plan_list = _spread(cohort_plan_space(), plans)
    report = resolve_progress(progress, "bench dynamics", "call")
    total_calls, done = 1 + repeats * (1 + plans * samples), [0]

    def tick(message: str) -> None:
        done[0] += 1
        if report:
            report(done[0], total_calls, message)

    world.simulate(case, plan_list[:1], samples=1, seed=0, steps=steps, guidance=guidance)
    tick("warm-up")

    # 2. batched: every plan and sample in one call
    batched, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = world.simulate(case, plan_list, samples=samples, seed=0, steps=steps, guidance=guidance)
        batched.append(time.perf_counter() - t0)
        tick("batched")

    # 3. one plan and one sample per call, same total
    single = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for plan in plan_list:
            for t in range(samples):
                world.simulate(case, [plan], samples=1, seed=t, steps=steps, guidance=guidance)
                tick("one at a time")
        single.append(time.perf_counter() - t0)

    # 4. figures
    n = plans * samples
    batched_sps, single_sps = n / min(batched), n / min(single)
    guided = guidance != 1.0
    passes_per_sample = steps * (2 if guided else 1)
    bench = {
        "kind": "dynamics-benchmark",
        "command": command_line("bench", "dynamics", weights=weights_dir, plans=plans, samples=samples, steps=steps,
                                repeats=repeats),
        "weights": str(world.weights_dir), "case_id": case.case_id,
        "config": {"plans": plans, "samples": samples, "steps": steps, "repeats": repeats, "guidance": guidance,
                   "max_batch": world.max_batch, "crop": world.crop.to_dict(),
                   "plan_list": [p.canonical() for p in plan_list]},
        "batched": {"seconds": batched, "samples_per_second": batched_sps, "timings_s": result.timings},
        "one_at_a_time": {"seconds": single, "samples_per_second": single_sps},
        "speedup": metric_entry(batched_sps / single_sps, SPEEDUP_TARGET),
        "seconds_per_plan": min(batched) / plans,
        "denoiser": {"passes_per_sample": passes_per_sample, "calls_per_plan": result.denoiser_passes / plans,
                     "calls_total": result.denoiser_passes, "rows_per_step": result.denoiser_rows,
                     "classifier_free_guidance": guided},
        "reference": dict(REFERENCE, note="MeWM reference: 200-step ancestral DDPM per batch of 5 samples, plus a "
                                          "CLIP text forward every step (reference-mewm.md §3)"),
        "peak_rss_mb": peak_rss_mb(), "torch_threads": torch.get_num_threads(), "machine": machine_info(),
    }
    out = Path(out) if out is not None else world.weights_dir / "dynamics" / "benchmark.json"
    write_report(bench, out)
    if update_card:
        update_card_section(world.weights_dir / "dynamics" / "MODEL_CARD.md", "Benchmark", _card_text(bench, out))
    return json_safe(bench)


def _card_text(bench: dict[str, Any], out: Path) -> str:
    m, d, c = bench["machine"], bench["denoiser"], bench["config"]
    return "\n".join([
        f"{c['plans']} plans × {c['samples']} samples, {c['steps']} DDIM steps, guidance {c['guidance']}, "
        f"case {bench['case_id']}.", "",
        f"- Batched (one call): {bench['batched']['samples_per_second']:.2f} samples/s; one at a time: "
        f"{bench['one_at_a_time']['samples_per_second']:.2f} samples/s; speed-up "
        f"{bench['speedup']['value']:.1f}× (target {SPEEDUP_TARGET}).",
        f"- {bench['seconds_per_plan']:.2f} s per simulated plan ({c['samples']} samples).",
        f"- Denoiser: {d['passes_per_sample']} passes per sample, {d['calls_per_plan']:.1f} batched calls per plan "
        f"(reference MeWM: {REFERENCE['denoiser_passes_per_sample']} per sample, batches of "
        f"{REFERENCE['samples_per_batch']}).",
        f"- Peak memory {bench['peak_rss_mb']:.0f} MB; torch threads {bench['torch_threads']}.",
        f"- Command: `{bench['command']}`",
        f"- Machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}"
        f"{', GPU ' + m['cuda'] if m['cuda'] else ''}; full report: `{out.name}`",
    ])
