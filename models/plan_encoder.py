"""`PlanEncoder`: a structured TACE plan → a short sequence of tokens the dynamics model cross-attends to.

Each agent of the plan becomes one token: ``agent embedding + class embedding + dose features`` (the log of the dose
relative to the Action Base's typical maximum, and whether a dose was given); one more token carries the protocol
(cTACE / DEB-TACE / bland). Tokens are padded to ``max_agents + 1`` with a learned padding token.

The **null plan** (``None``) is a learned token, not noise: classifier-free guidance contrasts a plan with it
(Ho & Salimans, "Classifier-Free Diffusion Guidance", https://arxiv.org/abs/2207.12598). The vocabulary (agent and
class names) is part of the config, so token ids stay stable when the Action Base table grows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.action_base import default_action_base
from models.errors import PlanValidationError
from models.plan import Plan, Protocol

__all__ = ["PlanTokens", "PlanEncoder"]

_PROTOCOLS = [p.value for p in Protocol]


@dataclass
class PlanTokens:
    """Integer/float description of a batch of plans (no gradients; build with `PlanEncoder.tokenize`).

    Shapes: ``agents``, ``classes``: ``(B, N)`` long (0 = padding); ``dose``: ``(B, N, 2)`` float; ``protocol``:
    ``(B,)`` long (0 = null plan).
    """

    agents: torch.Tensor
    classes: torch.Tensor
    dose: torch.Tensor
    protocol: torch.Tensor

    def to(self, device: torch.device | str) -> "PlanTokens":
        return PlanTokens(self.agents.to(device), self.classes.to(device), self.dose.to(device),
                          self.protocol.to(device))


class PlanEncoder(nn.Module):
    """Embed plans as ``(B, max_agents + 1, dim)`` token sequences.

    Args:
        dim: token width (the dynamics UNet's ``cross_attention_dim``).
        max_agents: most agents in one plan (longer plans raise `PlanValidationError`).
        agents, classes: vocabulary; default: the Action Base's agents and classes.
    """

    def __init__(self, dim: int = 64, max_agents: int = 6, agents: Sequence[str] | None = None,
                 classes: Sequence[str] | None = None) -> None:
        super().__init__()
        ab = default_action_base()
        agents = list(agents) if agents is not None else list(ab.names)
        classes = list(classes) if classes is not None else list(ab.classes)
        if dim < 1 or max_agents < 1:
            raise ValueError(f"PlanEncoder expects dim >= 1 and max_agents >= 1, got dim={dim}, "
                             f"max_agents={max_agents}.")
        self.config = {"dim": int(dim), "max_agents": int(max_agents), "agents": agents, "classes": classes}
        self._agent_ids = {a: i + 1 for i, a in enumerate(agents)}
        self._class_ids = {c: i + 1 for i, c in enumerate(classes)}
        self.agent_embedding = nn.Embedding(len(agents) + 1, dim, padding_idx=0)
        self.class_embedding = nn.Embedding(len(classes) + 1, dim, padding_idx=0)
        self.dose_projection = nn.Linear(2, dim)
        self.protocol_embedding = nn.Embedding(len(_PROTOCOLS) + 1, dim)  # 0 = the null plan
        self.pad_token = nn.Parameter(torch.zeros(dim))
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))

    @property
    def num_tokens(self) -> int:
        return self.config["max_agents"] + 1

    def tokenize(self, plans: Sequence[Plan | None]) -> PlanTokens:
        """Plans (``None`` = null plan) → `PlanTokens`. Agents unknown to this model raise `PlanValidationError`."""
        ab = default_action_base()
        n, m = len(plans), self.config["max_agents"]
        agents = torch.zeros(n, m, dtype=torch.long)
        classes = torch.zeros(n, m, dtype=torch.long)
        dose = torch.zeros(n, m, 2)
        protocol = torch.zeros(n, dtype=torch.long)
        for b, plan in enumerate(plans):
            if plan is None:
                continue
            if len(plan.agents) > m:
                raise PlanValidationError(f"The plan {plan} has {len(plan.agents)} agents; this dynamics model "
                                          f"encodes at most {m}.", rule="model vocabulary")
            protocol[b] = _PROTOCOLS.index(plan.protocol.value) + 1
            for j, name in enumerate(plan.agents):
                if name not in self._agent_ids:
                    raise PlanValidationError(f"The dynamics model was trained without the agent {name!r}; it knows "
                                              f"{', '.join(self._agent_ids)}.", rule="model vocabulary")
                agent = ab.agent(name)
                agents[b, j] = self._agent_ids[name]
                classes[b, j] = self._class_ids.get(agent.cls, 0)
                given = plan.doses.get(name)
                if given is not None:
                    dose[b, j, 0] = math.log(max(given.value, 1e-3) / agent.dose_max)
                    dose[b, j, 1] = 1.0
        return PlanTokens(agents, classes, dose, protocol)

    def forward(self, tokens: PlanTokens) -> torch.Tensor:
        """`PlanTokens` → context ``(B, max_agents + 1, dim)``: the protocol/null token first, then the agents."""
        present = (tokens.agents > 0).unsqueeze(-1)
        agent_tok = (self.agent_embedding(tokens.agents) + self.class_embedding(tokens.classes)
                     + self.dose_projection(tokens.dose))
        agent_tok = torch.where(present, agent_tok, self.pad_token.expand_as(agent_tok))
        head = self.protocol_embedding(tokens.protocol).unsqueeze(1)
        return self.out(torch.cat([head, agent_tok], dim=1))
