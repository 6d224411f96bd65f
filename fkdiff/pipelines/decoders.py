"""Cheap decoders of x̂₀ latents for the intermediate (weight-update) steps.

The final images always come from the pipeline's own VAE; at update steps a reward only needs a
good-enough picture of x̂₀. Two options: a tiny autoencoder (TAESD, ``diffusers.AutoencoderTiny``,
loaded like any weights and passed as ``intermediate_decoder``), or :class:`LatentRGBDecoder`, a
per-pixel linear map latent → RGB fitted to the pipeline's own VAE (almost free).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .families import vae_decode

__all__ = ["LatentRGBDecoder"]


class LatentRGBDecoder(torch.nn.Module):
    """images = clamp(upsample(W·z + b), 0, 1): a 1×1 linear map from latent channels to RGB."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, scale_factor: int):
        super().__init__()
        self.register_buffer("weight", weight.float())  # [3, C]
        self.register_buffer("bias", bias.float())  # [3]
        self.scale_factor = int(scale_factor)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        w, b = self.weight.to(latents.device), self.bias.to(latents.device)
        rgb = torch.einsum("oc,nchw->nohw", w, latents.float()) + b[None, :, None, None]
        if self.scale_factor > 1:
            rgb = F.interpolate(rgb, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return rgb.clamp(0, 1)

    @classmethod
    @torch.no_grad()
    def fit(
        cls,
        vae,
        latents: torch.Tensor | None = None,
        *,
        num_samples: int = 16,
        latent_size: int = 16,
        generator: torch.Generator | None = None,
    ) -> LatentRGBDecoder:
        """Least-squares fit of RGB (the VAE's decode, average-pooled to latent resolution) on ``[z, 1]``.

        ``latents`` are scaled latents as the denoiser sees them (e.g. x̂₀ of a few runs); by default
        ``num_samples`` standard-normal latents.
        """
        if latents is None:
            c = vae.config.latent_channels
            latents = torch.randn(num_samples, c, latent_size, latent_size, generator=generator)
        latents = latents.to(device=vae.device, dtype=torch.float32)
        images = vae_decode(vae, latents)
        factor = images.shape[-1] // latents.shape[-1]
        pooled = F.avg_pool2d(images, factor) if factor > 1 else images
        z = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        y = pooled.permute(0, 2, 3, 1).reshape(-1, 3)
        design = torch.cat([z, torch.ones(z.shape[0], 1, device=z.device)], 1)
        sol = torch.linalg.lstsq(design.cpu().double(), y.cpu().double()).solution  # [C + 1, 3]
        return cls(sol[:-1].T, sol[-1], factor)
