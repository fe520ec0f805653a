"""Self-evolution: the MedS3 Monte-Carlo tree search over reasoning steps (reference §2), batched and resumable.

Per seed question (train split only):

1. the root is Step 0 (`ROOT_STEP`); its rollout value r is measured first;
2. **select**: from the root, follow the child of highest UCT ``v_c + c·sqrt(ln N_parent / n_c)`` (c = 2; an
   unvisited child scores ``unvisited_ucb`` = 5; a Finish child is closed, score −1; a node whose children are all
   closed is closed; a closed root ends the search);
3. **expand** the selected leaf: ``children`` (3) one-step continuations sampled in one call (stop at
   ``"\\n\\nStep"``; identical siblings dropped). A step that states "The answer is" is a **Finish** node. A leaf whose
   rollout accuracy is ≥ ``bear_ratio`` (0.9), or at ``max_depth``, gets one Finish child instead: the policy
   continues to the end, and a multi-step continuation becomes intermediate Reason nodes (value of the parent, one
   visit) plus the final Finish node;
4. **rollout value**: every new Reason node gets ``K`` completions (all new nodes' rollouts in *one* batched call);
   r = the fraction whose strictly parsed answer is the gold one. A Finish node gets r ∈ {0, 1} from the verifier;
5. **back-propagate** (the reference's "comp" rule): a new node's value is its r; each ancestor then takes
   ``v ← ½·(v + Σ_c v_c·n_c / Σ_c n_c)`` and one more visit;
6. stop at ``max_nodes`` nodes, ``correct_cap`` correct Finish leaves, or a closed root; then (reference
   post-processing) every Reason leaf is completed with a Finish node in one batched call, which labels more paths.

Output: one JSON line per question, ``{"id", "dataset", "question", "answer", "pos": [[chain, leaf_value], ...],
"neg": [...], "nodes", "tokens", "seconds"}`` with ``chain = [[step_text, Q_value, rollout_value], ...]`` from Step 0
(the reference format). Lines are appended as each question finishes, so an interrupted run resumes where it
stopped (questions already in the file are skipped). Errors are not swallowed: a failing question stops the run
with its id (the reference dropped such questions silently).

Differences from the reference at small scale (documented in the card): K is fixed (default 4, reference
max(⌊20/(d+1)⌋, 5)), max_nodes 16 (reference 60), correct_cap 2 (reference 4), no Reflect action (refine_limit 0).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from models.errors import ReasoningInputError
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.reasoning.answers import FINAL_ANSWER_RE, is_correct, parse_answer
from pipelines.reasoning.backends import STEP_STOP, PolicyBackend
from pipelines.reasoning.candidates import finish_response
from pipelines.reasoning.data import QAItem
from pipelines.reasoning.template import ROOT_STEP, format_steps, split_steps

__all__ = ["MCTSSettings", "Node", "search_question", "evolve", "EvolveReport"]


@dataclass(frozen=True)
class MCTSSettings:
    """Search settings (reference values in brackets). See the module docstring."""

    max_nodes: int = 16  # [60]
    correct_cap: int = 2  # [4]
    children: int = 3  # [3]
    rollouts: int = 4  # K [max(20/(d+1), 5)]
    c: float = 2.0  # [2]
    unvisited_ucb: float = 5.0  # [5]
    bear_ratio: float = 0.9  # [0.9]
    max_depth: int = 8  # a hard cap on steps; deeper leaves get a Finish child
    step_tokens: int = 96  # tokens of one Reason step
    finish_tokens: int = 192  # tokens of a rollout / Finish continuation
    temperature: float = 0.8  # [0.6 first iteration, 1.0 later]
    top_p: float = 0.95  # [0.9]

    def __post_init__(self) -> None:
        if self.max_nodes < 2 or self.children < 1 or self.rollouts < 1 or self.correct_cap < 1:
            raise ReasoningInputError(f"MCTSSettings: max_nodes >= 2, children/rollouts/correct_cap >= 1; got {self}.")


@dataclass(eq=False)
class Node:
    """One reasoning step of the tree."""

    step: str
    parent: "Node | None" = None
    depth: int = 0
    children: list["Node"] = field(default_factory=list)
    visits: int = 0
    value: float = 0.0  # back-propagated Q-value
    rollout: float = 0.0  # own rollout accuracy r (first measurement)
    finish: bool = False
    correct: bool = False

    def path(self) -> list["Node"]:
        node, out = self, []
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def steps(self) -> list[str]:
        return [n.step for n in self.path()]

    def closed(self) -> bool:
        """A Finish node, or a node whose children are all closed."""
        return self.finish or (bool(self.children) and all(c.closed() for c in self.children))


class _Tree:
    """The search state of one question, with the calls it makes to the backend."""

    def __init__(self, item: QAItem, backend: PolicyBackend, settings: MCTSSettings, seed: int) -> None:
        self.item, self.backend, self.s = item, backend, settings
        self.root = Node(ROOT_STEP)
        self.nodes = 1
        self.tokens = 0
        self._seed = seed
        self._calls = 0

    # -- backend calls (each with its own seed: same question seed, same tree) ---------------------------------
    def _complete(self, prefixes: list[str], n: int, max_tokens: int, stop: list[str] | None):
        self._calls += 1
        out = self.backend.complete(self.item.question, prefixes, n=n, temperature=self.s.temperature,
                                    top_p=self.s.top_p, max_new_tokens=max_tokens,
                                    seed=self._seed * 1000 + self._calls, stop=stop)
        self.tokens += sum(g.tokens for gens in out for g in gens)
        return out

    def _correct(self, response: str) -> bool:
        return is_correct(parse_answer(finish_response(response), self.item.options), self.item.gold)

    def rollout_values(self, nodes: list[Node]) -> list[float]:
        """r for each node: the fraction of K completions of its path that reach the gold answer."""
        if not nodes:
            return []
        prefixes = [format_steps(n.steps(), next_step=True) for n in nodes]
        gens = self._complete(prefixes, self.s.rollouts, self.s.finish_tokens, None)
        return [sum(self._correct(p + g.text) for g in gs) / len(gs) for p, gs in zip(prefixes, gens)]

    def finish_children(self, leaves: list[Node]) -> list[Node]:
        """Continue each leaf to its end (one call); attach the intermediate steps and the Finish node."""
        prefixes = [format_steps(n.steps(), next_step=True) for n in leaves]
        gens = self._complete(prefixes, 1, self.s.finish_tokens, None)
        finals = []
        for leaf, prefix, (g,) in zip(leaves, prefixes, gens):
            steps = split_steps(finish_response(prefix + g.text))[len(leaf.steps()):] or [""]
            parent = leaf
            for text in steps[:-1]:
                node = Node(text, parent, parent.depth + 1, visits=1, value=parent.value, rollout=parent.rollout)
                parent.children.append(node)
                parent = node
                self.nodes += 1
            final = Node(steps[-1], parent, parent.depth + 1, finish=True)
            final.correct = self._correct(format_steps(final.steps()))
            final.rollout = final.value = float(final.correct)
            parent.children.append(final)
            self.nodes += 1
            finals.append(final)
        return finals

    def reason_children(self, leaf: Node) -> list[Node]:
        """Up to ``children`` distinct one-step continuations of ``leaf`` (one call)."""
        prefix = format_steps(leaf.steps(), next_step=True)
        (gens,) = self._complete([prefix], self.s.children, self.s.step_tokens, [STEP_STOP])
        seen, new = set(), []
        for g in gens:
            text = finish_response(g.text).strip()
            key = " ".join(text.lower().split())
            if key in seen:
                continue
            seen.add(key)
            node = Node(text, leaf, leaf.depth + 1, finish=bool(FINAL_ANSWER_RE.search(text)))
            if node.finish:
                node.correct = self._correct(format_steps(node.steps()))
                node.rollout = node.value = float(node.correct)
            leaf.children.append(node)
            self.nodes += 1
            new.append(node)
        return new

    # -- the search ----------------------------------------------------------------------------------------
    def select(self) -> Node | None:
        node = self.root
        while node.children:
            if node.closed():
                return None
            total = sum(c.visits for c in node.children)
            best, best_u = None, -math.inf
            for ch in node.children:
                if ch.closed():
                    u = -1.0
                elif ch.visits == 0:
                    u = self.s.unvisited_ucb
                else:
                    u = ch.value + self.s.c * math.sqrt(math.log(max(total, 1)) / ch.visits)
                if u > best_u:
                    best, best_u = ch, u
            node = best
        return None if node.finish else node

    @staticmethod
    def backpropagate(leaf: Node) -> None:
        node = leaf
        while node is not None:
            node.visits += 1
            seen = [c for c in node.children if c.visits > 0]
            if seen:
                mean = sum(c.value * c.visits for c in seen) / sum(c.visits for c in seen)
                node.value = 0.5 * (node.value + mean)
            node = node.parent

    def correct_leaves(self) -> int:
        return sum(1 for n in self._all() if n.finish and n.correct)

    def _all(self) -> list[Node]:
        out, stack = [], [self.root]
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(n.children)
        return out

    def run(self) -> None:
        (self.root.rollout,) = self.rollout_values([self.root])
        self.root.value, self.root.visits = self.root.rollout, 1
        while self.nodes < self.s.max_nodes and self.correct_leaves() < self.s.correct_cap:
            leaf = self.select()
            if leaf is None:
                break
            if leaf.rollout >= self.s.bear_ratio or leaf.depth >= self.s.max_depth:
                new = self.finish_children([leaf])
            else:
                new = self.reason_children(leaf)
                reason = [n for n in new if not n.finish]
                for node, r in zip(reason, self.rollout_values(reason)):
                    node.rollout = node.value = r
            for node in new:  # each new node counts one visit; its ancestors get the comp update
                node.visits = max(node.visits, 1)
            self.backpropagate(leaf)
        open_leaves = [n for n in self._all() if not n.children and not n.finish]
        if open_leaves:  # reference post-processing: complete every Reason leaf
            self.finish_children(open_leaves)

    def record(self) -> dict:
        pos, neg = [], []
        for n in self._all():
            if n.finish:
                chain = [[p.step, round(p.value, 4), round(p.rollout, 4)] for p in n.path()]
                (pos if n.correct else neg).append([chain, round(n.value, 4)])
        return {"id": self.item.id, "dataset": self.item.dataset, "question": self.item.question,
                "answer": self.item.gold, "pos": pos, "neg": neg, "nodes": self.nodes, "tokens": self.tokens,
                "root_rollout": self.root.rollout}


def question_seed(seed: int, item: QAItem) -> int:
    """A per-question seed from the run seed and the item id (the same question gets the same tree on resume)."""
    return int(hashlib.sha256(f"{seed}:{item.dataset}:{item.id}".encode()).hexdigest()[:7], 16)


def search_question(item: QAItem, backend: PolicyBackend, settings: MCTSSettings = MCTSSettings(),
                    seed: int = 0) -> dict:
    """The MCTS record of one question (see the module docstring)."""
    start = time.monotonic()
    tree = _Tree(item, backend, settings, question_seed(seed, item))
    tree.run()
    rec = tree.record()
    rec["seconds"] = round(time.monotonic() - start, 2)
    return rec


@dataclass
class EvolveReport:
    out: str
    questions: int
    skipped: int
    with_correct: int
    pos_paths: int
    neg_paths: int
    tokens: int
    seconds: float

    def summary(self) -> str:
        return (f"{self.questions} questions searched ({self.skipped} already done) → {self.pos_paths} correct and "
                f"{self.neg_paths} wrong paths; {self.with_correct} questions with a correct path; "
                f"{self.tokens} tokens in {self.seconds:.0f} s. Trees in {self.out}")


def evolve(items: list[QAItem], backend: PolicyBackend, out: str | os.PathLike, *,
           settings: MCTSSettings = MCTSSettings(), seed: int = 0,
           progress: bool | ProgressFn | None = None) -> EvolveReport:
    """Search every item, appending one JSON line per question to ``out`` (resumable; see the module docstring)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        for line in out.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done.add((rec["dataset"], rec["id"]))
    todo = [it for it in items if (it.dataset, it.id) not in done]
    bar = resolve_progress(progress, "evolve", "question")
    start = time.monotonic()
    pos = neg = with_correct = tokens = 0
    (out.parent / (out.name + ".settings.json")).write_text(json.dumps({"settings": asdict(settings), "seed": seed,
                                                                       "backend": backend.name,
                                                                       "model": backend.model}, indent=2))
    for k, item in enumerate(todo):
        rec = search_question(item, backend, settings, seed)
        with out.open("a") as f:  # one complete line per question: a crash loses at most the current question
            f.write(json.dumps(rec) + "\n")
        pos += len(rec["pos"])
        neg += len(rec["neg"])
        with_correct += bool(rec["pos"])
        tokens += rec["tokens"]
        if bar:
            bar(k + 1, len(todo), f"{with_correct} with a correct path")
    return EvolveReport(str(out), len(todo), len(done), with_correct, pos, neg, tokens, time.monotonic() - start)
