"""`mewm bench reasoning`: generation speed batched vs sequential, seconds per answer at N = 1, 4, 8, PRM time, memory.

- **tok/s, N = 8 batched**: one call with ``n = 8``; **sequential**: eight calls with ``n = 1`` (different seeds).
  Tokens are the generated tokens the backend reports (llama.cpp: per-choice logprob entries; hf: exact).
- **s/answer** at N = 1, 4, 8: the whole `answer_question` (generation + PRM + choice), median of ``repeats``.
- **PRM**: seconds to score 8 candidates of one question (after one warm-up call).
- **peak RSS** of this process (MB), from ``resource.getrusage``.
- tok/s are also given per CPU second of this process (``time.process_time``): with llama.cpp on 1 thread that
  figure hardly moves when other jobs share the cores, unlike wall-clock tok/s.
A fixed MedMCQA-style question is used; the machine's load is recorded (``os.getloadavg``) because the project's
machines are shared: figures from a busy machine are lower bounds on speed.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from pathlib import Path

from pipelines.reasoning.backends import PolicyBackend
from pipelines.reasoning.template import response_prefix

__all__ = ["bench_reasoning", "BENCH_QUESTION"]

BENCH_QUESTION = ("A 45-year-old sailor presents with bleeding gums, poor wound healing and perifollicular "
                  "haemorrhages. Deficiency of which vitamin is the most likely cause?\nA. Vitamin A\nB. Vitamin C\n"
                  "C. Vitamin D\nD. Vitamin K")


def _tok_per_s(fn) -> tuple[float, float]:
    """Generated tokens per wall second and per CPU second of this process (llama.cpp runs in-process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    gens = fn()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    tokens = sum(g.tokens for g in gens)
    return tokens / dt, tokens / max(dc, 1e-9)


def bench_reasoning(backend: PolicyBackend, *, prm_dir: str | None = None, out: str | os.PathLike | None = None,
                    card_dir: str | os.PathLike | None = None, max_new_tokens: int = 128,
                    repeats: int = 2) -> dict:
    """Measure (see the module docstring) and write the JSON report to ``out`` (and ``card_dir``)."""
    import torch

    from pipelines.reasoning.chat import answer_question
    from pipelines.reasoning.chat import score_candidates
    from pipelines.reasoning.candidates import make_candidate
    from pipelines.reasoning.answers import parse_options
    from pipelines.reasoning.prm import load_prm

    torch.set_num_threads(1)
    prm = load_prm(prm_dir)
    prefix = response_prefix()
    q = BENCH_QUESTION
    backend.complete(q, [prefix], n=1, max_new_tokens=8)  # warm-up (prompt cache, allocations)
    batched, sequential = [], []
    for r in range(repeats):
        batched.append(_tok_per_s(lambda: backend.complete(q, [prefix], n=8, max_new_tokens=max_new_tokens,
                                                           seed=r)[0]))
        sequential.append(_tok_per_s(lambda: [backend.complete(q, [prefix], n=1, max_new_tokens=max_new_tokens,
                                                               seed=100 * r + k)[0][0] for k in range(8)]))
    b_tps, b_cpu = (statistics.median(x[k] for x in batched) for k in (0, 1))
    s_tps, s_cpu = (statistics.median(x[k] for x in sequential) for k in (0, 1))
    per_answer = {}
    for n in (1, 4, 8):
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            answer_question(q, n=n, backend=backend, prm=prm, seed=r, max_new_tokens=max_new_tokens)
            times.append(time.perf_counter() - t0)
        per_answer[str(n)] = round(statistics.median(times), 2)
    options = parse_options(q)
    gens = backend.complete(q, [prefix], n=8, max_new_tokens=max_new_tokens, seed=7)[0]
    cands = [make_candidate(prefix, g, options) for g in gens]
    score_candidates(prm, q, options, cands)  # warm-up
    cache = getattr(getattr(prm, "encoder", None), "_cache", None)
    prm_times = []
    for _ in range(repeats):
        if cache is not None:
            cache.clear()  # time the encoder too, not cached embeddings
        t0 = time.perf_counter()
        score_candidates(prm, q, options, cands)
        prm_times.append(time.perf_counter() - t0)
    prm_s = statistics.median(prm_times)
    report = {"backend": backend.name, "model": backend.model, "max_new_tokens": max_new_tokens,
              "repeats": repeats,
              "tokens_per_s": {"batched_n8": round(b_tps, 1), "sequential_8x1": round(s_tps, 1),
                               "speedup": round(b_tps / s_tps, 2) if s_tps else None},
              "tokens_per_cpu_s": {"batched_n8": round(b_cpu, 1), "sequential_8x1": round(s_cpu, 1),
                                   "speedup": round(b_cpu / s_cpu, 2) if s_cpu else None},
              "seconds_per_answer": per_answer, "prm_seconds_for_8_candidates": round(prm_s, 3),
              "prm": getattr(prm, "directory", "") or prm.name,
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "load_average_1min_at_end": round(os.getloadavg()[0], 2),
              "threads": getattr(backend, "threads", None),
              "machine": f"{os.cpu_count()} CPU cores (shared), torch threads 1"}
    text = json.dumps(report, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    if card_dir:
        from pipelines.reasoning.card import write_prm_card

        Path(card_dir, "benchmark.json").write_text(text + "\n")
        write_prm_card(card_dir)
    return report
