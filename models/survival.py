"""The deep survival network and the Cox partial likelihood it is trained with.

- `cox_partial_log_likelihood(log_risk, time, event, ties="efron")`: Cox's partial log-likelihood of unbounded
  log-risks (higher = worse) with tied event times handled by Efron's (default) or Breslow's approximation
  (Efron, JASA 1977, https://doi.org/10.1080/01621459.1977.10480613). It is the same quantity lifelines'
  `CoxPHFitter` maximises (its ``log_likelihood_`` at the fitted coefficients), which the tests check.
- `cox_loss(...)`: the negative partial log-likelihood per event, after `patient_mean_log_risk` has averaged the
  crops of each patient into ONE risk-set entry: a patient with two crops is one patient, never two (the
  reference counted every crop as its own patient and squashed the risk through a sigmoid; both are fixed here).
- `SurvivalCNN`: a small 3D CNN (MONAI `ResidualUnit`s) on 4-channel crops ``[pre CT, pre tumour mask, post CT,
  post viable-tumour mask]`` plus a vector of standardised clinical covariates (through the head and a linear,
  Cox-like skip); one unbounded log-risk per crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import ResidualUnit
from torch import nn

__all__ = ["TIES", "cox_partial_log_likelihood", "cox_loss", "patient_mean_log_risk", "SurvivalCNN"]

TIES = ("efron", "breslow")


def _check_1d(log_risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> None:
    if log_risk.ndim != 1 or time.shape != log_risk.shape or event.shape != log_risk.shape:
        raise ValueError(f"Cox likelihood expects 1D log_risk, time and event of one length; got "
                         f"{tuple(log_risk.shape)}, {tuple(time.shape)}, {tuple(event.shape)}.")


def cox_partial_log_likelihood(log_risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor,
                               ties: str = "efron") -> torch.Tensor:
    """Cox partial log-likelihood (a scalar; differentiable in ``log_risk``).

    With distinct event times ``t_j``, deaths ``D_j`` (``d_j`` of them) and risk sets ``R_j = {k: time_k >= t_j}``:

    - Efron: ``Σ_j [Σ_{i∈D_j} η_i − Σ_{l=0}^{d_j−1} log(Σ_{k∈R_j} e^{η_k} − (l / d_j) Σ_{i∈D_j} e^{η_i})]``
    - Breslow: ``Σ_j [Σ_{i∈D_j} η_i − d_j log Σ_{k∈R_j} e^{η_k}]``

    Args:
        log_risk: ``(N,)`` η, one per patient (unbounded, higher = worse).
        time: ``(N,)`` follow-up times. event: ``(N,)`` 1 = death observed, 0 = censored.
        ties: ``"efron"`` or ``"breslow"``.

    Returns:
        the log-likelihood (0 when there is no event: nothing to compare).
    """
    if ties not in TIES:
        raise ValueError(f"cox_partial_log_likelihood: ties must be one of {TIES}, got {ties!r}.")
    _check_1d(log_risk, time, event)
    event = event.to(torch.bool)
    if not bool(event.any()):
        return log_risk.sum() * 0.0
    time = time.to(log_risk.dtype)
    shift = log_risk.detach().max()
    w = torch.exp(log_risk - shift)                                       # e^{η − shift}, numerically safe
    t_j = torch.unique(time[event])                                       # (J,) sorted distinct event times
    at_risk = (time[None, :] >= t_j[:, None]).to(w.dtype)                 # (J, N)
    dies = ((time[None, :] == t_j[:, None]) & event[None, :]).to(w.dtype)  # (J, N)
    d = dies.sum(1)                                                       # (J,)
    sum_risk = at_risk @ w                                                # (J,)
    sum_dead = dies @ w
    if ties == "efron":
        l = torch.arange(int(d.max().item()), dtype=w.dtype, device=w.device)  # (L,)
        valid = l[None, :] < d[:, None]                                    # (J, L)
        denom = sum_risk[:, None] - (l[None, :] / d[:, None]) * sum_dead[:, None]
        log_denom = torch.where(valid, torch.log(torch.where(valid, denom, torch.ones_like(denom))),
                                torch.zeros_like(denom)).sum(1)
    else:
        log_denom = d * torch.log(sum_risk)
    return (log_risk * event.to(log_risk.dtype)).sum() - (log_denom + d * shift).sum()


def patient_mean_log_risk(log_risk: torch.Tensor, patient: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the log-risks of each patient's crops: one risk-set entry per patient.

    Args:
        log_risk: ``(M,)`` one per crop. patient: ``(M,)`` integer patient index of each crop.

    Returns:
        (``(P,)`` mean log-risk per distinct patient, ``(M,)`` position of each crop's patient in that vector).
    """
    if log_risk.ndim != 1 or patient.shape != log_risk.shape:
        raise ValueError(f"patient_mean_log_risk expects (M,) log_risk and patient; got {tuple(log_risk.shape)} "
                         f"and {tuple(patient.shape)}.")
    ids, inverse = torch.unique(patient, return_inverse=True)
    sums = torch.zeros(len(ids), dtype=log_risk.dtype, device=log_risk.device).index_add(0, inverse, log_risk)
    counts = torch.bincount(inverse, minlength=len(ids)).to(log_risk.dtype)
    return sums / counts, inverse


