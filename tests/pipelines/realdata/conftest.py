"""Fixtures for the real-data tests: a synthetic HCC-TACE-Seg download (written once per session with
highdicom/pydicom, 32 x 32 x 16 CTs) and its import, both in private temporary folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import Config


@pytest.fixture(scope="session")
def rd_config(tmp_path_factory) -> Config:
    """Default config with the de-identification key in a private test folder."""
    c = Config()
    c.app.data_dir = str(tmp_path_factory.mktemp("mewm-data"))
    return c


@pytest.fixture(scope="session")
def download(tmp_path_factory) -> tuple[Path, Path]:
    """``(src, clinical.xlsx)`` of the synthetic download (see `pipelines.realdata.synthetic_download`)."""
    from pipelines.realdata.synthetic_download import write_synthetic_download

    src = tmp_path_factory.mktemp("hcc-download")
    return src, write_synthetic_download(src)


@pytest.fixture(scope="session")
def imported(download, rd_config, tmp_path_factory):
    """``(out, summary)``: the synthetic download imported once."""
    from pipelines.realdata.hcc_tace_seg import import_hcc_tace_seg

    out = tmp_path_factory.mktemp("hcc-imported")
    summary = import_hcc_tace_seg(download[0], download[1], out, config=rd_config, progress=False)
    return out, summary


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Tiny seeded world-model checkpoints (5 mm, 16³ crops) from the world-model tests' helper."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worldmodel"))
    from simulate_helpers import write_tiny_weights

    return write_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))


@pytest.fixture(scope="session")
def registered(imported, tiny_weights, rd_config, tmp_path_factory):
    """``(cohort, summary)``: a copy of the imported cohort, registered with the tiny segmenter."""
    import shutil

    from pipelines.realdata.register import register_cohort

    cohort = tmp_path_factory.mktemp("hcc-registered") / "cohort"
    shutil.copytree(imported[0], cohort)
    summary = register_cohort(cohort, weights_dir=tiny_weights, iterations=60, config=rd_config, progress=False)
    return cohort, summary
