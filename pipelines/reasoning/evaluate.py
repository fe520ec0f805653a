"""`mewm reasoning eval`: greedy, majority@N, PRM best-of-N (min/last/mean/prod), P-VS and pass@N, with 95 % CIs.

1. items: the **dev** split of each reference-format file (first ``limit``; ``split="train"`` only for checks before
   shipping a PRM);
2. generation (the costly part, cached): per item one greedy answer (T = 0) and N samples in one batched call, appended
   to ``<out dir>/candidates_<file>.jsonl`` as each item finishes, so an interrupted run resumes and a new PRM can be
   evaluated on the same candidates without generating again;
3. scoring: one PRM call per item (all N candidates); aggregates from the same step scores; the eligibility guard;
4. metrics: accuracy (no answer = wrong) with Wilson 95 % intervals, parse and eligibility rates, chance and the
   majority-class rate of the evaluated items; strict JSON report.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

from models.errors import ReasoningInputError
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.reasoning.answers import is_correct
from pipelines.reasoning.backends import Generation, PolicyBackend
from pipelines.reasoning.best_of_n import AGGREGATIONS, aggregate, check_eligible, choose, majority_vote
from pipelines.reasoning.candidates import make_candidate
from pipelines.reasoning.data import load_items
from pipelines.reasoning.prm import StepScorer
from pipelines.reasoning.template import response_prefix

__all__ = ["wilson", "generate_file", "score_file", "evaluate"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (round(max(0.0, c - h), 4), round(min(1.0, c + h), 4))


def _acc(hits: list[bool]) -> dict:
    k, n = sum(hits), len(hits)
    return {"accuracy": round(k / n, 4) if n else 0.0, "correct": k, "n": n, "ci95": wilson(k, n)}


def generate_file(path, backend: PolicyBackend, cache: Path, *, n: int, limit: int | None, temperature: float,
                  max_new_tokens: int, seed: int, progress: ProgressFn | None, split: str = "dev") -> list[dict]:
    """Greedy + N samples per item of ``split``, appended to ``cache`` (JSONL) and resumed from it."""
    items = load_items(path, split, limit)
    done = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("model", backend.model) != backend.model:  # never mix two policies' candidates
                    raise ReasoningInputError(f"{cache} holds candidates of {rec['model']}, not of {backend.model}: "
                                              "evaluate into another --out folder.")
                done[rec["id"]] = rec
    prefix = response_prefix()
    for k, item in enumerate(items):
        if item.id not in done:
            t0 = time.perf_counter()
            (greedy,) = backend.complete(item.question, [prefix], n=1, temperature=0.0,
                                         max_new_tokens=max_new_tokens, seed=seed)
            (samples,) = backend.complete(item.question, [prefix], n=n, temperature=temperature,
                                          max_new_tokens=max_new_tokens, seed=seed) if n else ([],)
            rec = {"id": item.id, "model": backend.model, "greedy": [greedy[0].__dict__], "samples": [g.__dict__ for g in samples],
                   "seconds": round(time.perf_counter() - t0, 2)}
            with cache.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            done[item.id] = rec
        if progress:
            progress(k + 1, len(items), Path(path).stem)
    return [dict(done[it.id], item=it) for it in items]


def score_file(records: list[dict], prm: StepScorer | None, n: int) -> dict:
    """Metrics of one file's cached candidates (see the module docstring); ``n == 0``: greedy only."""
    if n == 0:
        items = [r["item"] for r in records]
        greedy = [make_candidate(response_prefix(), Generation(**r["greedy"][0]), r["item"].options) for r in records]
        golds = Counter(it.gold for it in items)
        mcq = [it for it in items if it.options]
        return {"items": len(items),
                "metrics": {"greedy": _acc([is_correct(g.parsed, it.gold) for g, it in zip(greedy, items)])},
                "chance": round(sum(1 / len(it.options) for it in mcq) / len(mcq), 4) if mcq else 0.0,
                "majority_class": round(golds.most_common(1)[0][1] / len(items), 4) if items else 0.0,
                "greedy_parse_rate": round(sum(g.parsed.ok for g in greedy) / max(len(items), 1), 4),
                "generation_seconds_per_item": round(sum(r.get("seconds", 0) for r in records)
                                                     / max(len(items), 1), 2)}
    hits: dict[str, list[bool]] = {k: [] for k in ("greedy", "majority", "pvs", "pass_at_n",
                                                    *(f"prm_best_{a}" for a in AGGREGATIONS))}
    parsed = eligible = low = total = greedy_parsed = 0
    prm_seconds = 0.0
    for rec in records:
        item = rec["item"]
        prefix = response_prefix()
        greedy = make_candidate(prefix, Generation(**rec["greedy"][0]), item.options)
        cands = [make_candidate(prefix, Generation(**g), item.options) for g in rec["samples"][:n]]
        t0 = time.perf_counter()
        scores = prm.score(item.question, [c.steps for c in cands], item.options)
        prm_seconds += time.perf_counter() - t0
        for c, s in zip(cands, scores):
            c.step_scores = s
            c.eligible, c.why_ineligible = check_eligible(c, item.question)
        ok = lambda ans: ans is not None and is_correct(type(greedy.parsed)(ans), item.gold)  # noqa: E731
        hits["greedy"].append(is_correct(greedy.parsed, item.gold))
        hits["majority"].append(ok(majority_vote(cands).answer))
        hits["pass_at_n"].append(any(is_correct(c.parsed, item.gold) for c in cands))
        for a in AGGREGATIONS:
            for c in cands:
                c.score = aggregate(c.step_scores, a)
            choice = choose(cands, "best", a)
            hits[f"prm_best_{a}"].append(ok(choice.answer))
            if a == "min":
                low += choice.low_confidence
                hits["pvs"].append(ok(choose(cands, "pvs", "min").answer))
        parsed += sum(c.parsed.ok for c in cands)
        eligible += sum(c.eligible for c in cands)
        total += len(cands)
        greedy_parsed += greedy.parsed.ok
    items = [r["item"] for r in records]
    golds = Counter(it.gold for it in items)
    mcq = [it for it in items if it.options]
    return {"items": len(items), "metrics": {k: _acc(v) for k, v in hits.items()},
            "chance": round(sum(1 / len(it.options) for it in mcq) / len(mcq), 4) if mcq else 0.0,
            "majority_class": round(golds.most_common(1)[0][1] / len(items), 4) if items else 0.0,
            "sample_parse_rate": round(parsed / max(total, 1), 4),
            "greedy_parse_rate": round(greedy_parsed / max(len(items), 1), 4),
            "sample_eligible_rate": round(eligible / max(total, 1), 4),
            "low_confidence_rate": round(low / max(len(items), 1), 4),
            "prm_seconds_per_item": round(prm_seconds / max(len(items), 1), 3),
            "generation_seconds_per_item": round(sum(r.get("seconds", 0) for r in records) / max(len(items), 1), 2)}


