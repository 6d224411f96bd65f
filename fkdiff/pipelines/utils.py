"""Small helpers shared by the diffusers-facing code."""

from __future__ import annotations

import torch

__all__ = ["alpha_bar", "predict_x0"]


def alpha_bar(scheduler, timestep, like: torch.Tensor) -> torch.Tensor:
    """ᾱ_t of a DDPM-family scheduler at ``timestep``, broadcastable to ``like``."""
    acp = scheduler.alphas_cumprod.to(like.device)
    t = torch.as_tensor(timestep, device=like.device).long().reshape(-1)
    a = acp[t].to(torch.float64 if like.dtype == torch.float64 else torch.float32)
    return a.reshape(-1, *([1] * (like.dim() - 1)))


def predict_x0(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> torch.Tensor:
    """x̂₀ for the scheduler's ``prediction_type``: ε: (x − √(1−ᾱ)·ε)/√ᾱ; v: √ᾱ·x − √(1−ᾱ)·v; sample: the output."""
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind == "sample":
        return model_output
    a = alpha_bar(scheduler, timestep, sample)
    x, out = sample.to(a.dtype), model_output.to(a.dtype)
    if kind == "epsilon":
        x0 = (x - (1 - a).sqrt() * out) / a.sqrt()
    elif kind == "v_prediction":
        x0 = a.sqrt() * x - (1 - a).sqrt() * out
    else:
        raise ValueError(f"Unsupported prediction_type {kind!r}; expected 'epsilon', 'v_prediction' or 'sample'")
    return x0.to(sample.dtype)
