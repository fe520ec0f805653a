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

Steps 1–4 run once per compute precision (`WorldModel.precision`, default float32 then bfloat16) on the same loaded
networks, so the precisions are compared on the same machine in the same run; the first is the headline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from models.errors import ConfigError
from pipelines.case import Case
from pipelines.cohort.plan_space import cohort_plan_space
from pipelines.config import DEFAULT_STEPS
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.worldmodel.metrics import json_safe
from pipelines.worldmodel.report import (command_line, machine_info, metric_entry, peak_rss_mb,
                                         update_card_section, write_report)
from pipelines.worldmodel.simulate import DECODE_BATCH
from pipelines.worldmodel.weights import PRECISIONS, SAMPLER_NAMES, WorldModel, load_world_model

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
                   steps: int = DEFAULT_STEPS, repeats: int = 2, guidance: float = 2.0,
                   precisions: Sequence[str] = PRECISIONS, sampler: str | None = None, case: Case | None = None,
                   out: str | os.PathLike | None = None, update_card: bool = True,
                   progress: bool | ProgressFn | None = None) -> dict[str, Any]:
    """Time batched vs one-at-a-time sampling (see the module docstring), in each compute precision.

    Args:
        weights_dir: world-model weights (default: the configured ``[worldmodel] weights_dir``).
        plans, samples: P plans × T samples simulated per repeat. steps, guidance: as in `WorldModel.simulate`.
        repeats: timed repeats of each mode (the best is reported, all are kept).
        precisions: `WorldModel.precision` values to time, one after the other; the first is the headline.
        sampler: `WorldModel.sampler` (default: the configured ``[worldmodel] sampler``).
        case: the case to simulate (default: the first sample case).
        out: JSON path (default ``<weights>/dynamics/benchmark.json``).
        update_card: write the "Benchmark" section of ``<weights>/dynamics/MODEL_CARD.md``.
        progress: ``progress(done, total, message)`` per simulate call, ``True`` for a tqdm bar.

    Returns:
        the JSON-safe report: for the headline precision ``batched`` and ``one_at_a_time`` (seconds per repeat,
        samples per second), ``speedup``, ``seconds_per_plan``, ``denoiser`` (passes per plan and sample vs
        ``reference``); ``runs``: the same per precision; ``peak_rss_mb``, ``machine``, ``config``.
    """
    # 1. inputs, weights, case, plans
    if min(samples, steps, repeats) < 1:
        raise ConfigError(f"bench_dynamics needs samples, steps and repeats >= 1, got {samples}, {steps}, {repeats}.")
    precisions = tuple(precisions)
    if not precisions or len(set(precisions)) != len(precisions) or not set(precisions) <= set(PRECISIONS):
        raise ConfigError(f"bench_dynamics: precisions must be distinct values of {', '.join(PRECISIONS)}, got "
                          f"{precisions!r}.")
    world = load_world_model(weights_dir, precision=precisions[0], sampler=sampler)
    if case is None:
        from pipelines.samples import list_sample_cases, load_sample_case

        case = load_sample_case(list_sample_cases()[0].case_id)
    plan_list = _spread(cohort_plan_space(), plans)
    report = resolve_progress(progress, "bench dynamics", "call")
    total_calls, done = len(precisions) * (1 + repeats * (1 + plans * samples)), [0]

    def tick(message: str) -> None:
        done[0] += 1
        if report:
            report(done[0], total_calls, message)

    runs = [_time_modes(replace(world, precision=precision), case, plan_list, samples, steps, repeats, guidance,
                        tick) for precision in precisions]

    bench = {
        "kind": "dynamics-benchmark",
        "command": command_line("bench", "dynamics", weights=world.weights_dir, plans=plans, samples=samples,
                                steps=steps, repeats=repeats, precision=",".join(precisions), sampler=world.sampler),
        "weights": str(world.weights_dir), "case_id": case.case_id,
        "config": {"plans": plans, "samples": samples, "steps": steps, "repeats": repeats, "guidance": guidance,
                   "response_guidance": world.token_guidance, "sampler": world.sampler, "max_batch": world.max_batch,
                   "decode_batch": DECODE_BATCH, "crop": world.crop.to_dict(),
                   "plan_list": [p.canonical() for p in plan_list], "precisions": list(precisions)},
        **runs[0], "runs": runs,
        "reference": dict(REFERENCE, note="MeWM reference: 200-step ancestral DDPM per batch of 5 samples, plus a "
                                          "CLIP text forward every step (reference-mewm.md §3)"),
        "peak_rss_mb": peak_rss_mb(), "torch_threads": torch.get_num_threads(), "machine": machine_info(),
    }
    out = Path(out) if out is not None else world.weights_dir / "dynamics" / "benchmark.json"
    write_report(bench, out)
    if update_card:
        update_card_section(world.weights_dir / "dynamics" / "MODEL_CARD.md", "Benchmark", _card_text(bench, out))
    return json_safe(bench)


