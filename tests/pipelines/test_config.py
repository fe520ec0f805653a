import pytest

from models.errors import ConfigError
from pipelines.config import load_config


def test_defaults_without_file_or_env():
    cfg = load_config(env={})
    assert cfg.io.max_zip_ratio == 200.0
    assert cfg.io.reorient_to_ras is True


def test_file_then_env_then_overrides(tmp_path):
    f = tmp_path / "mewm.toml"
    f.write_text("[io]\nmax_voxels = 1000\nmin_slices = 4\n[app]\ndata_dir = '/tmp/x'\n")
    cfg = load_config(f, env={"MEWM_IO__MIN_SLICES": "6"}, overrides={"io.max_zip_ratio": 10})
    assert cfg.io.max_voxels == 1000
    assert cfg.io.min_slices == 6  # env beats file
    assert cfg.io.max_zip_ratio == 10.0
    assert cfg.app.data_dir == "/tmp/x"


def test_env_config_path_and_bool(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[io]\nreorient_to_ras = false\n")
    cfg = load_config(env={"MEWM_CONFIG": str(f)})
    assert cfg.io.reorient_to_ras is False
    assert load_config(env={"MEWM_IO__REORIENT_TO_RAS": "yes"}).io.reorient_to_ras is True


@pytest.mark.parametrize(
    "text, match",
    [
        ("[nope]\nx = 1\n", "unknown section \\[nope\\]"),
        ("[io]\nmax_voxel = 1\n", "unknown key 'max_voxel'"),
        ("[io]\nmax_voxels = 'many'\n", "expected a int"),
        ("[io\n", "not valid TOML"),
    ],
)
def test_bad_config_files_name_the_problem(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(f, env={})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", env={})
