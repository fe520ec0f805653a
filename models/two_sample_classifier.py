"""`TwoSampleClassifier`: a small 3D CNN that tells real crops from generated ones (classifier two-sample test).

The realism metric of ``mewm eval dynamics`` (Lopez-Paz & Oquab, "Revisiting Classifier Two-Sample Tests",
https://arxiv.org/abs/1610.06545): trained on half of the (real, generated) crops, its accuracy on the other half
is near 0.5 when the two are indistinguishable. Deliberately small, so that it is trained from scratch per evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["TwoSampleClassifier"]


class TwoSampleClassifier(nn.Module):
    """Stride-2 conv blocks (conv 3³, group norm, SiLU), global average pooling and a linear logit.

    Args:
        channels: feature channels per block (each block halves the spatial size).
        in_channels: image channels.
    """

    def __init__(self, channels: Sequence[int] = (8, 16, 32), in_channels: int = 1) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1 or in_channels < 1:
            raise ValueError(f"TwoSampleClassifier expects positive channels and in_channels, got channels={channels}, "
                             f"in_channels={in_channels}.")
        self.config = {"channels": list(channels), "in_channels": int(in_channels)}
        blocks: list[nn.Module] = []
        c_in = in_channels
        for c in channels:
            blocks += [nn.Conv3d(c_in, c, kernel_size=3, stride=2, padding=1), nn.GroupNorm(1, c), nn.SiLU()]
            c_in = c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, X, Y, Z)`` → logit of "real" ``(B,)``."""
        if x.ndim != 5 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"TwoSampleClassifier expects (B, {self.config['in_channels']}, X, Y, Z) input, got "
                             f"{tuple(x.shape)}.")
        return self.head(self.features(x).mean(dim=(2, 3, 4))).squeeze(1)
