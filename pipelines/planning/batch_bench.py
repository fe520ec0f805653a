"""`mewm bench batch`: cases per hour of batch scoring with one vs two workers, for the process pool and for Ray.

Each configuration scores the same first ``cases`` cases of a manifest into its own fresh folder with the same
settings (`score_manifest`), so the figures compare like with like. Wall time includes starting the workers
(spawning processes or a local Ray, importing torch, loading the models once per worker): that is what a user
waits for, and with few cases it weighs heavily, so the per-case seconds inside the workers are reported too.
The report also checks that every configuration ranked the plans identically (the backends must not change
results). Heavy: run it under ``flock /tmp/mewm_heavy.lock`` on a shared machine.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from pipelines.progress import resolve_progress

__all__ = ["BENCH_DEFAULTS", "bench_batch"]

BENCH_DEFAULTS = {"samples": 2, "steps": 10}  # short on purpose: the comparison, not the search, is measured
NOTICE = "Research use only; not for clinical use."


def _ranking(report) -> dict[str, tuple[list, float]]:
    """Per scored case: the top-3 plan order and the best plan's mean log-risk."""
    return {row.case_id: ([row.best_plan, row.plan_2_plan, row.plan_3_plan], float(row.best_risk_mean))
            for row in report.results.itertuples() if row.status == "ok"}


def bench_batch(manifest: str | os.PathLike | None = None, *, cases: int = 4, settings: dict[str, Any] | None = None,
                out: str | os.PathLike | None = None, backends: tuple[str, ...] = ("process", "ray"),
                workers: tuple[int, ...] = (1, 2), config: Any = None, loader: str | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Score the first ``cases`` cases with every backend × worker count; write and return the JSON report.

    Args:
        manifest: default the sample cases (``[app] sample_data_dir``). settings: batch settings over
            `BENCH_DEFAULTS` and the ``[planning]`` config. out: default ``runs/bench_batch.json``.
    """
    from pipelines.config import resolve_config
    from pipelines.planning.batch import batch_settings, machine_info, score_manifest
    from pipelines.worldmodel.report import write_report

    cfg = resolve_config(config)
    manifest = manifest or Path(cfg.app.sample_data_dir) / "manifest.csv"
    settings = {**BENCH_DEFAULTS, **(settings or {})}
    recorded = batch_settings(settings, manifest=manifest, config=cfg, loader=loader)
    runs: dict[str, Any] = {}
    rankings = {}
    with tempfile.TemporaryDirectory(prefix="mewm-bench-batch-") as tmp:
        for backend in backends:
            for n in workers:
                name = f"{backend}_{n}"
                report = score_manifest(manifest, Path(tmp) / name, workers=n, backend=backend, settings=settings,
                                        limit=cases, config=cfg, loader=loader,
                                        progress=resolve_progress(progress, f"bench {name}", "case"))
                per_case = report.case_seconds
                mean = sum(per_case) / len(per_case) if per_case else None
                runs[name] = {"backend": backend, "workers": n, "cases": report.total, "ok": report.ok,
                              "failed": report.failed, "wall_seconds": report.seconds,
                              "cases_per_hour": report.cases_per_hour,
                              "mean_case_seconds_in_worker": mean,
                              # what a long batch approaches once the workers have started
                              "steady_state_cases_per_hour": n * 3600.0 / mean if mean else None,
                              "torch_threads_per_worker": report.run["torch_threads_per_worker"]}
                rankings[name] = _ranking(report)
    first = next(iter(rankings.values()))
    speedup = {}
    for backend in backends:
        one, two = runs.get(f"{backend}_1"), runs.get(f"{backend}_2")
        if one and two and one["cases_per_hour"] and two["cases_per_hour"]:
            speedup[backend] = two["cases_per_hour"] / one["cases_per_hour"]
    result = {
        "settings": recorded, "cases": cases, "runs": runs,
        "cases_per_hour": {k: v["cases_per_hour"] for k, v in runs.items()}, "speedup_2_vs_1": speedup,
        "steady_state_cases_per_hour": {k: v["steady_state_cases_per_hour"] for k, v in runs.items()},
        # torch with 1 vs several threads sums in another order: risks agree to ~1e-4, not bit for bit
        "same_rankings_across_runs": all({k: v[0] for k, v in r.items()} == {k: v[0] for k, v in first.items()}
                                         for r in rankings.values()),
        "max_best_risk_difference_across_runs": max(
            (abs(r[k][1] - first[k][1]) for r in rankings.values() for k in first if k in r), default=None),
        "note": "cases_per_hour: cases over wall time, worker start-up included (process spawn or local Ray start, "
                "imports, one model load per worker), which dominates a short run. steady_state_cases_per_hour: "
                "workers x 3600 / mean seconds per case inside a worker (start-up excluded). One worker runs "
                "torch with its default threads (all cores) in the process backend and one thread as a Ray actor "
                "(one CPU); two workers run one thread each.",
        "machine": machine_info(), "notice": NOTICE}
    path = Path(out) if out else Path("runs") / "bench_batch.json"
    result["report"] = str(path)
    write_report(result, path)
    return result
