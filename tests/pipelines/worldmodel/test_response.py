"""The response predictor and the dynamics model's response token: features and targets with known answers, the
networks, the trainer and its CLI, fine-tuning a model without the token, sampling with it, and ``mewm eval
response`` (known answers, then end to end on a tiny cohort)."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch

from models.errors import CheckpointNotFoundError, ConfigError, PlanValidationError
from models.plan import Plan
from models.response import LESION_FEATURES, RESPONSE_TARGETS, ResponseEncoder, ResponsePredictor
from pipelines.cli import build_parser
from pipelines.volume import LABELS
from pipelines.worldmodel.response import lesion_features, measured_response

from simulate_helpers import make_case, write_tiny_weights
from wm_training_helpers import FAST, TINY_CROP, TINY_DYN, tiny_autoencoder, tiny_cohort

L = LABELS
PLANS = [Plan.parse("Epirubicin; Lipiodol"), Plan.parse("PVA")]


def _labels() -> np.ndarray:
    """A 10³ crop: liver everywhere, a lesion of 8 voxels (6 viable, 1 necrosis, 1 Lipiodol)."""
    lab = np.full((10, 10, 10), L["liver"], dtype=np.uint8)
    lab[4:6, 4:6, 4:6] = L["tumour"]
    lab[4, 4, 4] = L["necrosis"]
    lab[5, 5, 5] = L["lipiodol"]
    return lab


def test_lesion_features_known_answers():
    lab = _labels()
    hu = np.where(lab == L["liver"], 100.0, 0.0)
    hu[lab == L["tumour"]] = [150.0, 150.0, 150.0, 250.0, 250.0, 250.0]  # mean 200, SD 50
    f = dict(zip(LESION_FEATURES, lesion_features(hu, lab, voxel_ml=0.5)))
    assert f["log_volume_ml"] == pytest.approx(np.log(4.0))
    assert f["lesion_minus_liver_hu"] == pytest.approx(1.0)  # (200 - 100) / 100
    assert f["lesion_hu_sd"] == pytest.approx(1.0)  # 50 / 50
    assert f["necrosis_fraction"] == pytest.approx(1 / 8) and f["lipiodol_fraction"] == pytest.approx(1 / 8)
    assert f["liver_present"] == 1.0
    no_liver = np.where(lab == L["liver"], L["background"], lab).astype(np.uint8)
    f = dict(zip(LESION_FEATURES, lesion_features(hu, no_liver, voxel_ml=0.5)))
    assert f["liver_present"] == 0.0 and f["lesion_minus_liver_hu"] == 0.0
    with pytest.raises(ValueError, match="no lesion"):
        lesion_features(hu, np.zeros_like(lab), 0.5)


def test_measured_response_known_answers():
    pre = _labels()
    post = pre.copy()
    post[pre == L["tumour"]] = L["necrosis"]  # all viable voxels die
    post[0, 0, 0:4] = L["tumour"]  # 4 voxels of new growth in the liver
    assert measured_response(pre, post) == pytest.approx([4 / 8, 7 / 8, 1 / 8])
    assert measured_response(pre, pre) == pytest.approx([6 / 8, 1 / 8, 1 / 8])
    with pytest.raises(ValueError, match="no lesion"):
        measured_response(np.zeros_like(pre), pre)


def test_predictor_outputs_non_negative_fractions_and_refuses_unknown_agents():
    torch.manual_seed(0)
    model = ResponsePredictor(plan_dim=4, hidden=8, clinical_fields=("afp",))
    lesion = [[1.0, 0.5, 0.2, 0.0, 0.0, 1.0]] * 2
    out = model.predict(lesion, [{"afp": 400.0}, None], PLANS)
    assert out.shape == (2, len(RESPONSE_TARGETS)) and bool((out >= 0).all())
    assert not torch.equal(out[0], out[1])  # plan (and labs) matter
    assert torch.equal(out, model.predict(lesion, [{"afp": 400.0}, None], PLANS))  # deterministic in eval mode
    with pytest.raises(ValueError, match="lesion features"):
        model.predict([[1.0, 2.0]], None, PLANS[:1])
    narrow = ResponsePredictor(agents=["PVA"], classes=["permanent particulate"], plan_dim=4, hidden=8)
    with pytest.raises(PlanValidationError, match="Epirubicin"):
        narrow.predict(lesion, None, PLANS)


def test_response_encoder_starts_at_zero_and_marks_absent_responses():
    enc = ResponseEncoder(8)
    feats = ResponseEncoder.features(torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.1, 0.0]]), torch.tensor([1.0, 0.0]), 2)
    assert torch.allclose(feats, torch.tensor([[0.5, 0.3, 0.2, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    assert ResponseEncoder.features(None, None, 3).abs().sum() == 0
    assert torch.equal(enc(feats), torch.zeros(2, 1, 8))  # a fine-tuned model starts as it was


def test_dynamics_context_has_a_response_token_only_when_built_with_one():
    from models.dynamics import TumourDynamicsModel

    torch.manual_seed(0)
    with_token = TumourDynamicsModel(latent_channels=2, **TINY_DYN, response_token=True)
    torch.nn.init.normal_(with_token.response_encoder.net[-1].weight)
    without = TumourDynamicsModel(latent_channels=2, **TINY_DYN)
    r = torch.tensor([[0.2, 0.6, 0.2], [1.4, 0.1, 0.0]])
    assert with_token.config["response_token"] is True and "response_token" not in without.config
    a = with_token.encode_plans(PLANS, responses=r)
    assert a.shape[1] == without.encode_plans(PLANS).shape[1] + 1
    b = with_token.encode_plans(PLANS, responses=r.flip(0))
    assert not torch.allclose(a[:, -1], b[:, -1]) and torch.equal(a[:, :-1], b[:, :-1])
    blank = with_token.encode_plans(PLANS)
    assert torch.equal(blank, with_token.encode_plans(PLANS, responses=r, present=torch.zeros(2)))
    assert torch.equal(without.encode_plans(PLANS), without.encode_plans(PLANS, responses=r))


@pytest.fixture(scope="module")
def trained_response(tmp_path_factory):
    from pipelines.worldmodel.response import train_response

    out = tmp_path_factory.mktemp("resp") / "response"
    report = train_response(tiny_cohort(tmp_path_factory), out, steps=4, progress=False, crop=TINY_CROP,
                            clinical_fields=("afp",), schedule=FAST)
    return out, report


def test_train_response_writes_checkpoint_card_and_resumes(trained_response, tmp_path_factory):
    from pipelines.worldmodel.response import load_response_predictor, train_response

    out, report = trained_response
    model, meta = load_response_predictor(out)
    assert meta.config["clinical_fields"] == ["afp"]
    assert meta.extra["crop"]["spacing"] == list(TINY_CROP.spacing)
    assert set(report.extra["val_figures"]) == set(RESPONSE_TARGETS)
    assert all(np.isfinite(v["mae"]) for v in report.extra["val_figures"].values())
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Held-out figures" in card and "mewm train response" in card and "Not for clinical use" in card
    resumed = train_response(tiny_cohort(tmp_path_factory), out, steps=6, progress=False, crop=TINY_CROP,
                             clinical_fields=("afp",), schedule=FAST, resume=True)
    assert resumed.start_step == 4 and resumed.steps == 6


def test_load_response_predictor_names_the_command(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="mewm train response"):
        from pipelines.worldmodel.response import load_response_predictor

        load_response_predictor(tmp_path / "none")


def test_dynamics_fine_tuned_with_a_new_response_token(tmp_path_factory):
    from pipelines.worldmodel.crops import LatentPairs, build_crop_cache
    from pipelines.worldmodel.train import train_dynamics

    cohort, ae = tiny_cohort(tmp_path_factory), tiny_autoencoder(tmp_path_factory)
    root = tmp_path_factory.mktemp("dyn_resp")
    train_dynamics(cohort, ae, root / "plain", steps=2, batch_size=2, progress=False, model_config=TINY_DYN,
                   schedule=FAST)
    report = train_dynamics(cohort, ae, root / "token", steps=2, batch_size=2, progress=False,
                            model_config=TINY_DYN, schedule=FAST, init_from=root / "plain", response_token=True)
    assert report.model_config["response_token"] is True
    assert report.extra["init_from"]["fresh"] == ["response_encoder."]
    config = json.loads((root / "token" / "config.json").read_text())
    assert config["config"]["response_token"] is True
    assert "--response-token" in (root / "token" / "MODEL_CARD.md").read_text()
    plain = torch.load(root / "plain" / "model.pt", weights_only=True)
    tuned = torch.load(root / "token" / "model.pt", weights_only=True)
    assert set(tuned) - set(plain) == {k for k in tuned if k.startswith("response_encoder.")}
    # the pairs' responses are measured from the crop labels
    cache = build_crop_cache(cohort, spacing=TINY_CROP.spacing, crop_size=TINY_CROP.crop_size, progress=False)
    from pipelines.worldmodel.train import _load_autoencoder

    model, _, sha = _load_autoencoder(ae, cohort)
    pairs = LatentPairs.from_cache(cache, model, [0, 1], change_margin_mm=10.0, weights_key=sha, responses=True)
    first = cache.load(0)
    assert pairs.responses[0].tolist() == pytest.approx(measured_response(first["pre_labels"],
                                                                          first["post_labels"]))
    assert pairs.sample_batch(3, torch.Generator().manual_seed(0)).responses.shape == (3, 3)


def test_lr_scales_give_the_matching_parameters_their_own_learning_rate():
    from pipelines.training import LoopSettings

    model = torch.nn.ModuleDict({"body": torch.nn.Linear(2, 2), "response_encoder": torch.nn.Linear(2, 1)})
    plain = LoopSettings(steps=1, batch_size=1, lr=1e-4)
    assert [(len(g["params"]), g["lr"]) for g in plain.param_groups(model)] == [(4, 1e-4)]
    assert "lr_scales" not in plain.identity()  # unused: older saved runs still resume
    scaled = LoopSettings(steps=1, batch_size=1, lr=1e-4, lr_scales=[("response_encoder.", 10)])
    groups = scaled.param_groups(model)
    assert [(len(g["params"]), g["lr"]) for g in groups] == [(2, 1e-4), (2, pytest.approx(1e-3))]
    assert groups[1]["params"][0] is model["response_encoder"].weight
    assert scaled.identity()["lr_scales"] == (("response_encoder.", 10.0),)
    with pytest.raises(ConfigError, match="positive"):
        LoopSettings(steps=1, batch_size=1, lr=1e-4, lr_scales=[("x", 0.0)])


def test_response_lr_scale_is_recorded_and_needs_the_token(tmp_path_factory):
    from pipelines.worldmodel.train import train_dynamics

    cohort, ae = tiny_cohort(tmp_path_factory), tiny_autoencoder(tmp_path_factory)
    root = tmp_path_factory.mktemp("dyn_scale")
    with pytest.raises(ConfigError, match="--response-token"):
        train_dynamics(cohort, ae, root / "bad", steps=2, batch_size=2, progress=False, model_config=TINY_DYN,
                       schedule=FAST, response_lr_scale=10.0)
    train_dynamics(cohort, ae, root / "token", steps=2, batch_size=2, progress=False, model_config=TINY_DYN,
                   schedule=FAST, response_token=True, response_lr_scale=10.0)
    assert "--response-lr-scale 10" in (root / "token" / "MODEL_CARD.md").read_text()


def test_simulate_conditions_on_the_predicted_response(tmp_path):
    from pipelines.worldmodel.weights import load_world_model

    torch.set_num_threads(1)
    world = load_world_model(write_tiny_weights(tmp_path / "w", response_token=True), max_crop_voxels=16)
    case = make_case()
    result = world.simulate(case, PLANS, samples=2, steps=3, seed=1)
    for sim in result.plans:
        assert set(sim.response) == set(RESPONSE_TARGETS) and all(v >= 0 for v in sim.response.values())
    assert result.to_dict()["plans"][0]["predicted_response"] == result.plans[0].response
    again = world.simulate(case, PLANS, samples=2, steps=3, seed=1)
    assert np.array_equal(result.plans[0].crops_hu, again.plans[0].crops_hu)  # deterministic
    # the response token reaches the samples: a predictor that answers otherwise changes them
    with torch.no_grad():
        world.response.net[-1].bias.add_(3.0)
    moved = world.simulate(case, PLANS, samples=2, steps=3, seed=1)
    assert moved.plans[0].response["viable"] > result.plans[0].response["viable"]
    assert not np.allclose(moved.plans[0].crops_hu, result.plans[0].crops_hu)


def test_a_response_token_model_without_its_predictor_is_a_clear_error(tmp_path):
    import shutil

    from pipelines.worldmodel.weights import load_world_model

    root = write_tiny_weights(tmp_path / "w", response_token=True)
    shutil.rmtree(root / "response")
    with pytest.raises(CheckpointNotFoundError, match="mewm train response"):
        load_world_model(root)


def test_response_metrics_known_answers():
    from pipelines.worldmodel.response_eval import response_metrics

    rng = np.random.default_rng(0)
    true = rng.uniform(0.1, 1.0, size=(6, 5, 3))
    probe = rng.uniform(0.1, 1.0, size=(6, 4, 3))
    perfect = response_metrics(true, true, probe, probe)
    for name in ("viable_spearman", "within_patient_spearman", "drug_contrast_spearman", "best_drug_agreement"):
        assert perfect[name]["value"] == pytest.approx(1.0), name
    assert perfect["viable_mae"]["value"] == 0.0 and perfect["best_drug_agreement"]["chance"] == pytest.approx(1 / 3)
    # a predictor that knows only each plan's average: exactly the baseline
    average = np.broadcast_to(true.mean(0, keepdims=True), true.shape)
    probe_avg = np.broadcast_to(probe.mean(0, keepdims=True), probe.shape)
    m = response_metrics(average, true, probe_avg, probe)
    for name, entry in m.items():
        assert entry["value"] == pytest.approx(entry["baseline"], nan_ok=True), name
    # reversed drug contrasts
    flipped = probe.copy()
    flipped[:, 1:, 0] = -probe[:, 1:, 0]
    assert response_metrics(true, true, flipped, probe)["drug_contrast_spearman"]["value"] == pytest.approx(-1.0)


def test_eval_response_end_to_end_through_the_cli(tmp_path_factory, trained_response, capsys):
    """A tiny cohort of a larger grid (lesions fit the 80 mm crop), tiny weights with the trained predictor."""
    import shutil

    from pipelines.cohort.generate import generate_cohort

    torch.set_num_threads(1)
    cohort = tmp_path_factory.mktemp("resp_eval") / "c3"
    generate_cohort(n=3, seed=5, out=cohort, size=(64, 56, 32), progress=False)
    root = write_tiny_weights(tmp_path_factory.mktemp("resp_w") / "w", response_token=True)
    shutil.rmtree(root / "response")
    shutil.copytree(trained_response[0], root / "response")
    out = root / "r.json"
    args = build_parser().parse_args(shlex.split(f"eval response --cohort {cohort} --weights {root} --out {out} "
                                                 "--quiet"))
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    assert report["patients_evaluated"] + report["skipped"] == 3
    assert report["catalogue_plans"] == 32 and report["synthetic"] is True
    assert {"viable_spearman", "drug_contrast_spearman", "best_drug_agreement"} <= set(report["metrics"])
    assert "Response predictor on" in capsys.readouterr().out
    card = (root / "response" / "MODEL_CARD.md").read_text()
    assert "## Evaluation" in card and "plan-average baseline" in card and "eval response" in card
    bad = build_parser().parse_args(shlex.split(f"eval response --cohort {cohort} --weights {root} --patients 9"))
    from models.errors import ConfigError

    with pytest.raises(ConfigError, match="between 2"):
        bad.func(bad)


def test_train_response_cli(tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("resp_cli") / "r"
    args = build_parser().parse_args(shlex.split(
        f"train response --manifest {tiny_cohort(tmp_path_factory)} --out {out} --steps 2 --quiet "
        "--clinical-fields afp,n_lesions"))
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "Trained response" in text and "held-out viable" in text
    assert json.loads((out / "config.json").read_text())["config"]["clinical_fields"] == ["afp", "n_lesions"]


def test_combine_guidance_known_answers():
    from pipelines.worldmodel.simulate import combine_guidance, guidance_branches

    assert [guidance_branches(g, r) for g, r in ((1.0, None), (1.0, 1.0), (2.0, None), (2.0, 2.0))] == [1, 1, 2, 2]
    assert guidance_branches(2.0, 5.0) == 3 and guidance_branches(1.0, 3.0) == 3
    null, plan, full = torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([4.0])
    assert combine_guidance([full], 1.0, None).item() == 4.0
    assert combine_guidance([null, full], 2.0, None).item() == 1.0 + 2.0 * 3.0
    # null + g (plan - null) + g_r (full - plan)
    assert combine_guidance([null, plan, full], 2.0, 5.0).item() == 1.0 + 2.0 * 2.0 + 5.0 * 1.0
    # g_r = g: the blank-token branch cancels and the two-branch estimate remains
    assert combine_guidance([null, plan, full], 2.0, 2.0).item() == combine_guidance([null, full], 2.0, None).item()


def test_response_guidance_runs_a_third_branch_without_the_token(tmp_path, monkeypatch):
    from dataclasses import replace

    from pipelines.worldmodel.weights import load_world_model

    torch.set_num_threads(1)
    root = write_tiny_weights(tmp_path / "w", response_token=True)
    world = load_world_model(root, max_crop_voxels=16, response_guidance=2.0)
    case = make_case()
    plain = world.simulate(case, PLANS, samples=2, steps=3, seed=1, guidance=2.0)
    assert plain.response_guidance == 2.0 and plain.denoiser_rows == 2 * 2 * 2  # g_r = g: two branches

    contexts = []
    forward = world.dynamics.forward

    def spy(x, t, pre, mask, context):
        contexts.append(context.clone())
        return forward(x, t, pre, mask, context)

    monkeypatch.setattr(world.dynamics, "forward", spy)
    strong = replace(world, response_guidance=6.0).simulate(case, PLANS, samples=2, steps=3, seed=1, guidance=2.0)
    assert strong.denoiser_rows == 2 * 2 * 3 and strong.to_dict()["response_guidance"] == 6.0
    # rows: null plan, the plans with a blank token, the plans with their predicted response (plan p, sample t)
    clinical = [strong.clinical] * len(PLANS)
    null = world.dynamics.encode_plans([None], [strong.clinical])
    blank = world.dynamics.encode_plans(PLANS, clinical)
    full = world.dynamics.encode_plans(PLANS, clinical, torch.tensor([list(s.response.values()) for s in strong.plans]))
    expected = torch.cat([null.expand(4, -1, -1), blank.repeat_interleave(2, 0), full.repeat_interleave(2, 0)])
    torch.testing.assert_close(contexts[0], expected)
    monkeypatch.undo()

    assert not np.allclose(strong.plans[0].crops_hu, plain.plans[0].crops_hu)  # the token's scale reaches samples
    again = replace(world, response_guidance=6.0).simulate(case, PLANS, samples=2, steps=3, seed=1, guidance=2.0)
    np.testing.assert_array_equal(again.plans[0].crops_hu, strong.plans[0].crops_hu)  # deterministic
    split = replace(world, response_guidance=6.0, max_batch=3).simulate(case, PLANS, samples=2, steps=3, seed=1,
                                                                        guidance=2.0)
    assert split.denoiser_passes == 4 * 3  # one plan-sample row (three branches) per call
    for p, q in zip(strong.plans, split.plans):
        np.testing.assert_allclose(p.crops_hu, q.crops_hu, atol=1e-4 * 775)


def test_response_guidance_is_configured_checked_and_ignored_without_a_token(tmp_path, monkeypatch):
    from dataclasses import replace

    from pipelines.worldmodel.weights import load_world_model

    torch.set_num_threads(1)
    root = write_tiny_weights(tmp_path / "w")  # no response token
    monkeypatch.setenv("MEWM_WORLDMODEL__RESPONSE_GUIDANCE", "5")
    world = load_world_model(root, max_crop_voxels=16)
    assert world.response_guidance == 5.0
    assert load_world_model(root, max_crop_voxels=16, response_guidance=3).response_guidance == 3.0
    with pytest.raises(ConfigError, match="response_guidance must be a finite number"):
        load_world_model(root, max_crop_voxels=16, response_guidance=float("inf"))
    case = make_case()
    a = world.simulate(case, PLANS, samples=1, steps=2, seed=0)
    b = replace(world, response_guidance=2.0).simulate(case, PLANS, samples=1, steps=2, seed=0)
    assert a.response_guidance is None and a.denoiser_rows == 2 * 1 * 2
    np.testing.assert_array_equal(a.plans[0].crops_hu, b.plans[0].crops_hu)
    args = build_parser().parse_args(["simulate", "--case", "x", "--plan", "PVA", "--out", "o",
                                      "--response-guidance", "4.5"])
    assert args.response_guidance == 4.5
