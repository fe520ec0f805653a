"""`mewm reasoning ...` and `mewm bench reasoning`: the reasoning chat's commands (registered by `pipelines.cli`).

Heavy packages (torch, transformers, xllamacpp) are imported inside the command functions only.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def _backend(args: argparse.Namespace):
    from pipelines.reasoning.backends import load_backend

    return load_backend(args.config, backend=args.backend, model_dir=args.model_dir, threads=args.threads,
                        weights=args.weights)


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


def _cmd_train_prm(args: argparse.Namespace) -> int:
    import torch

    from pipelines.reasoning.train_prm import train_prm

    torch.set_num_threads(args.threads)
    report = train_prm(args.trees, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       seed=args.seed, resume=args.resume, progress=not args.quiet,
                       consistency_data=args.consistency_data, consistency_limit=args.consistency_limit)
    print(report.summary())
    return 0


def _cmd_train_policy(args: argparse.Namespace) -> int:
    import torch

    from pipelines.reasoning.train_policy import train_policy

    torch.set_num_threads(args.threads)
    report = train_policy(args.trees, args.out, base=args.base, steps=args.steps, lr=args.lr, rank=args.rank,
                          seed=args.seed, max_tokens=args.max_tokens, progress=not args.quiet)
    print(report.summary())
    return 0


def _cmd_export_gguf(args: argparse.Namespace) -> int:
    from pipelines.reasoning.requantize import hf_llama_to_gguf

    print(hf_llama_to_gguf(args.model_dir, args.out))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pipelines.reasoning.evaluate import evaluate
    from pipelines.reasoning.prm import load_prm

    report = evaluate(args.data, _backend(args), load_prm(args.prm) if args.n else None, args.out, n=args.n,
                      limit=args.limit,
                      temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed,
                      card_dir=args.card, progress=not args.quiet, split=args.split)
    table = {name: {k: f"{v['accuracy']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"
                    for k, v in f["metrics"].items()} for name, f in report["files"].items()}
    print(json.dumps(table, indent=2))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from pipelines.reasoning.bench import bench_reasoning

    report = bench_reasoning(_backend(args), prm_dir=args.prm, out=args.out, card_dir=args.card,
                             max_new_tokens=args.max_new_tokens, repeats=args.repeats)
    print(json.dumps(report, indent=2))
    return 0


def _add_backend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("smollm2", "hf", "openai"), help="policy backend (default [reasoning])")
    p.add_argument("--model-dir", help="hf: causal-LM directory; smollm2: another GGUF file")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp CPU threads for smollm2 (default 1)")
    p.add_argument("--weights", default="q8_0", choices=("q8_0", "q4_1"),
                   help="smollm2: the embedded model's Q8_0 copy (default; faster batched decoding) or the shipped Q4_1")


def register(sub, groups) -> None:
    """Add `mewm reasoning {ask,evolve,train-prm,train-policy,export-gguf,eval}` and `mewm bench reasoning`."""
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

    tp = rs.add_parser("train-prm", help="train the PRM's step-value head on MCTS trees + adversarial negatives")
    tp.add_argument("--trees", required=True, action="append", help="trees JSONL from `evolve` (repeatable)")
    tp.add_argument("--out", required=True, help="PRM folder (config.json, model.pt, MODEL_CARD.md)")
    tp.add_argument("--steps", type=int, default=600)
    tp.add_argument("--batch-size", type=int, default=32)
    tp.add_argument("--lr", type=float, default=1e-3)
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--threads", type=int, default=1, help="torch CPU threads (use 2 only under the heavy lock)")
    tp.add_argument("--consistency-data", action="append",
                    help="seed file (repeatable): answer-consistency pairs from its train-split questions")
    tp.add_argument("--consistency-limit", type=int, default=300, help="first N train questions per file (300)")
    tp.add_argument("--resume", action="store_true")
    tp.add_argument("--quiet", action="store_true")
    tp.set_defaults(func=_cmd_train_prm)

    pol = rs.add_parser("train-policy", help="LoRA fine-tuning (peft) of the policy on the correct MCTS paths")
    pol.add_argument("--trees", required=True, action="append", help="trees JSONL from `evolve` (repeatable)")
    pol.add_argument("--out", required=True, help="output folder: merged causal-LM directory usable with --backend hf")
    pol.add_argument("--base", help="base causal-LM directory (default: SmolLM2-135M from the embedded GGUF)")
    pol.add_argument("--steps", type=int, default=30)
    pol.add_argument("--lr", type=float, default=2e-4)
    pol.add_argument("--rank", type=int, default=16)
    pol.add_argument("--max-tokens", type=int, default=512, help="longer examples are dropped")
    pol.add_argument("--seed", type=int, default=0)
    pol.add_argument("--threads", type=int, default=1)
    pol.add_argument("--quiet", action="store_true")
    pol.set_defaults(func=_cmd_train_policy)

    x = rs.add_parser("export-gguf", help="a fine-tuned SmolLM2 folder (train-policy output) as a Q8_0 GGUF for llama.cpp")
    x.add_argument("--model-dir", required=True, help="the merged causal-LM folder (e.g. runs/reasoning/policy_lora)")
    x.add_argument("--out", required=True, help="the .gguf file to write (use it with --model-dir FILE, backend smollm2)")
    x.set_defaults(func=_cmd_export_gguf)

    e = rs.add_parser("eval", help="greedy, majority@N, PRM best-of-N and P-VS accuracy (95% CIs) on dev items")
    e.add_argument("--data", required=True, action="append", help="reference-format JSON (repeatable)")
    e.add_argument("--n", type=int, default=8, help="samples per item (default 8; 0: greedy answers only)")
    e.add_argument("--limit", type=int, default=100, help="first N dev items per file (default 100)")
    e.add_argument("--temperature", type=float, default=0.8)
    e.add_argument("--max-new-tokens", type=int, default=256)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--prm", help="PRM directory (default [reasoning] prm_dir)")
    e.add_argument("--out", default="runs/reasoning/evaluation.json", help="JSON report (candidates cached beside)")
    e.add_argument("--card", help="also copy the report into this PRM folder and rebuild its MODEL_CARD.md")
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--split", default="dev", choices=("dev", "train"),
                   help="dev (default; what is reported) or train (checks before shipping a PRM; never in a card)")
    _add_backend_flags(e)
    e.set_defaults(func=_cmd_eval)

    b = groups["bench"].add_parser("reasoning", help="batched vs sequential tok/s, s/answer at N=1,4,8, PRM time")
    b.add_argument("--prm", help="PRM directory (default [reasoning] prm_dir)")
    b.add_argument("--out", default="runs/reasoning/benchmark.json")
    b.add_argument("--card", help="also copy the report into this PRM folder and rebuild its MODEL_CARD.md")
    b.add_argument("--max-new-tokens", type=int, default=128)
    b.add_argument("--repeats", type=int, default=2)
    _add_backend_flags(b)
    b.set_defaults(func=_cmd_bench)