def cox_loss(log_risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor, patient: torch.Tensor | None = None,
             ties: str = "efron") -> torch.Tensor:
    """Negative Cox partial log-likelihood per observed event, with one risk-set entry per patient.

    Args:
        log_risk, time, event: ``(M,)`` per crop (time and event are the patient's, repeated for each crop).
        patient: ``(M,)`` patient index per crop; ``None`` = every crop is a different patient.
    """
    _check_1d(log_risk, time, event)
    if patient is not None:
        log_risk, inverse = patient_mean_log_risk(log_risk, patient)
        crop_index = torch.arange(len(inverse), device=inverse.device)
        first = torch.full((len(log_risk),), len(inverse), dtype=torch.long, device=inverse.device).scatter_reduce(
            0, inverse, crop_index, reduce="amin")  # each patient's first crop
        if not (torch.equal(time[first][inverse], time) and torch.equal(event[first][inverse], event)):
            raise ValueError("cox_loss: the crops of one patient carry different times or events.")
        time, event = time[first], event[first]
    n_events = event.to(torch.bool).sum().clamp(min=1)
    return -cox_partial_log_likelihood(log_risk, time, event, ties=ties) / n_events


class SurvivalCNN(nn.Module):
    """A small 3D CNN giving an unbounded log relative hazard per (pre, post) crop pair.

    Image path: ``len(channels)`` MONAI residual units, each halving the size (48³ → 3³ with four), global average
    pooling. Covariate path: the standardised covariate vector joins the pooled image features in a two-layer head
    and, with ``covariate_skip``, also adds a linear term ``β·c`` (a Cox model of the covariates inside the network,
    which a few hundred patients can estimate; the CNN then only has to learn what the image adds). The output is
    linear (no sigmoid): hazard ratios are not bounded.

    Args:
        in_channels: crop channels (4: pre CT, pre tumour mask, post CT, post viable-tumour mask).
        channels: feature channels per stride-2 level.
        n_covariates: length of the covariate vector (0 = image only).
        hidden: width of the head. dropout: dropout before the last layer.
        covariate_skip: add the linear covariate term.
    """

    def __init__(self, in_channels: int = 4, channels: Sequence[int] = (8, 16, 32, 32), n_covariates: int = 9,
                 hidden: int = 32, dropout: float = 0.2, covariate_skip: bool = False) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1 or in_channels < 1 or n_covariates < 0 or hidden < 1:
            raise ValueError(f"SurvivalCNN expects positive in_channels, channels and hidden and n_covariates >= 0; "
                             f"got in_channels={in_channels}, channels={channels}, n_covariates={n_covariates}, "
                             f"hidden={hidden}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"SurvivalCNN expects dropout in [0, 1), got {dropout}.")
        self.config = {"in_channels": int(in_channels), "channels": list(channels), "n_covariates": int(n_covariates),
                       "hidden": int(hidden), "dropout": float(dropout), "covariate_skip": bool(covariate_skip)}
        layers, c_in = [], in_channels
        for c in channels:
            layers.append(ResidualUnit(3, c_in, c, strides=2, kernel_size=3, subunits=2, norm="INSTANCE",
                                       act="PRELU"))
            c_in = c
        self.encoder = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.head = nn.Sequential(nn.Linear(c_in + n_covariates, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, 1))
        self.skip = nn.Linear(n_covariates, 1, bias=False) if covariate_skip and n_covariates else None

    def forward(self, crops: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, in_channels, X, Y, Z)`` crops and ``(B, n_covariates)`` covariates → ``(B,)`` log-risk."""
        # 1. check the inputs
        if crops.ndim != 5 or crops.shape[1] != self.config["in_channels"]:
            raise ValueError(f"SurvivalCNN expects (B, {self.config['in_channels']}, X, Y, Z) crops, got "
                             f"{tuple(crops.shape)}.")
        n_cov = self.config["n_covariates"]
        if n_cov and (covariates is None or tuple(covariates.shape) != (crops.shape[0], n_cov)):
            raise ValueError(f"SurvivalCNN expects ({crops.shape[0]}, {n_cov}) covariates, got "
                             f"{None if covariates is None else tuple(covariates.shape)}.")
        # 2. image features
        h = self.pool(self.encoder(crops)).flatten(1)
        # 3. join the covariates, 4. linear log-risk (+ the linear covariate term)
        if n_cov:
            h = torch.cat([h, covariates.to(h.dtype)], dim=1)
        out = self.head(h)[:, 0]
        if self.skip is not None:
            out = out + self.skip(covariates.to(h.dtype))[:, 0]
        return out
