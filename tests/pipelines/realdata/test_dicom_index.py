"""Splitting a stacked series into acquisitions without trusting any one tag."""

from __future__ import annotations

from pathlib import Path

from pipelines.realdata.dicom_index import Instance, SeriesIndex

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _series(number, time) -> SeriesIndex:
    """Two phases of 3 slices at the same positions; ``number``/``time`` give each phase's tag (or None/"")."""
    s = SeriesIndex("1.2.3", 3, "ABD", "CT")
    for phase in (0, 1):
        for k in range(3):
            s.instances.append(Instance(f"{phase}.{k}", Path(f"{phase}-{k}.dcm"), number(phase), time(phase),
                                        (0.0, 0.0, 5.0 * k), AXIAL))
    return s


def test_split_by_acquisition_number():
    acqs = _series(lambda p: p + 1, lambda p: "101500").acquisitions()
    assert [a.key for a in acqs] == ["acq 1", "acq 2"] and [len(a.instances) for a in acqs] == [3, 3]


def test_split_by_acquisition_time_when_numbers_are_equal():
    acqs = _series(lambda p: 1, lambda p: ["101530", "101640"][p]).acquisitions()
    assert [a.key for a in acqs] == ["time 101530", "time 101640"]
    assert acqs[1].sop_uids == {"1.0", "1.1", "1.2"}


def test_split_by_repeated_positions_without_tags():
    acqs = _series(lambda p: None, lambda p: "").acquisitions()
    assert [a.key for a in acqs] == ["repeat 1", "repeat 2"]
    assert acqs[0].sop_uids == {"0.0", "0.1", "0.2"}


def test_a_single_acquisition_stays_whole():
    s = _series(lambda p: 1, lambda p: "101500")
    s.instances = s.instances[:3]
    assert [a.key for a in s.acquisitions()] == ["whole series"]
