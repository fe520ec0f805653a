"""Cox partial likelihood (hand-computed values with ties, lifelines as the reference answer), per-patient risk sets,
and the survival CNN's shapes and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.survival import SurvivalCNN, cox_loss, cox_partial_log_likelihood, patient_mean_log_risk

# Four patients: times 1, 2, 2, 3; deaths at 1 and at 2 (both), the last censored; two tied deaths at t = 2.
ETA = torch.tensor([0.5, -0.2, 0.3, 0.1], dtype=torch.float64)
TIME = torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=torch.float64)
EVENT = torch.tensor([1, 1, 1, 0])


def _hand(ties: str) -> float:
    """The partial log-likelihood written out term by term."""
    w = [math.exp(v) for v in ETA.tolist()]
    ll = ETA[0].item() - math.log(sum(w))                              # t = 1: everyone at risk
    dead, risk = w[1] + w[2], w[1] + w[2] + w[3]                       # t = 2: patients 1, 2 die; 1, 2, 3 at risk
    ll += ETA[1].item() + ETA[2].item()
    if ties == "efron":
        ll -= math.log(risk) + math.log(risk - 0.5 * dead)
    else:
        ll -= 2 * math.log(risk)
    return ll


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_partial_likelihood_matches_hand_computed_value_with_ties(ties):
    got = cox_partial_log_likelihood(ETA, TIME, EVENT, ties=ties).item()
    assert got == pytest.approx(_hand(ties), abs=1e-12)


def test_efron_and_breslow_differ_only_with_ties():
    assert cox_partial_log_likelihood(ETA, TIME, EVENT, "efron").item() != pytest.approx(
        cox_partial_log_likelihood(ETA, TIME, EVENT, "breslow").item())
    distinct = torch.tensor([1.0, 2.0, 2.5, 3.0], dtype=torch.float64)
    assert cox_partial_log_likelihood(ETA, distinct, EVENT, "efron").item() == pytest.approx(
        cox_partial_log_likelihood(ETA, distinct, EVENT, "breslow").item(), abs=1e-12)


def test_partial_likelihood_equals_lifelines_at_its_fit():
    """lifelines' CoxPHFitter (Efron ties) maximises the same function: its log_likelihood_ at its coefficients."""
    import pandas as pd
    from lifelines import CoxPHFitter

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    t = np.round(rng.exponential(8, size=40)) + 1  # many ties
    e = rng.random(40) < 0.7
    df = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "T": t, "E": e.astype(int)})
    cph = CoxPHFitter().fit(df, "T", "E")
    eta = torch.tensor(x @ cph.params_.to_numpy())
    got = cox_partial_log_likelihood(eta, torch.tensor(t), torch.tensor(e)).item()
    assert got == pytest.approx(cph.log_likelihood_, abs=1e-8)


def test_likelihood_is_shift_invariant_stable_and_differentiable():
    big = ETA + 800.0  # exp overflows without the shift
    assert cox_partial_log_likelihood(big, TIME, EVENT).item() == pytest.approx(_hand("efron"), abs=1e-9)
    eta = ETA.clone().requires_grad_(True)
    cox_loss(eta, TIME, EVENT).backward()
    assert torch.isfinite(eta.grad).all() and eta.grad.abs().sum() > 0


def test_no_event_gives_zero_loss_with_gradient():
    eta = ETA.clone().requires_grad_(True)
    loss = cox_loss(eta, TIME, torch.zeros(4))
    loss.backward()
    assert loss.item() == 0.0 and eta.grad is not None


def test_risk_sets_are_per_patient_not_per_crop():
    """Three crops of patient 0 (averaged) are ONE risk-set entry: the same loss as that patient once."""
    crops = torch.tensor([0.4, 0.6, 0.5, -0.2, 0.3, 0.1], dtype=torch.float64)   # patient 0 has 3 crops, mean 0.5
    patient = torch.tensor([0, 0, 0, 1, 2, 3])
    time = TIME[patient]
    event = EVENT[patient]
    per_patient = cox_loss(crops, time, event, patient=patient)
    assert per_patient.item() == pytest.approx(cox_loss(ETA, TIME, EVENT).item(), abs=1e-12)
    as_separate = cox_loss(crops, time, event)  # treating crops as patients changes the answer
    assert as_separate.item() != pytest.approx(per_patient.item())
    means, inverse = patient_mean_log_risk(crops, patient)
    assert means.tolist() == pytest.approx(ETA.tolist()) and inverse.tolist() == [0, 0, 0, 1, 2, 3]


def test_crops_of_one_patient_must_share_the_outcome():
    with pytest.raises(ValueError, match="different times or events"):
        cox_loss(ETA, TIME, EVENT, patient=torch.tensor([0, 0, 1, 2]))


@pytest.mark.parametrize("bad", [dict(ties="exact"), dict(time=torch.ones(3))])
def test_likelihood_rejects_bad_arguments(bad):
    kwargs = dict(log_risk=ETA, time=TIME, event=EVENT, ties="efron") | bad
    with pytest.raises(ValueError):
        cox_partial_log_likelihood(**kwargs)


@pytest.mark.parametrize("channels, size", [((4, 8), 16), ((4, 4, 8, 8), 48)])
def test_cnn_gives_one_unbounded_log_risk_per_crop(channels, size):
    torch.manual_seed(0)
    net = SurvivalCNN(channels=channels, n_covariates=3, hidden=8)
    x = torch.randn(3, 4, size, size, size)
    out = net(x, torch.randn(3, 3))
    assert out.shape == (3,) and torch.isfinite(out).all()
    assert not torch.allclose(out, out[0].expand(3))  # differs between inputs
    with torch.no_grad():
        net.head[-1].bias.fill_(50.0)  # far beyond any sigmoid: the output is not squashed
    assert (net.eval()(x, torch.randn(3, 3)) > 40).all()


def test_cnn_without_covariates_and_its_validation():
    net = SurvivalCNN(channels=(4,), n_covariates=0, hidden=4)
    assert net(torch.zeros(2, 4, 8, 8, 8)).shape == (2,)
    with pytest.raises(ValueError, match=r"\(B, 4, X, Y, Z\)"):
        net(torch.zeros(2, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="covariates"):
        SurvivalCNN(channels=(4,), n_covariates=2)(torch.zeros(2, 4, 8, 8, 8))
    with pytest.raises(ValueError, match="dropout"):
        SurvivalCNN(dropout=1.0)
    with pytest.raises(ValueError, match="positive"):
        SurvivalCNN(channels=())


def test_covariate_skip_adds_a_linear_covariate_term():
    torch.manual_seed(0)
    net = SurvivalCNN(channels=(4,), n_covariates=2, hidden=4, covariate_skip=True).eval()
    with torch.no_grad():
        for p in net.head.parameters():
            p.zero_()
        net.skip.weight.copy_(torch.tensor([[0.5, -1.0]]))
    x = torch.randn(2, 4, 8, 8, 8)
    out = net(x, torch.tensor([[2.0, 1.0], [0.0, 3.0]]))
    assert out.tolist() == pytest.approx([0.0, -3.0])
    assert SurvivalCNN(channels=(4,), n_covariates=2).skip is None  # off by default