def evaluate(files: list[str | os.PathLike], backend: PolicyBackend, prm: StepScorer, out: str | os.PathLike, *,
             n: int = 8, limit: int | None = 100, temperature: float = 0.8, max_new_tokens: int = 256, seed: int = 0,
             card_dir: str | os.PathLike | None = None, progress: bool | ProgressFn | None = None,
             split: str = "dev") -> dict:
    """Evaluate every file (see the module docstring); write the JSON report to ``out`` (and the card's copy).
    ``n = 0``: greedy answers only (e.g. another policy on the same items; no PRM needed, ``prm`` may be None).

    ``split="train"`` is for checks made before shipping a PRM (never reported as a result); a train-split report
    cannot go into a model card.
    """
    if split not in ("dev", "train"):
        raise ReasoningInputError(f"eval split must be dev or train, got {split!r}.")
    if split != "dev" and card_dir:
        raise ReasoningInputError("Only a dev-split evaluation goes into a model card (drop --card).")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = resolve_progress(progress, "eval", "item")
    if n < 0:
        raise ReasoningInputError(f"--n must be >= 0 (0: greedy only), got {n}.")
    if n == 0 and card_dir:
        raise ReasoningInputError("A greedy-only evaluation (--n 0) does not go into a PRM card (drop --card).")
    prm_name = "" if prm is None else (getattr(prm, "directory", "") or prm.name)
    report = {"backend": backend.name, "model": backend.model, "prm": prm_name,
              "n": n, "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed, "split": split,
              "limit": limit, "command": "mewm " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("mewm") else "",
              "files": {}}
    for path in files:
        name = Path(path).stem
        tag = "" if split == "dev" else f"_{split}"
        cache = out.parent / f"candidates_{name}{tag}_n{n}_t{temperature}_m{max_new_tokens}_s{seed}.jsonl"
        records = generate_file(path, backend, cache, n=n, limit=limit, temperature=temperature,
                                max_new_tokens=max_new_tokens, seed=seed, progress=bar, split=split)
        report["files"][name] = score_file(records, prm, n)
    text = json.dumps(report, indent=2, allow_nan=False)
    out.write_text(text + "\n")
    if card_dir:
        from pipelines.reasoning.card import write_prm_card

        Path(card_dir, "evaluation.json").write_text(text + "\n")
        write_prm_card(card_dir)
    return report
