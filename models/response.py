"""`ResponsePredictor` and `ResponseEncoder`: the world model's response, predicted and given to the dynamics model.

Why (docs/worldmodel_design.md "A response token"): trained on the diffusion loss alone, the dynamics model learns
the average effect of each agent but not which drug suits which tumour (the drug-by-tumour part is a small share of
the latent's error), although simple CT and lab features predict it (`scripts/drug_readout_probe.py`). So the
dynamics is factorised:

1. `ResponsePredictor`: pre-treatment features of the lesion (`pipelines.worldmodel.response.lesion_features`), the
   patient's covariates (`models.clinical_encoder`) and the plan → the expected **response** ``r = (viable, necrosis,
   lipiodol)``: the post-treatment volumes of viable tumour, necrosis and Lipiodol as fractions of the
   pre-treatment lesion volume (`RESPONSE_TARGETS`). A small regression network, trained on measured labels of
   pre/post pairs, so a real cohort trains it too.
2. `ResponseEncoder`: ``r`` → one context token of `models.dynamics.TumourDynamicsModel` (after the plan and labs
   tokens). The dynamics model is trained with the pair's measured ``r`` (teacher forcing) and samples with the
   predicted one; a row without a response (the null plan of classifier-free guidance, or a dropped token) has its
   "present" flag at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from models.clinical_encoder import ClinicalEncoder
from models.plan import Plan
from models.plan_encoder import PlanEncoder

__all__ = ["RESPONSE_TARGETS", "LESION_FEATURES", "ResponsePredictor", "ResponseEncoder"]

# What a response is: post-treatment volume of each structure / pre-treatment lesion volume (viable may exceed 1).
RESPONSE_TARGETS = ("viable", "necrosis", "lipiodol")
# The lesion features the predictor reads, in order (`pipelines.worldmodel.response.lesion_features` computes them).
LESION_FEATURES = ("log_volume_ml", "lesion_minus_liver_hu", "lesion_hu_sd", "necrosis_fraction",
                   "lipiodol_fraction", "liver_present")


class ResponsePredictor(nn.Module):
    """Lesion features + covariates + plan → predicted response ``(B, 3)`` (non-negative fractions).

    Args:
        agents, classes, max_agents: the plan vocabulary (`PlanEncoder`).
        plan_dim: width of the plan embedding (sum of the plan's tokens).
        hidden: width of the two hidden layers.
        clinical_fields: covariates read (`models.clinical_encoder.CLINICAL_FIELDS`); empty = none.
        dropout: dropout of the hidden layers (training only).
    """

    def __init__(self, agents: Sequence[str] | None = None, classes: Sequence[str] | None = None,
                 max_agents: int = 6, plan_dim: int = 32, hidden: int = 96,
                 clinical_fields: Sequence[str] = (), dropout: float = 0.1) -> None:
        super().__init__()
        self.plan_encoder = PlanEncoder(dim=plan_dim, max_agents=max_agents, agents=agents, classes=classes)
        self.clinical = ClinicalEncoder(clinical_fields, 8) if clinical_fields else None
        n_in = plan_dim + len(LESION_FEATURES) + (2 * len(self.clinical.fields) if self.clinical else 0)
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, len(RESPONSE_TARGETS)))
        self.config = {"agents": self.plan_encoder.config["agents"], "classes": self.plan_encoder.config["classes"],
                       "max_agents": int(max_agents), "plan_dim": int(plan_dim), "hidden": int(hidden),
                       "clinical_fields": list(self.clinical.fields) if self.clinical else [],
                       "dropout": float(dropout)}

    def inputs(self, lesion: Sequence[Sequence[float]], covariates: Sequence[Any] | None,
               plans: Sequence[Plan]) -> tuple[torch.Tensor, Any]:
        """``(features, plan tokens)`` of B rows: ``lesion`` holds `LESION_FEATURES` values per row; ``covariates``
        one mapping / `Covariates` / ``None`` per row (``None`` for all = unknown). Raises `PlanValidationError` for
        an agent outside the vocabulary."""
        feats = torch.as_tensor([list(map(float, row)) for row in lesion], dtype=torch.float32)
        if feats.shape != (len(plans), len(LESION_FEATURES)):
            raise ValueError(f"ResponsePredictor: lesion features must be ({len(plans)}, {len(LESION_FEATURES)}), "
                             f"got {tuple(feats.shape)}.")
        if self.clinical is not None:
            rows = [None] * len(plans) if covariates is None else list(covariates)
            feats = torch.cat([feats, self.clinical.features(rows)], dim=1)
        return feats, self.plan_encoder.tokenize(list(plans))

    def forward(self, features: torch.Tensor, tokens) -> torch.Tensor:
        device = features.device
        plan = self.plan_encoder(tokens.to(device)).sum(dim=1)
        return nn.functional.softplus(self.net(torch.cat([plan, features], dim=1)))

    def predict(self, lesion: Sequence[Sequence[float]], covariates: Sequence[Any] | None,
                plans: Sequence[Plan]) -> torch.Tensor:
        """Predicted responses ``(B, 3)`` (eval mode, no gradients; the model's mode is restored)."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                features, tokens = self.inputs(lesion, covariates, plans)
                return self(features.to(next(self.parameters()).device), tokens).float().cpu()
        finally:
            self.train(was)


class ResponseEncoder(nn.Module):
    """Responses ``(B, 3)`` and "present" flags ``(B,)`` → one context token ``(B, 1, dim)``.

    The last layer starts at zero, so a dynamics model fine-tuned with a new response token starts as it was
    (the token's values are zero; its attention weight is learnt)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(len(RESPONSE_TARGETS) + 1, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    @staticmethod
    def features(responses: torch.Tensor | None, present: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``(B, 4)``: the responses (0 where absent) and the present flag."""
        if responses is None:
            return torch.zeros(batch, len(RESPONSE_TARGETS) + 1)
        responses = torch.as_tensor(responses, dtype=torch.float32).reshape(batch, len(RESPONSE_TARGETS))
        flag = torch.ones(batch) if present is None else torch.as_tensor(present, dtype=torch.float32).reshape(batch)
        return torch.cat([responses * flag[:, None], flag[:, None]], dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)[:, None, :]
