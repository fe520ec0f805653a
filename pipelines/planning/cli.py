"""`mewm plan`, `mewm eval planning` and `mewm bench planning` (registered by `pipelines.cli`)."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "search_flags"]


def _settings(args: argparse.Namespace):
    """The [planning]/[worldmodel] config with this command's flags applied."""
    from pipelines.config import load_config

    overrides = {f"planning.{k}": getattr(args, k) for k in ("mode", "samples", "steps", "guidance", "beams", "seed",
                                                              "survival_dir") if getattr(args, k, None) is not None}
    if getattr(args, "policy", None):
        overrides["policy.backend"] = args.policy
    if getattr(args, "weights", None):
        overrides["worldmodel.weights_dir"] = args.weights
    return load_config(args.config, overrides=overrides)


def _load(cfg):
    import os

    from pipelines.survival.model import load_survival_model
    from pipelines.worldmodel.weights import load_world_model

    return load_world_model(os.path.expanduser(cfg.worldmodel.weights_dir)), \
        load_survival_model(os.path.expanduser(cfg.planning.survival_dir))


def _cmd_plan(args: argparse.Namespace) -> int:
    from pipelines.planning.files import planning_table_text, write_planning
    from pipelines.planning.search import plan_case
    from pipelines.policy import load_policy
    from pipelines.progress import TqdmProgress
    from pipelines.samples import resolve_case

    cfg = _settings(args)
    case = resolve_case(args.case)
    world, survival = _load(cfg)
    p = cfg.planning
    result = plan_case(case, world, survival, mode=p.mode, samples=p.samples, seed=p.seed, steps=p.steps,
                       guidance=p.guidance, beams=p.beams, drug_horizon=p.drug_horizon,
                       embolic_horizon=p.embolic_horizon, candidates=args.candidate or None,
                       policy=None if args.candidate else load_policy(cfg),
                       progress=None if args.quiet else TqdmProgress("plan", "‰"))
    if result.proposal is not None:
        print(f"Policy ({result.proposal.backend}, {result.proposal.model}): {result.proposal.rationale}")
    print(planning_table_text(result, top=args.top))
    if args.out:
        out = write_planning(result, args.out, write_top=args.write_top,
                             info={"case": str(args.case), "world_model": cfg.worldmodel.weights_dir,
                                   "survival_model": p.survival_dir})
        print(f"Wrote {out}")
    return 0


def _cmd_eval_planning(args: argparse.Namespace) -> int:
    import os

    from pipelines.planning.evaluate import evaluate_planning
    from pipelines.policy import load_policy

    cfg = _settings(args)
    report = evaluate_planning(args.cohort, os.path.expanduser(cfg.worldmodel.weights_dir),
                               os.path.expanduser(cfg.planning.survival_dir), args.train_manifest,
                               patients=args.patients, samples=cfg.planning.samples, steps=cfg.planning.steps,
                               guidance=cfg.planning.guidance, seed=cfg.planning.seed, out=args.out,
                               policy=load_policy(cfg), survival_sees_plan=not args.outcome_only,
                               progress=not args.quiet)
    rows = {m: {k: (v["mean"] if isinstance(v, dict) else v) for k, v in s.items() if k in
                ("n", "f1", "f1_no_lipiodol", "jaccard", "regret_months", "exact", "top3_hit")}
            for m, s in report["methods"].items()}
    print(json.dumps({"metrics": report["metrics"], "methods": rows}, indent=2))
    return 0


def _cmd_bench_planning(args: argparse.Namespace) -> int:
    from pipelines.planning.bench import bench_planning

    cfg = _settings(args)
    report = bench_planning(cfg, cases=args.cases, out=args.out, progress=not args.quiet)
    print(json.dumps({k: report[k] for k in ("seconds_per_case", "denoiser_passes", "reference", "passes_ratio")},
                     indent=2))
    return 0


def search_flags(p: argparse.ArgumentParser, policy: bool = True) -> None:
    """The search settings every planning command takes (defaults: the ``[planning]`` config); also `mewm score`."""
    p.add_argument("--mode", choices=("beam", "exhaustive"), help="search mode (default: [planning] mode = beam)")
    p.add_argument("--samples", type=int, help="simulated outcomes per plan (default: [planning] samples = 3)")
    p.add_argument("--steps", type=int, help="denoising steps of the world model's sampler (default: [planning] steps)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 2.0)")
    p.add_argument("--beams", type=int, help="beams of the beam search (default 5)")
    p.add_argument("--seed", type=int, help="noise seed: same seed, same ranking (default 0)")
    p.add_argument("--weights", help="world-model weights folder (default: [worldmodel] weights_dir)")
    p.add_argument("--survival-dir", "--survival", dest="survival_dir",
                   help="survival model folder (default: [planning] survival_dir, the embedded Cox model)")
    if policy:
        p.add_argument("--policy", choices=("guideline", "openai", "hf"), help="policy backend (default: [policy])")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub, groups) -> None:
    pl = sub.add_parser("plan", help="rank TACE plans for a case: policy proposal, simulation, survival risk")
    pl.add_argument("--case", required=True,
                    help="a sample case id, a cohort case folder (<cohort>/cases/<id>) or MANIFEST.csv#ID")
    pl.add_argument("--out", help="new output folder (planning.json, plans.csv, report.html, NIfTI)")
    pl.add_argument("--candidate", action="append",
                    help="score these plans exhaustively instead of asking the policy (repeatable)")
    pl.add_argument("--top", type=int, default=10, help="plans to print (default 10)")
    pl.add_argument("--write-top", type=int, default=5, help="plans whose simulated crops are written (default 5)")
    search_flags(pl)
    pl.set_defaults(func=_cmd_plan)

    ev = groups["eval"].add_parser("planning", help="plan choice vs the oracle of a held-out virtual cohort")
    ev.add_argument("--cohort", required=True, help="held-out virtual cohort (a seed never used in training)")
    ev.add_argument("--train-manifest", required=True,
                    help="training cohort manifest (fits the pre-treatment Cox baseline)")
    ev.add_argument("--patients", type=int, default=100, help="first N patients (default 100)")
    ev.add_argument("--out", help="JSON report (default: <survival_dir>/planning_evaluation.json)")
    ev.add_argument("--outcome-only", action="store_true",
                    help="ablation: the survival model sees the simulated outcome but not the plan")
    search_flags(ev)
    ev.set_defaults(func=_cmd_eval_planning)

    bp = groups["bench"].add_parser("planning", help="seconds per case and denoiser passes vs the reference search")
    bp.add_argument("--cases", type=int, default=3, help="sample cases to plan (default 3)")
    bp.add_argument("--out", help="JSON report (default: <survival_dir>/planning_benchmark.json)")
    search_flags(bp)
    bp.set_defaults(func=_cmd_bench_planning)
