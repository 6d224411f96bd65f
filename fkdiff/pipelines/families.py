"""Per-family knowledge: how a stock pipeline is called for G groups of K particles and how x̂₀ is decoded.

A family says (1) which pipelines it serves, (2) the keyword arguments that make the stock pipeline
produce G·K particles, group-major (prompt-major, K contiguous per prompt), as raw latents, and
(3) how latents (or x̂₀) become images in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Family", "FAMILIES", "detect_family", "vae_decode"]


def vae_decode(vae, latents: torch.Tensor, *, upcast: bool = False) -> torch.Tensor:
    """images = clamp(decode(latents / scaling + shift) / 2 + 0.5, 0, 1) for a diffusers autoencoder."""
    cfg = vae.config
    scale = getattr(cfg, "scaling_factor", None) or 1.0
    shift = getattr(cfg, "shift_factor", None) or 0.0
    dtype = torch.float32 if upcast else vae.dtype
    z = latents.to(dtype) / scale + shift
    if upcast and vae.dtype != torch.float32:
        vae = vae.to(torch.float32)  # SDXL's fp16 VAE overflows: diffusers upcasts it the same way
    out = vae.decode(z.to(device=vae.device, dtype=dtype), return_dict=False)[0]
    return (out.float() / 2 + 0.5).clamp(0, 1)


@dataclass(frozen=True)
class Family:
    name: str
    matches: Callable[[Any], bool]
    conditional: bool
    # the stock pipeline's output type that yields latents for G·K particles
    raw_output_type: str
    decode: Callable[..., torch.Tensor]  # (pipe, latents, ctx) -> images in [0, 1]
    # (pipe, latents, ctx) -> latents as [N, C, h, w] for any image decoder (FLUX unpacks its patches)
    to_spatial: Callable[..., torch.Tensor] = lambda pipe, latents, ctx: latents


def _has(pipe, *names) -> bool:
    return all(getattr(pipe, n, None) is not None for n in names)


def _cls(pipe) -> str:
    return type(pipe).__name__


def _decode_pixels(pipe, latents, ctx):
    return (latents.float() / 2 + 0.5).clamp(0, 1)


def _decode_sd(pipe, latents, ctx):
    return vae_decode(pipe.vae, latents)


def _decode_sdxl(pipe, latents, ctx):
    upcast = pipe.vae.dtype == torch.float16 and bool(getattr(pipe.vae.config, "force_upcast", False))
    return vae_decode(pipe.vae, latents, upcast=upcast)


def _decode_sd3(pipe, latents, ctx):
    return vae_decode(pipe.vae, latents)


def _flux_size(pipe, ctx) -> tuple[int, int]:
    default = pipe.default_sample_size * pipe.vae_scale_factor
    return int((ctx or {}).get("height") or default), int((ctx or {}).get("width") or default)


def _unpack_flux(pipe, latents, ctx):
    """FLUX latents are packed 2×2 patches ``[N, h·w/4, 4C]``: unpack to ``[N, C, h, w]``."""
    if latents.dim() == 3:
        h, w = _flux_size(pipe, ctx)
        latents = pipe._unpack_latents(latents, h, w, pipe.vae_scale_factor)
    return latents


def _decode_flux(pipe, latents, ctx):
    return vae_decode(pipe.vae, _unpack_flux(pipe, latents, ctx))


FAMILIES: list[Family] = [
    Family(
        "flux",
        lambda p: _cls(p).startswith("Flux") and _has(p, "transformer", "vae"),
        True,
        "latent",
        _decode_flux,
        _unpack_flux,
    ),
    Family(
        "sd3",
        lambda p: _cls(p).startswith("StableDiffusion3") and _has(p, "transformer", "vae"),
        True,
        "latent",
        _decode_sd3,
    ),
    Family(
        "sdxl",
        lambda p: _cls(p).startswith("StableDiffusionXL") and _has(p, "unet", "vae", "text_encoder_2"),
        True,
        "latent",
        _decode_sdxl,
    ),
    Family(
        "sd",
        lambda p: (
            _cls(p).startswith("StableDiffusion")
            and not _cls(p).startswith(("StableDiffusionXL", "StableDiffusion3"))
            and _has(p, "unet", "vae", "text_encoder")
        ),
        True,
        "latent",
        _decode_sd,
    ),
    Family(
        "unconditional",
        lambda p: (
            _has(p, "unet", "scheduler")
            and getattr(p, "vae", None) is None
            and getattr(p, "text_encoder", None) is None
        ),
        False,
        "pt",
        _decode_pixels,
    ),
]


def detect_family(pipe) -> Family:
    for fam in FAMILIES:
        if fam.matches(pipe):
            return fam
    raise ValueError(
        f"{_cls(pipe)} is not supported by FKSteeringPipeline; supported families: "
        f"{[f.name for f in FAMILIES]} (FLUX, SD3, SDXL, Stable Diffusion 1.x/2.x, and unconditional "
        "DDPM-style pipelines with a `unet` and a `scheduler`)"
    )
