"""Two workers: a spawn process pool and two actors on a local Ray (num_cpus=2) give the same results as one
worker in this process (the same per-case function, one torch thread each)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch

from pipelines.planning.batch import score_manifest

from batch_helpers import FAST, TINY_LOADER, write_cohort, write_tiny_weights


def _ranked(out):
    return {p.stem: [(r["plan"], r["log_risk"]) for r in json.loads(p.read_text())["result"]["ranked"]]
            for p in sorted((out / "cases").glob("*.json"))}


@pytest.mark.slow
def test_process_pool_and_ray_match_one_worker(tmp_path):
    ray = pytest.importorskip("ray")
    weights = write_tiny_weights(tmp_path / "weights")
    manifest = write_cohort(tmp_path / "cohort", n=3, corrupt=True)
    settings = {**FAST, "weights_dir": str(weights)}

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = score_manifest(manifest, tmp_path / "one", settings=settings, loader=TINY_LOADER)
    finally:
        torch.set_num_threads(previous)
    pool = score_manifest(manifest, tmp_path / "pool", workers=2, settings=settings, loader=TINY_LOADER)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    try:
        on_ray = score_manifest(manifest, tmp_path / "ray", workers=2, backend="ray", settings=settings,
                                loader=TINY_LOADER)
    finally:
        ray.shutdown()

    for report in (one, pool, on_ray):
        assert (report.ok, report.failed) == (3, 1)
        assert report.failures()[0]["error_type"] == "UnreadableFileError"
    assert pool.run["torch_threads_per_worker"] == on_ray.run["torch_threads_per_worker"] == 1
    for name in ("pool", "ray"):  # scored in other processes than this one
        pids = {json.loads(p.read_text())["worker"]["pid"] for p in (tmp_path / name / "cases").iterdir()}
        assert pids and os.getpid() not in pids
    reference = pd.read_csv(tmp_path / "one" / "results.csv").drop(columns="seconds")
    for name in ("pool", "ray"):
        table = pd.read_csv(tmp_path / name / "results.csv").drop(columns="seconds")
        pd.testing.assert_frame_equal(table, reference)
        assert _ranked(tmp_path / name) == _ranked(tmp_path / "one")
    assert json.loads((tmp_path / "ray" / "batch.json").read_text())["run"]["workers"] == 2
