"""`TumourDynamicsModel`: the action-conditioned latent denoiser of the world model (MeWM's "dynamics").

Given the noisy latent of the post-treatment crop ``x_t``, the pre-treatment latent, the tumour mask and the region
where change is allowed (both at latent resolution), and the **plan** as tokens, it predicts the noise ε
(DDPM, Ho et al., https://arxiv.org/abs/2006.11239; latent diffusion, https://arxiv.org/abs/2112.10752).

Conditioning, and how it differs from the reference code (reference-mewm.md §9):
- the plan enters through cross-attention of a MONAI `DiffusionModelUNet` to `PlanEncoder` tokens at every attention
  level, and the context is a required argument: the model refuses to run without one (the reference overwrote its
  action embedding with noise at inference, so its outputs did not depend on the plan);
- the pre-treatment latent and the masks are concatenated to ``x_t`` at the input, identically in training and
  sampling; the change region extends beyond the tumour, so tumours may grow as well as shrink.

Notation (code → paper): ``x_t`` → x_t, ``t`` → t, ``pre_latent`` + ``masks`` → the image condition c_img,
``context`` → the action condition c_a, output → ε_θ(x_t, t, c_img, c_a).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from models.clinical_encoder import ClinicalEncoder
from models.plan import Plan
from models.plan_encoder import PlanEncoder
from models.response import ResponseEncoder

__all__ = ["TumourDynamicsModel", "MASK_CHANNELS"]

MASK_CHANNELS = 2  # tumour mask, change region


class TumourDynamicsModel(nn.Module):
    """Latent ε-predictor conditioned on the pre-treatment latent, masks and plan tokens.

    Args:
        latent_channels: channels of the autoencoder latent.
        channels: UNet feature channels per level.
        attention_levels: which levels have (self + cross) attention; at least one must, for the plan to enter.
        num_res_blocks: residual blocks per level.
        num_head_channels: channels per attention head.
        norm_num_groups: group-norm groups (must divide ``channels``).
        plan_dim: width of the plan tokens (``cross_attention_dim``).
        max_agents, agents, classes: the plan vocabulary (`PlanEncoder`).
        spatial_dims: 3 for volumes.
        clinical_fields: covariates (`models.clinical_encoder.CLINICAL_FIELDS`) given to the model as one more
            context token after the plan tokens; empty (the default) = the CT and the plan only.
        response_token: also read a response token (`models.response.ResponseEncoder`: the expected post-treatment
            viable / necrosis / Lipiodol fractions) after the plan and labs tokens; sampling then needs the world
            model's `models.response.ResponsePredictor`.
    """

    def __init__(self, latent_channels: int = 4, channels: Sequence[int] = (32, 64, 64),
                 attention_levels: Sequence[bool] = (False, True, True), num_res_blocks: int = 1,
                 num_head_channels: int = 32, norm_num_groups: int = 8, plan_dim: int = 64, max_agents: int = 6,
                 agents: Sequence[str] | None = None, classes: Sequence[str] | None = None,
                 spatial_dims: int = 3, clinical_fields: Sequence[str] = (), response_token: bool = False) -> None:
        super().__init__()
        channels, attention_levels = tuple(int(c) for c in channels), tuple(bool(a) for a in attention_levels)
        if len(channels) != len(attention_levels):
            raise ValueError(f"TumourDynamicsModel expects one attention flag per level: channels={channels}, "
                             f"attention_levels={attention_levels}.")
        if not any(attention_levels):
            raise ValueError("TumourDynamicsModel needs attention at one level at least: the plan enters through "
                             "cross-attention.")
        self.plan_encoder = PlanEncoder(dim=plan_dim, max_agents=max_agents, agents=agents, classes=classes)
        self.config = {
            "latent_channels": int(latent_channels), "channels": list(channels),
            "attention_levels": list(attention_levels), "num_res_blocks": int(num_res_blocks),
            "num_head_channels": int(num_head_channels), "norm_num_groups": int(norm_num_groups),
            "plan_dim": int(plan_dim), "max_agents": int(max_agents), "agents": self.plan_encoder.config["agents"],
            "classes": self.plan_encoder.config["classes"], "spatial_dims": int(spatial_dims),
        }
        self.clinical_encoder = ClinicalEncoder(clinical_fields, plan_dim) if clinical_fields else None
        if self.clinical_encoder is not None:  # absent from the config of a CT-and-plan model (older checkpoints)
            self.config["clinical_fields"] = list(self.clinical_encoder.fields)
        self.response_encoder = ResponseEncoder(plan_dim) if response_token else None
        if response_token:  # absent from the config of a model without it (older checkpoints)
            self.config["response_token"] = True
        self.unet = DiffusionModelUNet(
            spatial_dims=spatial_dims, in_channels=2 * latent_channels + MASK_CHANNELS, out_channels=latent_channels,
            channels=channels, attention_levels=attention_levels, num_res_blocks=num_res_blocks,
            num_head_channels=num_head_channels, norm_num_groups=norm_num_groups, with_conditioning=True,
            cross_attention_dim=plan_dim, use_flash_attention=True,
        )

    def encode_plans(self, plans: Sequence[Plan | None], covariates: Sequence | None = None,
                     responses: torch.Tensor | None = None, present: torch.Tensor | None = None) -> torch.Tensor:
        """Plans (``None`` = the null plan) → context ``(B, max_agents + 1, plan_dim)`` on the model's device.

        With ``clinical_fields``, one more token per row encodes ``covariates`` (B mappings or `Covariates`, ``None``
        = nothing known; ``covariates=None`` = nothing known for any row): ``(B, max_agents + 2, plan_dim)``. A
        model without clinical fields ignores ``covariates``.

        With ``response_token``, one more token encodes ``responses`` ``(B, 3)`` (`models.response.RESPONSE_TARGETS`)
        where ``present`` ``(B,)`` is 1 (default: all present; ``responses=None``: none known). A model without it
        ignores them.
        """
        device = next(self.parameters()).device
        context = self.plan_encoder(self.plan_encoder.tokenize(plans).to(device))
        tokens = [context]
        if self.clinical_encoder is not None:
            covariates = [None] * len(plans) if covariates is None else list(covariates)
            if len(covariates) != len(plans):
                raise ValueError(f"encode_plans: {len(covariates)} covariate rows for {len(plans)} plans.")
            tokens.append(self.clinical_encoder(self.clinical_encoder.features(covariates).to(device)))
        if self.response_encoder is not None:
            features = ResponseEncoder.features(responses, present, len(plans))
            tokens.append(self.response_encoder(features.to(device)))
        return torch.cat([t.to(context.dtype) for t in tokens], dim=1) if len(tokens) > 1 else context

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, pre_latent: torch.Tensor, masks: torch.Tensor,
                context: torch.Tensor) -> torch.Tensor:
        """Predict ε.

        Args:
            x_t: ``(B, C, *L)`` noisy post-treatment latent.
            t: ``(B,)`` integer timesteps.
            pre_latent: ``(B, C, *L)`` pre-treatment latent.
            masks: ``(B, 2, *L)`` tumour mask and change region in {0, 1}.
            context: ``(B, N, plan_dim)`` plan tokens from `encode_plans` (the null plan for the unconditional
                branch of classifier-free guidance). Required.
        Returns:
            ``(B, C, *L)`` predicted noise.
        """
        # 1. check the call: every condition is required and shapes must agree
        if context is None:
            raise ValueError("TumourDynamicsModel needs a plan context; use encode_plans([None] * B) for the null plan.")
        b, c = x_t.shape[:2]
        if c != self.config["latent_channels"] or pre_latent.shape != x_t.shape:
            raise ValueError(f"TumourDynamicsModel: x_t {tuple(x_t.shape)} and pre_latent {tuple(pre_latent.shape)} "
                             f"must match, with {self.config['latent_channels']} channels.")
        if masks.shape != (b, MASK_CHANNELS, *x_t.shape[2:]):
            raise ValueError(f"TumourDynamicsModel: masks must be (B, {MASK_CHANNELS}, *latent) = "
                             f"{(b, MASK_CHANNELS, *x_t.shape[2:])}, got {tuple(masks.shape)}.")
        if context.ndim != 3 or context.shape[0] != b or context.shape[2] != self.config["plan_dim"]:
            raise ValueError(f"TumourDynamicsModel: context must be (B={b}, N, {self.config['plan_dim']}), got "
                             f"{tuple(context.shape)}.")
        # 2. image condition by concatenation, plan by cross-attention
        h = torch.cat([x_t, pre_latent, masks.to(x_t.dtype)], dim=1)
        return self.unet(h, t, context=context)
