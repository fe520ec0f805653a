"""`CropSegmenter`: liver, viable tumour, necrosis and Lipiodol on pre- and post-treatment CT crops.

Wraps MONAI's `DynUNet` (the nnU-Net-style network of the reference, Isensee et al., https://arxiv.org/abs/1809.10486)
with a configuration sized for 48³ crops on a CPU. Classes follow `pipelines.volume.LABELS`:
0 background, 1 liver, 2 viable tumour, 3 necrosis, 4 Lipiodol.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DynUNet
from torch import nn

__all__ = ["CropSegmenter"]


class CropSegmenter(nn.Module):
    """A residual DynUNet with ``len(filters) - 1`` stride-2 levels (at least 3 levels).

    Args:
        filters: feature channels per level.
        num_classes: output classes (5 for the MeWM label convention).
        spatial_dims: 3 for volumes.
        norm: ``"instance"`` (DynUNet's default: each crop's features normalised by their own mean and variance,
            which removes the crop's absolute intensity: the network then barely sees an HU shift of the whole
            crop) or ``"batch"`` (running statistics at inference: absolute HU, the CT's own scale, stays visible,
            so a lesion filling most of the field can be told from liver by its attenuation).
    """

    NORMS = {"instance": ("INSTANCE", {"affine": True}), "batch": ("BATCH", {})}

    def __init__(self, filters: Sequence[int] = (16, 32, 64, 128), num_classes: int = 5,
                 spatial_dims: int = 3, norm: str = "instance") -> None:
        super().__init__()
        filters = tuple(int(f) for f in filters)
        if len(filters) < 3:
            raise ValueError(f"CropSegmenter expects at least 3 filter levels (DynUNet), got filters={filters}.")
        if num_classes < 2:
            raise ValueError(f"CropSegmenter expects num_classes >= 2, got {num_classes}.")
        if norm not in self.NORMS:
            raise ValueError(f"CropSegmenter norm must be one of {', '.join(self.NORMS)}, got {norm!r}.")
        self.config = {"filters": list(filters), "num_classes": int(num_classes), "spatial_dims": int(spatial_dims),
                       "norm": norm}
        n = len(filters)
        self.net = DynUNet(spatial_dims, 1, num_classes, kernel_size=[3] * n, strides=[1] + [2] * (n - 1),
                           upsample_kernel_size=[2] * (n - 1), filters=list(filters), res_block=True,
                           norm_name=self.NORMS[norm])

    @property
    def divisor(self) -> int:
        """Spatial sizes must be divisible by this."""
        return 2 ** (len(self.config["filters"]) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *S)`` windowed CT in [-1, 1] → logits ``(B, num_classes, *S)``."""
        if x.ndim != 2 + self.config["spatial_dims"] or x.shape[1] != 1:
            raise ValueError(f"CropSegmenter expects (B, 1, *spatial) input, got {tuple(x.shape)}.")
        if any(s % self.divisor for s in x.shape[2:]):
            raise ValueError(f"CropSegmenter: spatial size {tuple(x.shape[2:])} must be divisible by {self.divisor}.")
        return self.net(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *S)`` → label map ``(B, *S)`` (int64, argmax of the logits)."""
        return self.forward(x).argmax(dim=1)
