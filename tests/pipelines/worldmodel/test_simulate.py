"""Batched action-conditioned sampling (`pipelines.worldmodel.simulate`), its weights loader and `mewm simulate`,
on tiny random checkpoints (tests/pipelines/worldmodel/simulate_helpers.py)."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.errors import CheckpointNotFoundError, EmptyMaskError, LesionTooLargeError, PlanValidationError
from pipelines.caseio.nifti import read_nifti, write_nifti
from pipelines.worldmodel.simulate import sample_noise
from pipelines.worldmodel.weights import load_world_model
from simulate_helpers import MARGIN_MM, make_case, write_tiny_weights

PLAN_A = "Lobaplatin; Epirubicin; Lipiodol"
PLAN_B = "Gelatin Sponge"
FAST = {"samples": 2, "steps": 2}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def world(weights_dir):
    return load_world_model(weights_dir)


@pytest.fixture(scope="module")
def case():
    return make_case()


@pytest.fixture(scope="module")
def result(world, case):
    return world.simulate(case, [PLAN_A, PLAN_B], seed=0, **FAST)


def test_result_shapes_and_volumes(result):
    assert [p.plan.canonical() for p in result.plans] == [PLAN_A, PLAN_B]
    for p in result.plans:
        assert p.crops_hu.shape == (2, 16, 16, 16) and p.crops_hu.dtype == np.float32
        assert p.labels.shape == (2, 16, 16, 16) and p.labels.dtype == np.uint8
        assert set(p.volumes) == {"viable_tumour", "necrosis", "lipiodol"}
        viable = (p.labels == 2).sum(axis=(1, 2, 3)) * 0.125  # 5 mm voxels = 0.125 ml
        np.testing.assert_allclose(p.volumes["viable_tumour"], viable)
        np.testing.assert_allclose(p.changes["viable_tumour"], viable - result.pre_volumes["viable_tumour"])
        s = p.summary["viable_tumour"]
        assert s.mean_ml == pytest.approx(viable.mean()) and s.sd_ml == pytest.approx(np.std(viable, ddof=1))
        assert s.mean_change_ml == pytest.approx(viable.mean() - result.pre_volumes["viable_tumour"])
    assert result.pre_volumes["viable_tumour"] == pytest.approx((result.pre_labels == 2).sum() * 0.125)
    assert result.denoiser_passes == 2 and result.denoiser_rows == 2 * 2 * 2  # P·T rows, doubled by guidance
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["plans"][1]["plan"] == PLAN_B and data["seed"] == 0 and data["steps"] == 2
    assert len(data["plans"][0]["volumes_ml"]["viable_tumour"]) == 2


def test_same_seed_same_outputs_other_seed_differs(world, case, result):
    again = world.simulate(case, [PLAN_A, PLAN_B], seed=0, **FAST)
    other = world.simulate(case, [PLAN_A, PLAN_B], seed=1, **FAST)
    for p, q, r in zip(result.plans, again.plans, other.plans):
        np.testing.assert_array_equal(p.crops_hu, q.crops_hu)
        np.testing.assert_array_equal(p.labels, q.labels)
        assert np.abs(p.crops_hu - r.crops_hu).max() > 1.0


def test_noise_is_per_sample_and_shared_by_plans():
    five = sample_noise(7, 5, (2, 4, 4, 4))
    np.testing.assert_array_equal(sample_noise(7, 2, (2, 4, 4, 4)), five[:2])  # sample t ignores T
    assert not torch.equal(five[0], five[1])


def test_the_plan_reaches_the_output(world, result):
    a, b = result.plans[0].crops_hu, result.plans[1].crops_hu  # same seed: same initial noise for both plans
    assert np.abs(a - b)[:, result.region].max() > 1.0
    null = world.dynamics.encode_plans([None])
    plan = world.dynamics.encode_plans([result.plans[0].plan])
    assert not torch.allclose(null, plan)


def test_voxels_outside_the_change_region_are_the_pre_crop(result):
    outside = ~result.region
    assert outside.any() and result.region.any()
    for p in result.plans:
        for t in range(2):
            np.testing.assert_array_equal(p.crops_hu[t][outside], result.pre_hu[outside])
            np.testing.assert_array_equal(p.labels[t][outside], result.pre_labels[outside])


def test_the_segmenter_reads_the_whole_decoded_crop_and_the_shown_crop_is_blended():
    """The segmenter labels the decoded crop as the autoencoder made it (one contrast phase throughout, like its
    training crops), not the crop blended into the pre-treatment one; the crop returned is the blended one, and
    outside the change region both voxels and labels are the pre-treatment ones."""
    import contextlib
    from types import SimpleNamespace

    from pipelines.worldmodel.simulate import decode_and_segment

    shape = (8, 8, 8)
    region = np.zeros(shape, bool)
    region[2:6, 2:6, 2:6] = True
    pre_labels = np.ones(shape, np.uint8)
    seen = []

    def decode(z):
        return torch.full((z.shape[0], 1, *shape), 0.5) + z.mean(dim=(1, 2, 3, 4)).view(-1, 1, 1, 1, 1)

    def predict(x):
        seen.append(x.clone())
        return torch.full((x.shape[0], *shape), 2, dtype=torch.long)

    world = SimpleNamespace(autoencoder=SimpleNamespace(decode=decode), segmenter=SimpleNamespace(predict=predict),
                            autocast=contextlib.nullcontext)
    latents = torch.tensor([0.0, 0.1]).view(2, 1, 1, 1, 1).expand(2, 1, 2, 2, 2).contiguous()
    pre = torch.zeros(1, 1, *shape)
    crops, labels = decode_and_segment(world, latents, pre, pre_labels, region)
    torch.testing.assert_close(torch.cat(seen), decode(latents))  # the unblended decoded crops
    assert torch.all(crops[:, ~torch.from_numpy(region)] == 0.0)  # blended: the pre crop outside the region
    assert torch.all(crops[:, 3:5, 3:5, 3:5] > 0.0)  # and the decoded crop inside it
    assert torch.all(labels[:, torch.from_numpy(region)] == 2) and torch.all(labels[:, ~torch.from_numpy(region)] == 1)


def test_batched_equals_one_plan_at_a_time_and_chunked(world, case, result):
    for i, text in enumerate([PLAN_A, PLAN_B]):
        alone = world.simulate(case, text, seed=0, **FAST)
        np.testing.assert_allclose(alone.plans[0].crops_hu, result.plans[i].crops_hu, atol=1e-4 * 775)  # HU scale
    chunked = replace(world, max_batch=2)  # one plan-and-null pair per denoiser call
    split = chunked.simulate(case, [PLAN_A, PLAN_B], seed=0, **FAST)
    assert split.denoiser_passes == 4 * 2
    for p, q in zip(result.plans, split.plans):
        np.testing.assert_allclose(p.crops_hu, q.crops_hu, atol=1e-4 * 775)


def test_bfloat16_precision_is_recorded_deterministic_and_near_float32(world, case, result):
    """bfloat16 autocast (the fast CPU path) samples deterministically, says so in the result, and stays close to
    float32 on these tiny networks (a few HU; the shipped weights' figures are in the dynamics card)."""
    fast = replace(world, precision="bfloat16")
    a = fast.simulate(case, [PLAN_A, PLAN_B], seed=0, **FAST)
    b = fast.simulate(case, [PLAN_A, PLAN_B], seed=0, **FAST)
    assert a.precision == "bfloat16" and a.to_dict()["precision"] == "bfloat16"
    assert result.precision == "float32" and result.to_dict()["precision"] == "float32"
    for p, q, r in zip(a.plans, b.plans, result.plans):
        np.testing.assert_array_equal(p.crops_hu, q.crops_hu)
        np.testing.assert_array_equal(p.labels, q.labels)
        assert p.crops_hu.dtype == np.float32 and np.isfinite(p.crops_hu).all()
        inside = result.region
        assert 0 < np.abs(p.crops_hu - r.crops_hu)[:, inside].mean() < 20.0  # differs, but only by bf16 rounding
        np.testing.assert_array_equal(p.crops_hu[:, ~inside], r.crops_hu[:, ~inside])  # pre crop kept outside


def test_unknown_precision_is_a_config_error(weights_dir):
    from models.errors import ConfigError

    with pytest.raises(ConfigError, match="precision must be one of float32, bfloat16"):
        load_world_model(weights_dir, precision="float16")


def test_precision_from_the_config_environment(weights_dir, monkeypatch):
    monkeypatch.setenv("MEWM_WORLDMODEL__PRECISION", "bfloat16")
    assert load_world_model(weights_dir).precision == "bfloat16"
    assert load_world_model(weights_dir, precision="float32").precision == "float32"


def test_cli_precision_choices_are_the_world_models():
    from pipelines import cli
    from pipelines.worldmodel import weights

    assert cli.PRECISIONS == weights.PRECISIONS


@pytest.mark.parametrize("plans, rule", [
    ("Cisplatin; Lobaplatin; Lipiodol", "R1"),
    (["Epirubicin; Lipiodol", "Epirubicin"], "R5"),
    ([], "format"),
])
def test_invalid_plan_raises_naming_the_rule(world, case, plans, rule):
    with pytest.raises(PlanValidationError) as e:
        world.simulate(case, plans, **FAST)
    assert e.value.rule.startswith(rule)


def test_bad_counts_raise(world, case):
    for kwargs in ({"samples": 0}, {"steps": 0}, {"steps": 5000}, {"guidance": float("nan")}):
        with pytest.raises(ValueError):
            world.simulate(case, PLAN_A, **{**FAST, **kwargs})


def test_case_without_tumour_raises_empty_mask(world):
    with pytest.raises(EmptyMaskError, match="no tumour mask"):
        world.simulate(make_case("liver-only", tumour_radius_mm=None), PLAN_A, **FAST)


def test_lesion_larger_than_the_training_crop_is_simulated_in_a_flagged_larger_crop(world, result):
    from pipelines.worldmodel.simulate import crop_sizes

    assert world.crop_step == 16 and crop_sizes(world)[:3] == [(16, 16, 16), (32, 32, 32), (48, 48, 48)]
    assert not result.enlarged_crop and result.crop_note is None and not result.to_dict()["crop"]["enlarged"]
    big = world.simulate(make_case("huge", tumour_radius_mm=45.0), [PLAN_A, PLAN_B], **FAST)
    assert big.enlarged_crop and tuple(big.crop.crop_size) == (32, 32, 32) and big.crop.spacing == (5.0, 5.0, 5.0)
    assert big.plans[0].crops_hu.shape == (2, 32, 32, 32) and big.region.shape == (32, 32, 32)
    assert "80 × 80 × 80 mm training crop" in big.crop_note and "160 × 160 × 160 mm" in big.crop_note
    assert big.to_dict()["crop"]["note"] == big.crop_note
    lesion = big.pre_labels >= 2
    assert lesion.sum() * 0.125 == pytest.approx(4 / 3 * np.pi * 4.5 ** 3, rel=0.15), "the whole lesion is inside"


def test_lesion_larger_than_the_largest_allowed_crop_raises(weights_dir):
    strict = load_world_model(weights_dir, max_crop_voxels=16)
    with pytest.raises(LesionTooLargeError, match="80 × 80 × 80 mm, \\[worldmodel\\] max_crop_voxels = 16"):
        strict.simulate(make_case("huge", tumour_radius_mm=45.0), PLAN_A, **FAST)


def test_paste_back_changes_only_the_change_region(result, case):
    pasted = result.paste_back(1, 0)
    assert pasted.ct.shape == case.ct.shape and np.allclose(pasted.ct.affine, case.ct.affine)
    changed = pasted.ct.array != case.ct.array
    assert changed.any()
    # every changed voxel lies within the change margin of the tumour (and in the liver)
    assert np.all(case.labels.array[changed] >= 1)
    with pytest.raises(IndexError):
        result.paste_back(2, 0)


def test_missing_weights_name_the_command(tmp_path, weights_dir):
    with pytest.raises(CheckpointNotFoundError, match="mewm train autoencoder"):
        load_world_model(tmp_path)
    partial = tmp_path / "partial"
    shutil.copytree(weights_dir, partial)
    shutil.rmtree(partial / "dynamics")
    with pytest.raises(CheckpointNotFoundError, match="mewm train dynamics"):
        load_world_model(partial)


def test_autoencoder_from_another_config_is_refused(tmp_path):
    root = write_tiny_weights(tmp_path, autoencoder_config={"channels": (4, 4, 4), "latent_channels": 2,
                                                             "norm_num_groups": 4})
    with pytest.raises(CheckpointNotFoundError, match="trained on an autoencoder with config"):
        load_world_model(root)


def test_weights_dir_from_the_config_environment(weights_dir, monkeypatch):
    monkeypatch.setenv("MEWM_WORLDMODEL__WEIGHTS_DIR", str(weights_dir))
    world = load_world_model()
    assert world.weights_dir == weights_dir and world.change_margin_mm == MARGIN_MM


def _manifest_with(case, root):
    root.mkdir()
    write_nifti(case.ct, root / "ct.nii.gz")
    write_nifti(case.labels, root / "labels.nii.gz")
    with (root / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["case_id", "ct", "labels"], [case.case_id, "ct.nii.gz", "labels.nii.gz"]])
    return root / "manifest.csv"


