"""`mewm score` (batch scoring of a cohort manifest) and `mewm bench batch` (cases per hour, 1 vs 2 workers).

Registered through `pipelines.cli.COMMAND_MODULES`; heavy imports stay inside the command functions.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _settings(args: argparse.Namespace) -> dict:
    """The batch settings the flags give; flags left out fall back to the ``[planning]`` defaults."""
    values = {"mode": args.mode, "samples": args.samples, "steps": args.steps, "guidance": args.guidance,
              "seed": args.seed, "beams": args.beams, "candidates": args.plan or None, "weights_dir": args.weights,
              "survival_dir": args.survival_dir}
    return {k: v for k, v in values.items() if v is not None}


def _cmd_score(args: argparse.Namespace) -> int:
    from pipelines.planning.batch import score_manifest

    report = score_manifest(args.manifest, args.out, workers=args.workers, backend=args.backend,
                            settings=_settings(args), progress=not args.quiet, limit=args.limit,
                            retry_failed=args.retry_failed, overwrite=args.overwrite, ray_address=args.ray_address,
                            config=args.config)
    print(report.summary())
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from pipelines.planning.batch_bench import bench_batch

    report = bench_batch(args.manifest, cases=args.cases, settings=_settings(args), out=args.out,
                         backends=("process",) if args.no_ray else ("process", "ray"), config=args.config,
                         progress=not args.quiet)
    print(json.dumps({k: report[k] for k in ("cases_per_hour", "steady_state_cases_per_hour", "speedup_2_vs_1",
                                             "same_rankings_across_runs", "report")}, indent=2))
    return 0


def _search_flags(p: argparse.ArgumentParser) -> None:
    from pipelines.planning.cli import search_flags

    search_flags(p, policy=False)
    p.add_argument("--plan", action="append",
                   help='a fixed candidate plan, e.g. "Epirubicin; Lipiodol" (repeat; replaces the policy: every '
                        "case is searched exhaustively over these plans)")


def register(sub, groups) -> None:
    sc = sub.add_parser("score", help="plan every case of a cohort manifest (resumable; process pool or Ray)")
    sc.add_argument("--manifest", required=True, help="cohort manifest.csv (or its folder)")
    sc.add_argument("--out", required=True,
                    help="output folder: cases/*.json, failed/*.json, results.csv/.parquet, batch.json; "
                         "rerunning into it finishes an interrupted batch")
    sc.add_argument("--workers", type=int, default=1, help="worker processes or Ray actors (default 1)")
    sc.add_argument("--backend", choices=("process", "ray"), default="process",
                    help="process pool on this machine (default) or Ray")
    sc.add_argument("--ray-address", help="an existing Ray cluster ('auto', 'ray://host:10001'); default: a "
                                          "local Ray for this run")
    sc.add_argument("--limit", type=int, help="only the first N cases of the manifest")
    sc.add_argument("--retry-failed", action="store_true", help="plan the cases that failed before again")
    sc.add_argument("--overwrite", action="store_true", help="discard a batch in --out made with other settings")
    _search_flags(sc)
    sc.set_defaults(func=_cmd_score)

    bb = groups["bench"].add_parser("batch", help="cases per hour: 1 vs 2 processes, Ray 1 vs 2 workers")
    bb.add_argument("--manifest", default=None, help="cohort manifest (default: the sample cases)")
    bb.add_argument("--cases", type=int, default=4, help="first N cases (default 4)")
    bb.add_argument("--out", help="JSON report (default: runs/bench_batch.json)")
    bb.add_argument("--no-ray", action="store_true", help="process pool only")
    _search_flags(bb)
    bb.set_defaults(func=_cmd_bench)
