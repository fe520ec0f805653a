"""MCTS self-evolution with a scripted backend: tree records in the reference format, the node cap, the
back-propagation rule, batched rollouts, and resuming an interrupted run."""

import json

from pipelines.reasoning.backends import Generation
from pipelines.reasoning.data import QAItem
from pipelines.reasoning.evolve import MCTSSettings, Node, _Tree, evolve, search_question

Q = "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C\nC. Vitamin D"
ITEM = QAItem("7", Q, "B", "toy", {"A": "Vitamin A", "B": "Vitamin C", "C": "Vitamin D"})


class Scripted:
    """Steps cycle through three texts; completions answer B when the path mentions collagen, else A."""

    name, model = "scripted", "scripted"

    def __init__(self):
        self.calls = []

    def complete(self, question, prefixes, *, n=1, temperature=0.8, top_p=0.95, max_new_tokens=256, seed=0,
                 stop=None):
        self.calls.append((len(prefixes), n, bool(stop)))
        out = []
        for p in prefixes:
            if stop:  # one step
                texts = [" Scurvy is a deficiency disease of sailors.", " Collagen synthesis needs ascorbic acid.",
                         " The answer is A."][:n]
            else:  # a rollout / finish
                ans = "B" if "Collagen" in p else "A"
                texts = [f" Vitamin C is ascorbic acid.\n\nStep 9: The answer is {ans}."] * n
            out.append([Generation(t, "stop", 8) for t in texts])
        return out


def test_search_builds_labelled_paths_within_the_node_cap():
    be = Scripted()
    rec = search_question(ITEM, be, MCTSSettings(max_nodes=8, rollouts=2, correct_cap=2))
    assert rec["id"] == "7" and rec["answer"] == "B" and rec["pos"] and rec["neg"]
    for chain, leaf in rec["pos"] + rec["neg"]:
        assert chain[0][0].startswith("Let's break down")  # Step 0 first
        assert all(0.0 <= v <= 1.0 and 0.0 <= r <= 1.0 for _, v, r in chain)
    assert all(leaf == 1.0 for _, leaf in rec["pos"]) and all(leaf == 0.0 for _, leaf in rec["neg"])
    assert any("Collagen" in s for chain, _ in rec["pos"] for s, _, _ in chain)
    # rollouts of all new nodes go in one call: a call with several prefixes and n = K exists
    assert any(p > 1 and n == 2 and not stop for p, n, stop in be.calls)


def test_backpropagation_is_the_reference_comp_rule():
    parent = Node("p", value=0.4, visits=1)
    a = Node("a", parent, 1, value=1.0, visits=1)
    b = Node("b", parent, 1, value=0.0, visits=3)
    parent.children = [a, b]
    _Tree.backpropagate(parent)
    assert parent.visits == 2 and abs(parent.value - 0.5 * (0.4 + 0.25)) < 1e-9


def test_evolve_appends_and_resumes(tmp_path):
    out = tmp_path / "trees.jsonl"
    other = QAItem("8", Q, "B", "toy", ITEM.options)
    first = evolve([ITEM], Scripted(), out, settings=MCTSSettings(max_nodes=6, rollouts=2))
    assert first.questions == 1 and len(out.read_text().splitlines()) == 1
    again = evolve([ITEM, other], Scripted(), out, settings=MCTSSettings(max_nodes=6, rollouts=2))
    assert again.skipped == 1 and again.questions == 1
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == ["7", "8"]