def test_cli_simulate_writes_volumes_and_json(tmp_path, weights_dir, case, capsys):
    from pipelines.cli import main

    manifest = _manifest_with(case, tmp_path / "cohort")
    out = tmp_path / "out"
    code = main(["simulate", "--case", f"{manifest}#{case.case_id}", "--plan", PLAN_A, "--plan", PLAN_B,
                 "--samples", "2", "--steps", "2", "--seed", "3", "--weights", str(weights_dir), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert PLAN_A in printed and PLAN_B in printed and "±" in printed
    assert "2 DPM-Solver++ steps" in printed  # the default sampler, named
    data = json.loads((out / "simulation.json").read_text())
    assert data["seed"] == 3 and data["samples"] == 2 and [p["plan"] for p in data["plans"]] == [PLAN_A, PLAN_B]
    assert data["sampler"] == "dpm_solver" and data["steps"] == 2
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert len(files) == 2 * 2 * 4  # plans × samples × (crop CT, crop labels, full CT, full labels)
    full = read_nifti(out / data["plans"][0]["files"][1]["ct"])
    assert full.shape == case.ct.shape
    # a second run into the same folder is refused rather than mixing results
    assert main(["simulate", "--case", f"{manifest}#{case.case_id}", "--plan", PLAN_A, "--samples", "1",
                 "--steps", "1", "--weights", str(weights_dir), "--out", str(out)]) == 2
    assert "already" in capsys.readouterr().err


def test_cli_simulate_missing_weights_is_one_plain_line(tmp_path, capsys):
    from pipelines.cli import main

    code = main(["simulate", "--case", "nowhere", "--plan", PLAN_A, "--samples", "1", "--out", str(tmp_path / "o"),
                 "--weights", str(tmp_path / "none")])
    assert code == 2
    err = capsys.readouterr().err
    assert "mewm train autoencoder" in err and "Traceback" not in err


def test_weights_made_by_the_trainers_load_and_simulate(tmp_path_factory):
    """The loader reads what `pipelines.worldmodel.train` writes (the dynamics checkpoint's ``extra``)."""
    from pipelines.samples import resolve_case
    from pipelines.worldmodel.train import train_dynamics, train_segmentation
    from wm_training_helpers import FAST as SCHEDULE
    from wm_training_helpers import TINY_CROP, TINY_DYN, TINY_SEG, tiny_autoencoder, tiny_cohort

    cohort, autoencoder = tiny_cohort(tmp_path_factory), tiny_autoencoder(tmp_path_factory)
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(autoencoder, root / "autoencoder")
    train_segmentation(cohort, root / "segmentation", steps=2, batch_size=2, progress=False, model_config=TINY_SEG,
                       crop=TINY_CROP, schedule=SCHEDULE)
    train_dynamics(cohort, root / "autoencoder", root / "dynamics", steps=2, batch_size=2, progress=False,
                   model_config=TINY_DYN, schedule=SCHEDULE)
    world = load_world_model(root)
    assert world.crop == TINY_CROP
    case = resolve_case(str(cohort / "cases" / "VC00001"))  # a cohort case folder
    result = world.simulate(case, [PLAN_A, PLAN_B], samples=1, steps=2)
    assert result.plans[0].crops_hu.shape == (1, *TINY_CROP.crop_size)


def test_resolve_case_names_what_it_accepts(tmp_path, case):
    from models.errors import ManifestError
    from pipelines.samples import resolve_case

    manifest = _manifest_with(case, tmp_path / "cohort")
    assert resolve_case(f"{manifest.parent}#{case.case_id}").case_id == case.case_id
    with pytest.raises(ManifestError, match="No case 'other'.*it has phantom"):
        resolve_case(f"{manifest}#other")
    with pytest.raises(ManifestError, match="not a case folder of a cohort"):
        resolve_case(str(tmp_path))
    with pytest.raises(ManifestError, match="MANIFEST.csv#ID"):
        resolve_case("no-such-sample", root=manifest.parent)


def test_a_model_that_reads_labs_uses_the_cases_and_says_which_are_missing(tmp_path, case, result):
    from pipelines.case import Covariates

    world = load_world_model(write_tiny_weights(tmp_path / "w", clinical_fields=["afp", "n_lesions"]))
    low = replace(case, covariates=Covariates(afp=5.0, n_lesions=1))
    high = replace(case, covariates=Covariates(afp=30000.0, n_lesions=1))
    a, b = (world.simulate(c, [PLAN_A], seed=0, **FAST) for c in (low, high))
    assert a.clinical == {"afp": 5.0, "n_lesions": 1} and a.clinical_note is None
    assert not np.array_equal(a.plans[0].crops_hu, b.plans[0].crops_hu)  # the AFP changes the simulation
    bare = world.simulate(case, [PLAN_A], seed=0, **FAST)  # the phantom has no labs
    assert bare.clinical == {"afp": None, "n_lesions": None}
    assert "no afp, n_lesions" in bare.clinical_note
    assert json.loads(json.dumps(bare.to_dict()))["clinical"]["covariates"] == {"afp": None, "n_lesions": None}
    assert result.clinical == {} and result.clinical_note is None  # a CT-and-plan model reads none


def test_the_sampler_follows_the_checkpoints_prediction_type(weights_dir, tmp_path, case, result):
    other = tmp_path / "w"
    shutil.copytree(weights_dir, other)
    config = json.loads((other / "dynamics" / "config.json").read_text())
    config["extra"]["scheduler"]["prediction_type"] = "v_prediction"
    (other / "dynamics" / "config.json").write_text(json.dumps(config))
    world = load_world_model(other)
    assert world.scheduler["prediction_type"] == "v_prediction"
    v = world.simulate(case, [PLAN_A, PLAN_B], seed=0, **FAST)
    assert not np.array_equal(v.plans[0].crops_hu, result.plans[0].crops_hu)  # same net read as v, not as noise
