"""The world model's networks: shapes, config validation, plan conditioning, and checkpoint save/load."""

import pytest
import torch

from models.autoencoder import CropAutoencoder
from models.checkpoint import load_checkpoint, save_checkpoint
from models.dynamics import TumourDynamicsModel
from models.errors import CheckpointNotFoundError, PlanValidationError
from models.plan import Plan
from models.segmentation import CropSegmenter

TINY_DYN = dict(channels=(8, 16, 16), num_head_channels=8, norm_num_groups=4, plan_dim=16)


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """MONAI zero-initialises output and attention projections; perturb so a random model's outputs vary."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("channels, size, latent", [((4, 8, 8), 16, 4), ((4, 8), 16, 8), ((4, 8, 8), 24, 6)])
def test_autoencoder_shapes(channels, size, latent):
    ae = CropAutoencoder(channels=channels, latent_channels=3, norm_num_groups=4)
    x = torch.rand(2, 1, size, size, size) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 3, latent, latent, latent)
    assert ae.decode(z).shape == x.shape
    recon, mu, sigma = ae(x)
    assert recon.shape == x.shape and mu.shape == sigma.shape == z.shape


def test_autoencoder_scale_factor_scales_the_latent():
    ae = CropAutoencoder(channels=(4, 8, 8), norm_num_groups=4)
    x = torch.rand(1, 1, 16, 16, 16)
    z1 = ae.encode(x)
    ae.scale_factor.fill_(2.0)
    torch.testing.assert_close(ae.encode(x), 2 * z1)
    torch.testing.assert_close(ae.decode(ae.encode(x)), ae.net.decode(z1))  # decode undoes the scale


@pytest.mark.parametrize("kwargs, match", [
    (dict(channels=(4,)), "at least 2"),
    (dict(channels=(4, 6), norm_num_groups=4), "must divide"),
])
def test_autoencoder_rejects_bad_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CropAutoencoder(**kwargs)


def test_autoencoder_rejects_indivisible_input():
    with pytest.raises(ValueError, match="divisible by 4"):
        CropAutoencoder(channels=(4, 8, 8), norm_num_groups=4).encode(torch.zeros(1, 1, 18, 16, 16))


def test_dynamics_output_depends_on_the_plan_and_not_on_noise():
    torch.manual_seed(0)
    dm = _perturbed(TumourDynamicsModel(**TINY_DYN))
    x = torch.randn(2, 4, 4, 4, 4)
    masks = torch.zeros(2, 2, 4, 4, 4)
    t = torch.tensor([10, 500])
    a = dm(x, t, x, masks, dm.encode_plans([Plan.parse("Lobaplatin 50 mg; Epirubicin; Lipiodol"), None]))
    b = dm(x, t, x, masks, dm.encode_plans([Plan.parse("Gelatin Sponge"), None]))
    again = dm(x, t, x, masks, dm.encode_plans([Plan.parse("Lobaplatin 50 mg; Epirubicin; Lipiodol"), None]))
    assert a.shape == x.shape
    assert (a[0] - b[0]).abs().max() > 1e-3  # the plan reaches the output
    torch.testing.assert_close(a[1], b[1])  # the null plan is one fixed token, not noise
    torch.testing.assert_close(a, again)  # deterministic


def test_dose_is_part_of_the_plan_tokens():
    dm = TumourDynamicsModel(**TINY_DYN)
    low, high = (dm.plan_encoder.tokenize([Plan.parse(f"Epirubicin {d} mg; Lipiodol")]) for d in (10, 50))
    assert torch.equal(low.agents, high.agents)
    assert not torch.equal(low.dose, high.dose)


def test_dynamics_refuses_missing_or_misshapen_conditions():
    dm = TumourDynamicsModel(**TINY_DYN)
    x = torch.zeros(1, 4, 4, 4, 4)
    ctx = dm.encode_plans([None])
    with pytest.raises(ValueError, match="needs a plan context"):
        dm(x, torch.tensor([1]), x, torch.zeros(1, 2, 4, 4, 4), None)
    with pytest.raises(ValueError, match="masks must be"):
        dm(x, torch.tensor([1]), x, torch.zeros(1, 1, 4, 4, 4), ctx)
    with pytest.raises(ValueError, match="attention at one level"):
        TumourDynamicsModel(channels=(8, 16), attention_levels=(False, False), norm_num_groups=4)


def test_plan_with_an_agent_outside_the_model_vocabulary_is_refused():
    dm = TumourDynamicsModel(**TINY_DYN, agents=["Epirubicin", "Lipiodol"])
    with pytest.raises(PlanValidationError, match="trained without the agent 'Gelatin Sponge'"):
        dm.encode_plans([Plan.parse("Epirubicin; Lipiodol; Gelatin Sponge")])


def test_segmenter_shapes_and_levels():
    seg = CropSegmenter(filters=(4, 8, 8), num_classes=5)
    x = torch.zeros(2, 1, 16, 16, 16)
    assert seg(x).shape == (2, 5, 16, 16, 16)
    assert seg.predict(x).shape == (2, 16, 16, 16)
    with pytest.raises(ValueError, match="at least 3"):
        CropSegmenter(filters=(4, 8))
    with pytest.raises(ValueError, match="divisible by 4"):
        seg(torch.zeros(1, 1, 18, 16, 16))


def test_segmenter_norm_option_builds_that_normalisation():
    """Instance norm (the default, as older checkpoints were built) or batch norm (running statistics at inference,
    so the crop's absolute attenuation is not normalised away); anything else is refused."""
    kinds = {norm: {type(m) for m in CropSegmenter(filters=(4, 8, 8), norm=norm).modules()
                    if isinstance(m, (torch.nn.InstanceNorm3d, torch.nn.BatchNorm3d))}
             for norm in ("instance", "batch")}
    assert kinds == {"instance": {torch.nn.InstanceNorm3d}, "batch": {torch.nn.BatchNorm3d}}
    assert CropSegmenter(filters=(4, 8, 8)).config["norm"] == "instance"
    with pytest.raises(ValueError, match="norm must be one of instance, batch"):
        CropSegmenter(filters=(4, 8, 8), norm="group")


def _build_dyn(cfg):
    return TumourDynamicsModel(**cfg)


def test_checkpoint_round_trip_and_errors(tmp_path):
    dm = _perturbed(TumourDynamicsModel(**TINY_DYN))
    save_checkpoint(tmp_path / "dyn", dm, kind="dynamics", config=dm.config, extra={"scheduler": {"steps": 1000}})
    loaded, meta = load_checkpoint(tmp_path / "dyn", kind="dynamics", build=_build_dyn, command="mewm train dynamics")
    assert meta.extra == {"scheduler": {"steps": 1000}}
    assert not loaded.training
    for (k, v), (k2, v2) in zip(dm.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    cmd = "mewm train dynamics --manifest M --out DIR"
    with pytest.raises(CheckpointNotFoundError, match="Make one with `mewm train dynamics"):
        load_checkpoint(tmp_path / "absent", kind="dynamics", build=_build_dyn, command=cmd)
    with pytest.raises(CheckpointNotFoundError, match="not 'autoencoder'"):
        load_checkpoint(tmp_path / "dyn", kind="autoencoder", build=_build_dyn, command=cmd)
    # a checkpoint from another configuration: same kind, weights that do not fit
    other = TumourDynamicsModel(**{**TINY_DYN, "channels": (8, 16, 32)})
    save_checkpoint(tmp_path / "other", other, kind="dynamics", config=dm.config)
    with pytest.raises(CheckpointNotFoundError, match="do not fit its config"):
        load_checkpoint(tmp_path / "other", kind="dynamics", build=_build_dyn, command=cmd)


# ------------------------------------------------------------------------------------------- clinical token
def test_clinical_values_flag_what_is_missing():
    from models.clinical_encoder import clinical_values

    values, present = clinical_values({"afp": 100.0, "n_lesions": None, "max_diameter_mm": float("nan")},
                                      ["afp", "n_lesions", "max_diameter_mm", "vascular_invasion"])
    assert values[0] == pytest.approx(0.0) and present == [1.0, 0.0, 0.0, 0.0]  # log10(100) = 2 is the centre
    assert values[1:] == [0.0, 0.0, 0.0]  # unknown is (0, flag 0), never a made-up value
    assert clinical_values(None, ["afp"]) == ([0.0], [0.0])
    with pytest.raises(ValueError, match="subset"):
        TumourDynamicsModel(**TINY_DYN, clinical_fields=["ldh"])


def test_dynamics_with_clinical_fields_reads_the_labs_in_both_branches():
    fields = ["afp", "n_lesions", "max_diameter_mm", "vascular_invasion"]
    torch.manual_seed(0)
    dm = _perturbed(TumourDynamicsModel(**TINY_DYN, clinical_fields=fields))
    assert dm.config["clinical_fields"] == fields
    assert "clinical_fields" not in TumourDynamicsModel(**TINY_DYN).config  # older checkpoints' configs unchanged
    plan = Plan.parse("Epirubicin; Lipiodol")
    low, high = {"afp": 5.0, "n_lesions": 1}, {"afp": 20000.0, "n_lesions": 1}
    ctx = dm.encode_plans([plan, plan, None, None], [low, high, low, None])
    assert ctx.shape[1] == dm.config["max_agents"] + 2  # plan tokens + one clinical token
    x = torch.randn(4, 4, 4, 4, 4)
    out = dm(x[:1].expand(4, -1, -1, -1, -1), torch.tensor([100] * 4), x[:1].expand(4, -1, -1, -1, -1),
             torch.zeros(4, 2, 4, 4, 4), ctx)
    assert (out[0] - out[1]).abs().max() > 1e-4  # the AFP reaches the output under the same plan
    assert (out[2] - out[3]).abs().max() > 1e-4  # ... and in the null-plan branch (it is patient, not plan)
    torch.testing.assert_close(dm.encode_plans([plan]), dm.encode_plans([plan], [None]))  # None = unknown
    with pytest.raises(ValueError, match="covariate rows"):
        dm.encode_plans([plan, plan], [low])
