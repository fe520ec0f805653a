"""`mewm train survival` and `mewm eval survival` (registered through `pipelines.cli.COMMAND_MODULES`)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def _threads(n: int | None) -> None:
    import torch

    from models.errors import ConfigError

    if n is None:
        return
    if n < 1:
        raise ConfigError(f"--threads must be >= 1, got {n}.")
    torch.set_num_threads(n)


def _cmd_train(args: argparse.Namespace) -> int:
    from models.errors import ConfigError
    from pipelines.survival import train

    _threads(args.threads)
    common: dict[str, Any] = dict(post_labels=args.post_labels, segmenter_dir=args.segmenter, progress=not args.quiet)
    if args.kind == "cox":
        deep_only = [f"--{k.replace('_', '-')}" for k in ("steps", "batch_size", "lr") if getattr(args, k) is not None]
        deep_only += [flag for flag, on in (("--resume", args.resume), ("--device", args.device != "cpu"),
                                            ("--amp", args.amp)) if on]
        if deep_only:
            raise ConfigError(f"{', '.join(deep_only)} are for `--kind deep` only (the cox model is fitted in one go).")
        kwargs = {} if args.penalizer is None else {"penalizer": args.penalizer}
        report = train.train_cox(args.manifest, args.out, **kwargs, **common)
    else:
        if args.penalizer is not None:
            raise ConfigError("--penalizer is for `--kind cox` only.")
        report = train.train_deep(args.manifest, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                  seed=args.seed, resume=args.resume, device=args.device, amp=args.amp, **common)
    print(report.summary())
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from pipelines.survival.evaluate import evaluate_survival

    _threads(args.threads)
    report = evaluate_survival(args.cohort, args.weights, out=args.out, plot=args.plot, segmenter_dir=args.segmenter,
                               plan_ranking=args.plan_ranking, progress=not args.quiet)
    print(json.dumps({"kind": report["kind"], "n": report["n"], "n_events": report["n_events"],
                      "metrics": {k: {"value": v["value"], "target": v["target"], "pass": v["pass"],
                                      "baseline": v["baseline"]} for k, v in report["metrics"].items()},
                      "plan_ranking": {k: v for k, v in (report["plan_ranking"] or {}).items() if k != "rows"} or None,
                      "plot": report["plot"], "report": report["out"]}, indent=2))
    return 0


# = pipelines.survival.data.POST_LABEL_SOURCES, spelled out so that building the parser imports no torch (a test
# checks they agree)
POST_LABELS = ("segmented", "decoded", "true")


def register(sub: argparse._SubParsersAction, groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``mewm train survival`` and ``mewm eval survival``."""
    tr = groups["train"].add_parser("survival", help="train a survival (inverse dynamics) model: cox or deep")
    tr.add_argument("--kind", required=True, choices=("cox", "deep"), help="cox: lifelines Cox on measured "
                    "features (the planning default); deep: 3D CNN with a Cox partial likelihood")
    tr.add_argument("--manifest", required=True, help="cohort manifest.csv (or its folder) with time_months, event")
    tr.add_argument("--out", required=True, help="output folder (config.json, weights, MODEL_CARD.md)")
    tr.add_argument("--post-labels", choices=POST_LABELS, default="segmented",
                    help="post-treatment labels to train on: the world model's segmenter on the true post crop "
                         "(segmented, default), on that crop through the world model's autoencoder first "
                         "(decoded: the whole chain of a simulated crop), or the cohort's true labels")
    tr.add_argument("--segmenter", help="segmentation weights folder (default: [worldmodel] weights_dir/segmentation)")
    tr.add_argument("--penalizer", type=float, help="cox: lifelines ridge penalizer (default 0.1)")
    tr.add_argument("--steps", type=int, help="deep: optimiser steps (default 120)")
    tr.add_argument("--batch-size", type=int, help="deep: patients per batch (one risk set; default 32)")
    tr.add_argument("--lr", type=float, help="deep: learning rate (default 5e-4)")
    tr.add_argument("--seed", type=int, default=0, help="deep: random seed (same seed, same weights)")
    tr.add_argument("--resume", action="store_true", help="deep: continue the run saved in --out")
    tr.add_argument("--device", default="cpu", help="deep: cpu (default), cuda, cuda:N, or auto (cuda if torch sees a "
                    "GPU); a GPU torch cannot use is an error, never a silent CPU run")
    tr.add_argument("--amp", action="store_true", help="deep: bf16 autocast of the forward passes (CUDA GPUs, or CPUs "
                    "with AMX / AVX512-BF16)")
    tr.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_train)

    ev = groups["eval"].add_parser("survival", help="C-index, integrated Brier score and risk-group KM plot of a "
                                                    "survival model on a held-out cohort")
    ev.add_argument("--cohort", required=True, help="held-out cohort folder (mewm cohort generate, another seed)")
    ev.add_argument("--weights", required=True, help="survival model folder (models/weights/survival_cox)")
    ev.add_argument("--out", help="JSON report (default: <weights>/evaluation.json)")
    ev.add_argument("--plot", help="Kaplan-Meier PNG (default: km_risk_groups.png beside the report)")
    ev.add_argument("--segmenter", help="segmentation weights folder (default: the one the model was trained with)")
    ev.add_argument("--plan-ranking", type=int, default=0, metavar="N",
                    help="also rank every plan of the plan space for the first N patients on their counterfactual "
                         "outcomes vs the oracle (virtual cohorts only; slow, ~30 s per patient)")
    ev.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_eval)
