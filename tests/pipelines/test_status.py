"""models_status reads the weights folder: missing checkpoints are reported as not installed."""

from pipelines.status import EMBEDDED_MODELS, models_status


def test_empty_weights_dir_reports_every_model_not_installed(tmp_path):
    rows = models_status(tmp_path / "nowhere")
    assert [r.name for r in rows] == list(EMBEDDED_MODELS)
    assert all(not r.installed and r.status == "not yet installed" for r in rows)
    assert all(r.how_to_install.startswith("mewm ") for r in rows)


def test_installed_model_and_extra_checkpoint_are_found(tmp_path):
    (tmp_path / "dynamics").mkdir()
    (tmp_path / "dynamics" / "config.json").write_text("{}")
    (tmp_path / "segmentation").mkdir()  # folder without config.json: not installed
    (tmp_path / "my_survival_v2").mkdir()
    (tmp_path / "my_survival_v2" / "config.json").write_text("{}")
    rows = {r.name: r for r in models_status(tmp_path)}
    assert rows["dynamics"].installed and rows["dynamics"].status == "installed"
    assert not rows["segmentation"].installed
    assert rows["my_survival_v2"].installed and rows["my_survival_v2"].role == "Other checkpoint"
