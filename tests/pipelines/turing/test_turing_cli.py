"""`mewm study ...` on folder crops: create, add a reader, read (through the store), results, export, audit."""

import csv
import json

import pytest

from pipelines.cli import main
from pipelines.turing.store import StudyStore
from turing_helpers import write_crop_folders


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEWM_APP__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEWM_APP__DATABASE_URL", "")
    monkeypatch.setenv("MEWM_STUDY__STUDIES_DIR", str(tmp_path / "studies"))
    return tmp_path


def test_study_commands(env, capsys):
    real, synth = write_crop_folders(env / "crops")
    assert main(["study", "create", "--name", "folders", "--real-dir", str(real), "--synthetic-dir", str(synth),
                 "--real", "2", "--synthetic", "2", "--quiet"]) == 0
    assert "2 real + 2 synthetic" in capsys.readouterr().out
    assert main(["study", "add-reader", "--study", "1", "--name", "Dr A", "--role", "radiologist"]) == 0
    code = capsys.readouterr().out.strip().rsplit(" ", 1)[-1]
    store = StudyStore.from_config()
    reader = store.login(code)
    while (item := store.next_item(reader.reader_id)) is not None:
        store.submit_answer(reader.reader_id, item.token, "real", 4)
    assert main(["study", "results", "--study", "1"]) == 0
    text = capsys.readouterr().out
    assert "specificity (real called real):           1.00 (0.34–1.00), 2/2" in text
    assert "synthetic judged real:                    1.00 (0.34–1.00), 2/2" in text
    assert main(["study", "results", "--study", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"]["answers"] == 4
    out = env / "answers.csv"
    assert main(["study", "export", "--study", "1", "--out", str(out), "--summary", str(env / "summary.csv")]) == 0
    assert len(list(csv.DictReader(out.open()))) == 4 and (env / "summary.csv").is_file()
    assert main(["study", "close", "--study", "1"]) == 0
    assert main(["study", "audit", "--study", "1"]) == 0
    log = capsys.readouterr().out
    for action in ("study created", "reader added", "exported", "study closed"):
        assert action in log


def test_study_errors_are_one_line(env, capsys):
    assert main(["study", "results", "--study", "9"]) == 2
    assert capsys.readouterr().err.strip() == "mewm: error: No study with id 9. `mewm study list` shows the studies."
    assert main(["study", "create", "--name", "x", "--real-dir", str(env)]) == 2
    assert "--synthetic-dir" in capsys.readouterr().err
