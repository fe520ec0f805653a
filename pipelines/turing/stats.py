"""Statistics of a visual Turing test: how well readers tell real from synthetic post-treatment images.

Conventions (as in the reference paper's reader study): the *positive* class is **synthetic**.

- sensitivity = synthetic items called synthetic / synthetic items answered;
- specificity = real items called real / real items answered;
- accuracy = correct calls / all answers;
- synthetic judged real = 1 − sensitivity (the "x % of generated images judged real" figure).

Each proportion carries a Wilson score 95 % interval (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over
the Wald interval for small n). Agreement between readers is Fleiss' kappa (Fleiss 1971) over the items that every
reader with at least one answer has answered (Fleiss' kappa needs the same number of ratings per item); it is
``None`` with fewer than two such readers or no common item, and ``nan`` when every rating falls in one category.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Z95", "Proportion", "wilson_interval", "proportion", "fleiss_kappa", "AnswerRecord", "GroupStats",
           "Agreement", "StudyResults", "group_stats", "study_results"]

Z95 = 1.959963984540054  # standard normal quantile 0.975


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n``: ``(low, high)``; ``(nan, nan)`` when ``n == 0``.

    ``centre = (p + z²/2n) / (1 + z²/n)``, ``half = z / (1 + z²/n) · sqrt(p(1 − p)/n + z²/4n²)``.
    """
    if not (0 <= k <= n):
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}.")
    if n == 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n``, its value and Wilson 95 % interval (``nan`` when ``n == 0``)."""

    k: int
    n: int
    value: float
    low: float
    high: float

    def text(self) -> str:
        """``"0.80 (0.49–0.94), 8/10"``, or ``"n/a (0 answers)"``."""
        if self.n == 0:
            return "n/a (0 answers)"
        return f"{self.value:.2f} ({self.low:.2f}–{self.high:.2f}), {self.k}/{self.n}"


def proportion(k: int, n: int) -> Proportion:
    low, high = wilson_interval(k, n)
    return Proportion(k, n, k / n if n else math.nan, low, high)


def fleiss_kappa(counts: Sequence[Sequence[int]] | np.ndarray) -> float:
    """Fleiss' kappa of an ``(items, categories)`` table of rating counts, every row summing to the same n ≥ 2.

    ``P_i = (Σ_j n_ij² − n) / (n(n − 1))``, ``P̄ = mean P_i``, ``p_j = Σ_i n_ij / (N n)``, ``P_e = Σ_j p_j²``,
    ``κ = (P̄ − P_e) / (1 − P_e)``; ``nan`` when ``P_e == 1`` (all ratings in one category).

    Raises:
        ValueError: an empty table, negative counts, rows with different totals, or fewer than two raters.
    """
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] < 2:
        raise ValueError(f"fleiss_kappa: need an (items, categories >= 2) table, got shape {table.shape}.")
    if (table < 0).any():
        raise ValueError("fleiss_kappa: counts must be >= 0.")
    raters = table.sum(axis=1)
    if not np.all(raters == raters[0]) or raters[0] < 2:
        raise ValueError(f"fleiss_kappa: every item needs the same number (>= 2) of ratings, got "
                         f"{sorted(set(raters.astype(int).tolist()))}.")
    n, items = raters[0], table.shape[0]
    p_i = ((table ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_bar = p_i.mean()
    p_j = table.sum(axis=0) / (items * n)
    p_e = float((p_j ** 2).sum())
    if math.isclose(p_e, 1.0):
        return math.nan
    return float((p_bar - p_e) / (1 - p_e))


@dataclass(frozen=True)
class AnswerRecord:
    """One answer joined with its item's truth (what the statistics need)."""

    reader: str  # a display name, unique within the study (the store passes "name (id)")
    item: int | str  # any id of the item, the same for every reader
    truth: str  # "real" | "synthetic"
    call: str  # "real" | "synthetic"
    confidence: int
    reading_ms: int | None = None


