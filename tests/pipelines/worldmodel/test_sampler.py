"""The dynamics model's two samplers (`pipelines.worldmodel.simulate._scheduler`): MONAI's DDIM and diffusers'
DPM-Solver++ on the checkpoint's noise schedule, their configuration, and sampling with each on tiny weights."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from models.errors import ConfigError
from pipelines.config import DEFAULT_SAMPLER
from pipelines.worldmodel.simulate import _scheduler
from pipelines.worldmodel.weights import DDIM_KEYS, SAMPLERS, load_world_model
from simulate_helpers import SCHEDULER, make_case, write_tiny_weights

PLANS = ["Lobaplatin; Epirubicin; Lipiodol", "Gelatin Sponge"]


def _oracle_output(x0: torch.Tensor, x_t: torch.Tensor, t: int, alphas_cumprod: torch.Tensor,
                   prediction_type: str) -> torch.Tensor:
    """What a perfect denoiser of the one-point data distribution ``x0`` outputs at ``x_t`` and step ``t``."""
    a = alphas_cumprod[t].sqrt()
    s = (1 - alphas_cumprod[t]).sqrt()
    eps = (x_t - a * x0) / s
    return eps if prediction_type == "epsilon" else a * eps - s * x0


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_both_samplers_land_on_the_data_under_the_checkpoints_noise_schedule(sampler, prediction_type):
    """A denoiser that knows the answer, computed with the training scheduler's (MONAI's) noise levels, leads each
    sampler to it: the DPM-Solver reads the same schedule and parameterisation as the trainer (a wrong beta schedule
    or prediction type would land elsewhere)."""
    schedule = {**{k: SCHEDULER[k] for k in DDIM_KEYS}, "prediction_type": prediction_type}  # as the loader keeps
    alphas_cumprod = DDPMScheduler(num_train_timesteps=1000, schedule=schedule["schedule"],
                                   beta_start=schedule["beta_start"], beta_end=schedule["beta_end"]).alphas_cumprod
    x0 = torch.randn(2, 3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    scheduler = _scheduler(SimpleNamespace(scheduler=schedule, sampler=sampler), 12)
    assert len(scheduler.timesteps) == 12
    for t in scheduler.timesteps:
        x, _ = scheduler.step(_oracle_output(x0, x, int(t), alphas_cumprod, prediction_type), int(t), x)
    torch.testing.assert_close(x, x0, atol=2e-3, rtol=0)


def test_the_dpm_solver_refuses_a_schedule_it_cannot_match():
    with pytest.raises(ValueError, match="no equivalent of the 'sigmoid_beta' noise schedule"):
        _scheduler(SimpleNamespace(scheduler={**SCHEDULER, "schedule": "sigmoid_beta"}, sampler="dpm_solver"), 10)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp("weights"))


def test_dpm_solver_samples_deterministically_and_says_so(weights_dir):
    world = load_world_model(weights_dir, sampler="dpm_solver")
    assert world.sampler == "dpm_solver"
    case = make_case()
    a = world.simulate(case, PLANS, samples=2, seed=0, steps=3)
    b = world.simulate(case, PLANS, samples=2, seed=0, steps=3)
    ddim = replace(world, sampler="ddim").simulate(case, PLANS, samples=2, seed=0, steps=3)
    assert a.sampler == "dpm_solver" and a.to_dict()["sampler"] == "dpm_solver" and ddim.sampler == "ddim"
    assert a.denoiser_passes == ddim.denoiser_passes == 3
    for p, q, d in zip(a.plans, b.plans, ddim.plans):
        np.testing.assert_array_equal(p.crops_hu, q.crops_hu)
        assert np.isfinite(p.crops_hu).all()
        np.testing.assert_array_equal(p.crops_hu[:, ~a.region], d.crops_hu[:, ~a.region])  # pre crop outside
        assert not np.array_equal(p.crops_hu, d.crops_hu)  # another solver of the same model


def test_unknown_sampler_is_a_config_error(weights_dir):
    with pytest.raises(ConfigError, match="sampler must be one of ddim, dpm_solver"):
        load_world_model(weights_dir, sampler="euler")


def test_sampler_from_the_config_environment(weights_dir, monkeypatch):
    assert load_world_model(weights_dir).sampler == DEFAULT_SAMPLER == "dpm_solver"
    monkeypatch.setenv("MEWM_WORLDMODEL__SAMPLER", "ddim")
    assert load_world_model(weights_dir).sampler == "ddim"
    assert load_world_model(weights_dir, sampler="dpm_solver").sampler == "dpm_solver"


def test_cli_sampler_choices_are_the_world_models():
    from pipelines import cli

    assert cli.SAMPLERS == SAMPLERS
    args = cli.build_parser().parse_args(["simulate", "--case", "x", "--plan", "Lipiodol", "--sampler",
                                          "dpm_solver", "--out", "o"])
    assert args.sampler == "dpm_solver"
