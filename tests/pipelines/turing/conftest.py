"""Fixtures of the reader-study tests: a tiny world model, a tiny cohort and a study made from them."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from turing_helpers import make_store, write_tiny_cohort, write_tiny_weights  # noqa: E402


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    from pipelines.worldmodel.weights import load_world_model

    return load_world_model(write_tiny_weights(tmp_path_factory.mktemp("weights")))


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    return write_tiny_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="session")
def cohort_set(tiny_world, tiny_cohort):
    """3 real and 4 synthetic crops of the tiny cohort (2 DDIM steps)."""
    from pipelines.turing.sources import cohort_sources

    return cohort_sources(tiny_cohort, tiny_world, n_real=3, n_synthetic=4, seed=1, steps=2)


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path)


@pytest.fixture
def study(store, cohort_set):
    from pipelines.turing.render import ViewSettings

    return store.create_study("pilot", cohort_set, ViewSettings(slices=3, slice_gap_mm=5.0), seed=1, context=True)
