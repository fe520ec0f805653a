"""`mewm policy propose` (pipelines/policy/cli.py)."""

from __future__ import annotations

import json

from pipelines.cli import main


def test_propose_text(capsys):
    assert main(["policy", "propose", "--case", "VC00003"]) == 0
    out = capsys.readouterr().out
    assert "Policy: guideline (guideline rules v1)" in out
    assert "Preferred plan: Doxorubicin; Drug-eluting Beads (DEB-TACE)" in out
    assert "Candidate plans (at most 2 drugs, 2 embolics): 11" in out and "G2" in out
    assert "not for clinical use" in out


def test_propose_json(capsys):
    assert main(["policy", "propose", "--case", "VC00004", "--backend", "guideline", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] == "guideline" and data["n_candidates"] == len(data["candidates"]) > 0
    assert data["preferred_text"] in data["candidates"]


def test_errors_are_one_line(capsys, monkeypatch):
    monkeypatch.setenv("MEWM_POLICY__OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert main(["policy", "propose", "--case", "VC00004", "--backend", "openai"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mewm: error: Cannot reach the policy server") and err.count("\n") == 1
    assert main(["policy", "propose", "--case", "NOPE"]) == 2
    assert "No sample case 'NOPE'" in capsys.readouterr().err
