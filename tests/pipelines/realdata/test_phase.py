"""Contrast phase from aorta vs portal-vein HU (`pipelines.realdata.seg.classify_phase`)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.realdata.seg import classify_phase
from pipelines.volume import Volume


@pytest.mark.parametrize("aorta, portal, phase", [
    (320.0, 120.0, "arterial"), (150.0, 190.0, "portal-venous"), (180.0, 150.0, "portal-venous"),
    (45.0, 40.0, "non-contrast")])
def test_phase_calls(aorta, portal, phase):
    hu = np.zeros((6, 6, 4), np.float32)
    a, p = np.zeros(hu.shape, bool), np.zeros(hu.shape, bool)
    a[:2], p[3:5] = True, True
    hu[a], hu[p] = aorta, portal
    call = classify_phase(Volume(hu, np.eye(4)), a, p)
    assert call.phase == phase and call.aorta_hu == aorta and call.portal_hu == portal


def test_without_vessel_masks_the_phase_is_unknown():
    hu = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4))
    empty = np.zeros((4, 4, 4), bool)
    assert classify_phase(hu, empty, empty).phase == "unknown"
