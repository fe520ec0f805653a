"""`mewm score` killed with SIGKILL after its first case, then run again: every case appears exactly once and the
results equal those of an uninterrupted run (same settings, fixed seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from batch_helpers import TINY_LOADER, write_cohort, write_tiny_weights

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
N = 5
# The real CLI (`pipelines.cli.main`, as `mewm` runs it) with the tiny test models plugged in as the default
# loader; one torch thread so that both runs compute identically.
DRIVER = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import torch; torch.set_num_threads(1); "
          f"from pipelines.planning import batch; batch.DEFAULT_LOADER = {TINY_LOADER!r}; "
          "from pipelines.cli import main; sys.exit(main(sys.argv[1:]))")
TIMEOUT = 300  # a hang guard on the shared 2-core machine, not a timing assertion


def _command(manifest: Path, out: Path, weights: Path) -> list[str]:
    # steps 12: a case takes long enough for the kill to land in the middle of the batch
    return [sys.executable, "-c", DRIVER, "score", "--manifest", str(manifest), "--out", str(out),
            "--weights", str(weights), "--samples", "2", "--steps", "12", "--plan", "Epirubicin; Lipiodol",
            "--plan", "Lobaplatin; Lipiodol; Gelatin Sponge", "--plan", "PVA", "--quiet"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _main_here(argv: list[str], monkeypatch) -> int:
    """`mewm` in this process, with the same loader and torch threads as `DRIVER`."""
    import torch

    from pipelines.cli import main
    from pipelines.planning import batch

    monkeypatch.setattr(batch, "DEFAULT_LOADER", TINY_LOADER)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(previous)


def _comparable(out: Path) -> dict[str, dict]:
    """Per-case records without their timings (which differ between runs)."""
    records = {}
    for path in sorted((out / "cases").glob("*.json")):
        data = json.loads(path.read_text())
        result = {k: v for k, v in data["result"].items() if k != "timings_s"}
        records[data["case_id"]] = result
    return records


@pytest.mark.slow
def test_kill_9_then_rerun_finishes_with_nothing_lost_or_duplicated(tmp_path, monkeypatch):
    weights = write_tiny_weights(tmp_path / "weights")
    manifest = write_cohort(tmp_path / "cohort", n=N)
    killed, whole = tmp_path / "killed", tmp_path / "whole"

    proc = subprocess.Popen(_command(manifest, killed, weights), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT
    while not list((killed / "cases").glob("*.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no case was scored in time"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    done_at_kill = len(list((killed / "cases").glob("*.json")))
    assert proc.returncode == -signal.SIGKILL and 1 <= done_at_kill < N, done_at_kill
    assert not (killed / "results.csv").exists()  # killed before the end

    rerun = subprocess.run(_command(manifest, killed, weights), env=_env(), capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{N} cases: {N} scored, 0 failed" in rerun.stdout
    assert f"{N - done_at_kill} planned in this run, {done_at_kill} already done" in rerun.stdout
    assert not [p for p in killed.rglob("*.tmp")]

    assert _main_here(_command(manifest, whole, weights)[3:], monkeypatch) == 0  # uninterrupted, in this process

    table = pd.read_csv(killed / "results.csv")
    assert list(table["case_id"]) == [f"c{i}" for i in range(N)]  # each case exactly once
    assert len(list((killed / "cases").iterdir())) == N
    reference = pd.read_csv(whole / "results.csv")
    pd.testing.assert_frame_equal(table.drop(columns="seconds"), reference.drop(columns="seconds"))
    assert _comparable(killed) == _comparable(whole)


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    """A typed error (here: another batch's settings in --out) is one stderr line and exit status 2."""
    weights = write_tiny_weights(tmp_path / "weights")
    manifest = write_cohort(tmp_path / "cohort", n=1)
    argv = _command(manifest, tmp_path / "out", weights)[3:]
    assert _main_here(argv, monkeypatch) == 0
    assert "1 cases: 1 scored, 0 failed" in capsys.readouterr().out
    argv[argv.index("--samples") + 1] = "3"
    assert _main_here(argv, monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "other settings" in err and "Traceback" not in err
