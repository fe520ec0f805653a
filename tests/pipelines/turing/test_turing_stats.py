"""Reader-study statistics against values computed by hand (and Fleiss' published example)."""

import math

import pytest

from pipelines.turing.stats import AnswerRecord, fleiss_kappa, group_stats, study_results, wilson_interval


@pytest.mark.parametrize("k, n, low, high", [
    # by hand with z = 1.96: p = 0.8, centre = (0.8 + 0.19208) / 1.38416 = 0.71674,
    # half = 1.96 / 1.38416 * sqrt(0.016 + 0.009604) = 0.22658
    (8, 10, 0.49016, 0.94331),
    (0, 10, 0.0, 0.27753),  # centre = half = 0.19208 / 1.38416 = 0.13877 ... high = 2 * 0.13877
    (10, 10, 0.72247, 1.0),
    (5, 10, 0.23659, 0.76341),
    (1, 1, 0.20655, 1.0),  # centre = (1 + 1.92073) / 4.84146 = 0.60327, half = 0.39673
])
def test_wilson_interval_matches_hand_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=2e-4)


def test_wilson_interval_edge_cases():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(3, 2)


def test_fleiss_kappa_published_example():
    # Fleiss (1971) as reproduced on Wikipedia: 10 subjects, 14 raters, 5 categories -> P̄ = 0.378, P_e = 0.213.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_two_readers_by_hand():
    # items: both "real", both "synthetic", one each. P_i = 1, 1, 0 -> P̄ = 2/3; p = (0.5, 0.5) -> P_e = 0.5;
    # kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert fleiss_kappa([[2, 0], [0, 2], [1, 1]]) == pytest.approx(1 / 3)
    assert fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[2, 0], [2, 0]]))  # everything in one category: undefined


@pytest.mark.parametrize("table, match", [([[1, 1], [2, 0], [0, 1]], "same number"), ([[1, 0]], ">= 2"),
                                          ([], "table"), ([[3, -1]], ">= 0")])
def test_fleiss_kappa_rejects_bad_tables(table, match):
    with pytest.raises(ValueError, match=match):
        fleiss_kappa(table)


def _answers():
    # reader A: 4 synthetic items (calls S, S, R, R), 2 real (R, S); reader B: the same items
    truth = {1: "synthetic", 2: "synthetic", 3: "synthetic", 4: "synthetic", 5: "real", 6: "real"}
    calls = {"A": {1: "synthetic", 2: "synthetic", 3: "real", 4: "real", 5: "real", 6: "synthetic"},
             "B": {1: "synthetic", 2: "real", 3: "real", 4: "real", 5: "real", 6: "real"}}
    conf = {1: 5, 2: 4, 3: 2, 4: 2, 5: 5, 6: 1}
    return [AnswerRecord(r, i, truth[i], c, conf[i], 1000 * i) for r, by in calls.items() for i, c in by.items()]


def test_group_stats_by_hand():
    a = group_stats([x for x in _answers() if x.reader == "A"])
    assert (a.sensitivity.k, a.sensitivity.n) == (2, 4)
    assert (a.specificity.k, a.specificity.n) == (1, 2)
    assert (a.accuracy.k, a.accuracy.n) == (3, 6)
    assert (a.synthetic_judged_real.k, a.synthetic_judged_real.n) == (2, 4)
    assert a.median_reading_s == pytest.approx(3.5)
    assert a.sensitivity.text() == "0.50 (0.15–0.85), 2/4"


def test_study_results_per_reader_confidence_and_kappa():
    res = study_results(_answers())
    assert set(res.per_reader) == {"A", "B"}
    assert res.overall.accuracy.k == 3 + 3 and res.overall.answers == 12
    # confidence 5: items 1 (S,S correct) and 5 (R,R correct) for both readers -> 4/4
    assert res.by_confidence[5].accuracy.k == 4 and res.by_confidence[5].accuracy.n == 4
    assert res.by_confidence[2].accuracy.k == 0
    # agreement: per item (real, synthetic) counts: [0,2],[1,1],[2,0],[2,0],[2,0],[1,1] -> P̄ = 4/6;
    # p_real = 8/12, p_synth = 4/12 -> P_e = 5/9; kappa = (2/3 - 5/9) / (4/9) = 1/4
    assert res.agreement.kappa == pytest.approx(0.25)
    assert (res.agreement.items, res.agreement.readers) == (6, 2)
    assert study_results([x for x in _answers() if x.reader == "A"]).agreement.kappa is None
