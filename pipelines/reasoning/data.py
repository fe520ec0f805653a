"""Seed and evaluation questions in the MedS3 reference format, and the fixed train/dev split.

A file is a JSON list of ``{"id", "conversations": [{"from": "human", "value": Q}, ...], "eval": {"answer": GOLD}}``
(seed files may carry ``answer_idx`` instead). Only ``conversations[0]`` is the prompt: some files keep the gold
answer in a later ``gpt`` turn.

The split is by a hash of ``"<file stem>:<id>"``: an item is **dev** when the first 8 hex digits of its SHA-256 are
below 20 % of the range, else **train**. It does not depend on file order, seeds or on which other items exist, so
self-evolution, PRM and policy training only ever see ``train`` items and every reported figure is on ``dev``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from models.errors import ReasoningInputError
from pipelines.reasoning.answers import parse_options

__all__ = ["QAItem", "load_items", "split_of", "train_tree_records", "DEV_FRACTION", "SPLITS"]

DEV_FRACTION = 0.2
SPLITS = ("train", "dev", "all")


@dataclass(frozen=True)
class QAItem:
    """One question: ``options`` parsed from the text ({} for open questions), ``gold`` a letter or a phrase."""

    id: str
    question: str
    gold: str
    dataset: str
    options: dict[str, str]

    @property
    def is_mcq(self) -> bool:
        return bool(self.options)


def split_of(dataset: str, item_id: str) -> str:
    """``"dev"`` or ``"train"`` for an item (see the module docstring)."""
    digest = hashlib.sha256(f"{dataset}:{item_id}".encode()).hexdigest()
    return "dev" if int(digest[:8], 16) < DEV_FRACTION * 16**8 else "train"


def load_items(path: str | os.PathLike, split: str = "all", limit: int | None = None) -> list[QAItem]:
    """The items of a reference-format file, in file order, restricted to ``split`` and the first ``limit``.

    Raises:
        ReasoningInputError: missing or malformed file, unknown split, an item without a question or gold answer,
            or an MCQ gold letter that is not one of its options.
    """
    if split not in SPLITS:
        raise ReasoningInputError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    path = Path(path)
    if not path.is_file():
        raise ReasoningInputError(f"Question file {path} does not exist.")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReasoningInputError(f"{path} is not readable JSON ({e}).") from e
    if not isinstance(data, list):
        raise ReasoningInputError(f"{path} must hold a JSON list of items in the MedS3 format.")
    dataset = path.stem
    items: list[QAItem] = []
    for k, raw in enumerate(data):
        try:
            item_id = str(raw.get("id", k))
            question = raw["conversations"][0]["value"]
            gold = (raw.get("eval") or {}).get("answer", raw.get("answer_idx"))
        except (AttributeError, KeyError, IndexError, TypeError) as e:
            raise ReasoningInputError(f"{path} item {k} lacks conversations[0].value ({e}).") from e
        if not isinstance(question, str) or not question.strip() or not isinstance(gold, str) or not gold.strip():
            raise ReasoningInputError(f"{path} item {k} (id {item_id}) has no question text or no gold answer.")
        options = parse_options(question)
        gold = gold.strip()
        if options and gold.upper() not in options:
            raise ReasoningInputError(f"{path} item {k} (id {item_id}): gold {gold!r} is not one of its options "
                                      f"{', '.join(options)}.")
        if split != "all" and split_of(dataset, item_id) != split:
            continue
        items.append(QAItem(item_id, question.strip(), gold.upper() if options else gold, dataset, options))
        if limit is not None and len(items) >= limit:
            break
    return items


def train_tree_records(paths, purpose: str):
    """Yield ``(path, record)`` for every record of self-evolution tree files (`mewm reasoning evolve` JSONL).

    Raises:
        ReasoningInputError: a missing file, or a dev-split question (``purpose`` says what would have leaked).
    """
    import json
    from pathlib import Path

    from models.errors import ReasoningInputError

    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ReasoningInputError(f"Trees file {path} does not exist; make it with `mewm reasoning evolve`.")
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if split_of(rec["dataset"], str(rec["id"])) != "train":
                raise ReasoningInputError(f"{path}: question {rec['dataset']}:{rec['id']} is in the dev split; "
                                          f"{purpose} uses train questions only.")
            yield path, rec
