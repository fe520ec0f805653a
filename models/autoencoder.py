"""`CropAutoencoder`: a 3D KL autoencoder for tumour-centred CT crops (latent-diffusion stage 1).

Wraps MONAI's `AutoencoderKL` (Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models",
https://arxiv.org/abs/2112.10752). With ``channels`` of length 3 it downsamples ×4: a ``(B, 1, 48, 48, 48)`` crop in
[-1, 1] (the HU window of `pipelines.preprocess`) becomes a ``(B, latent_channels, 12, 12, 12)`` latent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from monai.networks.nets import AutoencoderKL
from monai.networks.nets.autoencoderkl import Decoder
from torch import nn

__all__ = ["CropAutoencoder", "encoder_fingerprint"]

# state-dict prefixes of what `CropAutoencoder.encode` reads; the decoder's weights do not change the latents
ENCODER_STATE = ("net.encoder.", "net.quant_conv_mu.", "scale_factor")


def encoder_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 of the encoder weights and scale factor in a `CropAutoencoder` state dict (names, shapes, float32
    bytes): two autoencoders with the same fingerprint encode every crop to the same latent."""
    digest = hashlib.sha256()
    for name, value in state.items():
        if name.startswith(ENCODER_STATE):
            t = value.detach().to("cpu", torch.float32).contiguous()
            digest.update(f"{name}{tuple(t.shape)}".encode())
            digest.update(t.numpy().tobytes())
    return digest.hexdigest()


class CropAutoencoder(nn.Module):
    """A KL autoencoder whose latents are scaled to unit variance for the diffusion model.

    Args:
        channels: feature channels per level; ``len(channels) - 1`` stride-2 downsamplings.
        latent_channels: channels of the latent.
        num_res_blocks: residual blocks per level.
        norm_num_groups: group-norm groups (must divide every entry of ``channels``).
        spatial_dims: 3 for volumes (2 is accepted for tests and 2D use).
        decoder_channels, decoder_num_res_blocks: a decoder wider or deeper than the encoder (default: the
            encoder's); the same number of levels, so the same latent shape. Recorded in ``config`` only when they
            differ from the encoder's, so older configs stay as they were.
    """

    #: the config keys that decide the latents (`encode`); the decoder keys only change the reconstructions.
    ENCODER_KEYS = ("channels", "latent_channels", "num_res_blocks", "norm_num_groups", "spatial_dims")

    def __init__(self, channels: Sequence[int] = (16, 32, 32), latent_channels: int = 4, num_res_blocks: int = 1,
                 norm_num_groups: int = 8, spatial_dims: int = 3, decoder_channels: Sequence[int] | None = None,
                 decoder_num_res_blocks: int | None = None) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        dec_channels = channels if decoder_channels is None else tuple(int(c) for c in decoder_channels)
        dec_blocks = int(num_res_blocks if decoder_num_res_blocks is None else decoder_num_res_blocks)
        if len(channels) < 2:
            raise ValueError(f"CropAutoencoder expects at least 2 channel levels, got channels={channels}.")
        if len(dec_channels) != len(channels):
            raise ValueError(f"CropAutoencoder: decoder_channels={dec_channels} must have as many levels as "
                             f"channels={channels} (the same downsampling).")
        if any(c % norm_num_groups for c in channels + dec_channels):
            raise ValueError(f"CropAutoencoder: norm_num_groups={norm_num_groups} must divide every entry of "
                             f"channels={channels} and decoder_channels={dec_channels}.")
        if dec_blocks < 1:
            raise ValueError(f"CropAutoencoder: decoder_num_res_blocks must be >= 1, got {dec_blocks}.")
        self.config = {"channels": list(channels), "latent_channels": int(latent_channels),
                       "num_res_blocks": int(num_res_blocks), "norm_num_groups": int(norm_num_groups),
                       "spatial_dims": int(spatial_dims)}
        if dec_channels != channels:
            self.config["decoder_channels"] = list(dec_channels)
        if dec_blocks != num_res_blocks:
            self.config["decoder_num_res_blocks"] = dec_blocks
        self.net = AutoencoderKL(
            spatial_dims=spatial_dims, in_channels=1, out_channels=1, channels=channels,
            latent_channels=latent_channels, num_res_blocks=num_res_blocks,
            attention_levels=(False,) * len(channels), norm_num_groups=norm_num_groups,
            with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
        )
        if dec_channels != channels or dec_blocks != num_res_blocks:
            self.net.decoder = Decoder(
                spatial_dims=spatial_dims, channels=dec_channels, in_channels=latent_channels, out_channels=1,
                num_res_blocks=(dec_blocks,) * len(dec_channels), norm_num_groups=norm_num_groups, norm_eps=1e-6,
                attention_levels=(False,) * len(dec_channels), with_nonlocal_attn=False)
        self.register_buffer("scale_factor", torch.tensor(1.0))

    @property
    def downsampling(self) -> int:
        """Spatial reduction factor from image to latent."""
        return 2 ** (len(self.config["channels"]) - 1)

    def encoder_sha256(self) -> str:
        """A fingerprint of the latents (`encoder_fingerprint` of this model's weights)."""
        return encoder_fingerprint(self.state_dict())

    def forward(self, x: torch.Tensor, sample_posterior: bool = False) -> tuple[torch.Tensor, torch.Tensor,
                                                                                torch.Tensor]:
        """Training pass: ``x`` ``(B, 1, *S)`` → ``(reconstruction, mu, sigma)`` (unscaled latent statistics).

        The reconstruction decodes the posterior mean (what `encode` gives the diffusion model) unless
        ``sample_posterior``: on a CPU budget of about a thousand steps, decoding sampled latents collapsed to a
        blurred mean image (measured in this project; see the autoencoder's model card).
        """
        self._check_shape(x)
        mu, sigma = self.net.encode(x)
        z = self.net.sampling(mu, sigma) if sample_posterior else mu
        return self.net.decode(z), mu, sigma

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *S)`` in [-1, 1] → scaled latent ``(B, latent_channels, *S / downsampling)`` (posterior mean)."""
        self._check_shape(x)
        mu, _ = self.net.encode(x)
        return mu * self.scale_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent → image ``(B, 1, *S)`` (not clipped)."""
        return self.net.decode(z / self.scale_factor)

    def _check_shape(self, x: torch.Tensor) -> None:
        if x.ndim != 2 + self.config["spatial_dims"] or x.shape[1] != 1:
            raise ValueError(f"CropAutoencoder expects (B, 1, *spatial) input, got {tuple(x.shape)}.")
        bad = [s for s in x.shape[2:] if s % self.downsampling]
        if bad:
            raise ValueError(f"CropAutoencoder: spatial size {tuple(x.shape[2:])} must be divisible by "
                             f"{self.downsampling}.")