@dataclass(frozen=True)
class GroupStats:
    """The figures of one group of answers (a reader, everyone, one confidence level)."""

    answers: int
    sensitivity: Proportion
    specificity: Proportion
    accuracy: Proportion
    synthetic_judged_real: Proportion
    median_reading_s: float

    def row(self) -> dict[str, object]:
        """Flat values for a table or CSV."""
        out: dict[str, object] = {"answers": self.answers}
        for name in ("sensitivity", "specificity", "accuracy", "synthetic_judged_real"):
            p: Proportion = getattr(self, name)
            out.update({name: p.value, f"{name}_low": p.low, f"{name}_high": p.high, f"{name}_k": p.k,
                        f"{name}_n": p.n})
        out["median_reading_s"] = self.median_reading_s
        return out


def group_stats(answers: Iterable[AnswerRecord]) -> GroupStats:
    answers = list(answers)
    synth = [a for a in answers if a.truth == "synthetic"]
    real = [a for a in answers if a.truth == "real"]
    synth_called_synth = sum(a.call == "synthetic" for a in synth)
    real_called_real = sum(a.call == "real" for a in real)
    times = [a.reading_ms / 1000 for a in answers if a.reading_ms is not None]
    return GroupStats(
        answers=len(answers), sensitivity=proportion(synth_called_synth, len(synth)),
        specificity=proportion(real_called_real, len(real)),
        accuracy=proportion(synth_called_synth + real_called_real, len(answers)),
        synthetic_judged_real=proportion(len(synth) - synth_called_synth, len(synth)),
        median_reading_s=float(np.median(times)) if times else math.nan)


@dataclass(frozen=True)
class Agreement:
    """Fleiss' kappa between readers: ``kappa`` (``None`` when not computable), over ``items`` × ``readers``."""

    kappa: float | None
    items: int
    readers: int
    note: str


def _agreement(answers: list[AnswerRecord]) -> Agreement:
    calls: dict[int, dict[str, str]] = defaultdict(dict)
    for a in answers:
        calls[a.item][a.reader] = a.call
    readers = sorted({a.reader for a in answers})
    if len(readers) < 2:
        return Agreement(None, 0, len(readers), "needs at least two readers with answers")
    common = [item for item, by in calls.items() if len(by) == len(readers)]
    if not common:
        return Agreement(None, 0, len(readers), "no item has been answered by every reader yet")
    table = [[sum(c == "real" for c in calls[i].values()), sum(c == "synthetic" for c in calls[i].values())]
             for i in sorted(common)]
    kappa = fleiss_kappa(table)
    note = "all calls in one category: kappa undefined" if math.isnan(kappa) else "items answered by every reader"
    return Agreement(kappa, len(common), len(readers), note)


@dataclass(frozen=True)
class StudyResults:
    """Overall, per-reader and per-confidence figures, and agreement."""

    overall: GroupStats
    per_reader: dict[str, GroupStats]
    by_confidence: dict[int, GroupStats]
    agreement: Agreement
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"overall": self.overall.row(),
                "per_reader": {k: v.row() for k, v in self.per_reader.items()},
                "by_confidence": {str(k): v.row() for k, v in self.by_confidence.items()},
                "agreement": asdict(self.agreement), "notes": list(self.notes)}


def study_results(answers: Iterable[AnswerRecord]) -> StudyResults:
    """All the figures of a study from its answers (see the module docstring)."""
    answers = list(answers)
    by_reader: dict[str, list[AnswerRecord]] = defaultdict(list)
    by_conf: dict[int, list[AnswerRecord]] = defaultdict(list)
    for a in answers:
        by_reader[a.reader].append(a)
        by_conf[a.confidence].append(a)
    notes = ["Positive class: synthetic. Sensitivity = synthetic called synthetic; specificity = real called real. "
             "Intervals: Wilson 95 %."]
    return StudyResults(overall=group_stats(answers),
                        per_reader={r: group_stats(v) for r, v in sorted(by_reader.items())},
                        by_confidence={c: group_stats(by_conf[c]) for c in sorted(by_conf)},
                        agreement=_agreement(answers), notes=notes)
