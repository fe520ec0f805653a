"""`mewm reasoning ...` and `mewm bench reasoning`: the reasoning chat's commands (registered by `pipelines.cli`).

Heavy packages (torch, transformers, xllamacpp) are imported inside the command functions only.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def _backend(args: argparse.Namespace):
    from pipelines.reasoning.backends import load_backend

    return load_backend(args.config, backend=args.backend, model_dir=args.model_dir, threads=args.threads)


def _cmd_ask(args: argparse.Namespace) -> int:
    from pipelines.reasoning.chat import answer_question

    result = answer_question(args.question, n=args.n, aggregation=args.aggregation, selection=args.selection,
                             seed=args.seed, backend=_backend(args), prm=args.prm, config=args.config,
                             max_new_tokens=args.max_new_tokens)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text())
    return 0


def _cmd_evolve(args: argparse.Namespace) -> int:
    from pipelines.reasoning.data import load_items
    from pipelines.reasoning.evolve import MCTSSettings, evolve

    items = []
    for path in args.seed_data:
        items += load_items(path, args.split, limit=args.limit)
    settings = MCTSSettings(max_nodes=args.max_nodes, correct_cap=args.correct_cap, rollouts=args.rollouts,
                            step_tokens=args.step_tokens, finish_tokens=args.finish_tokens)
    report = evolve(items, _backend(args), args.out, settings=settings, seed=args.seed, progress=not args.quiet)
    print(report.summary())
    return 0


def _add_backend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("smollm2", "hf", "openai"), help="policy backend (default [reasoning])")
    p.add_argument("--model-dir", help="hf: causal-LM directory; smollm2: another GGUF file")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp CPU threads for smollm2 (default 1)")


def register(sub, groups) -> None:
    """Add `mewm reasoning {ask,evolve,train-prm,train-policy,eval}` and `mewm bench reasoning`."""
    r = sub.add_parser("reasoning", help="reasoning chat: best-of-N with a process reward model (research only)")
    rs = r.add_subparsers(dest="reasoning_command", required=True)

    ask = rs.add_parser("ask", help="answer one question step by step, best-of-N with the PRM")
    ask.add_argument("question", help='the question; options inline, e.g. "...\\nA. x\\nB. y"')
    ask.add_argument("--n", type=int, default=8, help="candidates (default 8)")
    ask.add_argument("--aggregation", default="min", choices=("min", "last", "mean", "prod"))
    ask.add_argument("--selection", default="best", choices=("best", "pvs", "vote"))
    ask.add_argument("--prm", help="PRM directory (default [reasoning] prm_dir)")
    ask.add_argument("--max-new-tokens", type=int, default=256)
    ask.add_argument("--seed", type=int, default=0)
    ask.add_argument("--json", action="store_true", help="print the full result as JSON")
    _add_backend_flags(ask)
    ask.set_defaults(func=_cmd_ask)

    ev = rs.add_parser("evolve", help="self-evolution: MCTS trees on seed questions (resumable JSONL)")
    ev.add_argument("--seed-data", required=True, action="append", help="reference-format JSON (repeatable)")
    ev.add_argument("--split", default="train", choices=("train", "dev", "all"), help="default train")
    ev.add_argument("--limit", type=int, help="first N questions of the split per file")
    ev.add_argument("--out", required=True, help="trees JSONL (appended; rerun to resume)")
    ev.add_argument("--max-nodes", type=int, default=16)
    ev.add_argument("--correct-cap", type=int, default=2)
    ev.add_argument("--rollouts", type=int, default=4, help="K completions per new node")
    ev.add_argument("--step-tokens", type=int, default=96)
    ev.add_argument("--finish-tokens", type=int, default=192)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--quiet", action="store_true")
    _add_backend_flags(ev)
    ev.set_defaults(func=_cmd_evolve)
