"""Fixtures of the virtual-cohort tests: a few hundred simulated patients (no volumes) and a tiny rendered cohort."""

from __future__ import annotations

import numpy as np
import pytest

N_PATIENTS = 300
SMALL_GRID = (64, 56, 32)


@pytest.fixture(scope="session")
def plan_space():
    from pipelines.cohort.plan_space import cohort_plan_space

    return cohort_plan_space()


@pytest.fixture(scope="session")
def patients():
    from pipelines.cohort.simulate import simulate_patients

    return simulate_patients(seed=0, n=N_PATIENTS)


@pytest.fixture(scope="session")
def oracle(patients, plan_space) -> np.ndarray:
    from pipelines.cohort.oracle import oracle_matrix

    return oracle_matrix(patients, plan_space)


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """Three cases on the small grid, seed 7, with one DICOM series."""
    from pipelines.cohort.generate import generate_cohort

    out = tmp_path_factory.mktemp("cohort") / "seed7"
    report = generate_cohort(n=3, seed=7, out=out, size=SMALL_GRID, progress=False, dicom=1)
    return out, report