def _time_modes(world: WorldModel, case: Case, plan_list: list, samples: int, steps: int, repeats: int,
                guidance: float, tick) -> dict[str, Any]:
    """Steps 1–4 of the recipe in one precision: warm-up, batched, one at a time, figures."""
    world.simulate(case, plan_list[:1], samples=1, seed=0, steps=steps, guidance=guidance)
    tick(f"warm-up ({world.precision})")

    # 2. batched: every plan and sample in one call
    batched, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = world.simulate(case, plan_list, samples=samples, seed=0, steps=steps, guidance=guidance)
        batched.append(time.perf_counter() - t0)
        tick(f"batched ({world.precision})")

    # 3. one plan and one sample per call, same total
    single, single_timings = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        single_timings = {}
        for plan in plan_list:
            for t in range(samples):
                r = world.simulate(case, [plan], samples=1, seed=t, steps=steps, guidance=guidance)
                for k, v in r.timings.items():
                    single_timings[k] = single_timings.get(k, 0.0) + v
                tick(f"one at a time ({world.precision})")
        single.append(time.perf_counter() - t0)

    n = len(plan_list) * samples
    batched_sps, single_sps = n / min(batched), n / min(single)
    branches = result.denoiser_rows // n  # denoiser rows per simulated row: guidance branches (`guidance_branches`)
    return {
        "precision": world.precision,
        "batched": {"seconds": batched, "samples_per_second": batched_sps, "timings_s": result.timings},
        "one_at_a_time": {"seconds": single, "samples_per_second": single_sps, "timings_s": single_timings},
        "speedup": metric_entry(batched_sps / single_sps, SPEEDUP_TARGET),
        "seconds_per_plan": min(batched) / len(plan_list),
        "denoiser": {"passes_per_sample": steps * branches,
                     "calls_per_plan": result.denoiser_passes / len(plan_list),
                     "calls_total": result.denoiser_passes, "rows_per_step": result.denoiser_rows,
                     "classifier_free_guidance": branches > 1, "guidance_branches": branches},
    }


def _card_text(bench: dict[str, Any], out: Path) -> str:
    m, c = bench["machine"], bench["config"]
    token = "" if c.get("response_guidance") is None else f" (response token {c['response_guidance']})"
    lines = [f"{c['plans']} plans × {c['samples']} samples, {c['steps']} "
             f"{SAMPLER_NAMES[c.get('sampler', 'ddim')]} steps, "
             f"guidance {c['guidance']}"
             f"{token}, case {bench['case_id']}; up to {c['max_batch']} rows per denoiser call, "
             f"{c['decode_batch']} crops per decoder / segmenter call.", "",
             "| precision | batched samples/s | one at a time samples/s | speed-up (target " + SPEEDUP_TARGET
             + ") | s per plan |", "|---|---|---|---|---|"]
    for run in bench["runs"]:
        lines.append(f"| {run['precision']} | {run['batched']['samples_per_second']:.2f} | "
                     f"{run['one_at_a_time']['samples_per_second']:.2f} | {run['speedup']['value']:.1f}× | "
                     f"{run['seconds_per_plan']:.2f} |")
    d = bench["denoiser"]
    stages = bench["batched"]["timings_s"]
    lines += ["",
              f"- Headline ({bench['precision']}): batched stage seconds "
              + ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if k != "total")
              + f" of {stages.get('total', float('nan')):.1f}.",
              f"- Denoiser: {d['passes_per_sample']} passes per sample, {d['calls_per_plan']:.1f} batched calls per "
              f"plan (reference MeWM: {REFERENCE['denoiser_passes_per_sample']} per sample, batches of "
              f"{REFERENCE['samples_per_batch']}).",
              f"- Peak memory {bench['peak_rss_mb']:.0f} MB; torch threads {bench['torch_threads']}.",
              f"- Command: `{bench['command']}`",
              f"- Machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}"
              f"{', GPU ' + m['cuda'] if m['cuda'] else ''}; full report: `{out.name}`"]
    return "\n".join(lines)
