"""Log-weight tools over particle groups shaped ``[G, K]`` (G groups, K particles each).

Every function works on the last dimension; leading dimensions are groups. Weights are always in
log space. A group whose log-weights are all ``-inf`` (every particle has zero weight) is
*degenerate*: it normalises to the uniform distribution, its ESS is 0 and its log-mean is ``-inf``.
NaN or ``+inf`` log-weights are errors.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "check_log_weights",
    "log_normalize",
    "normalized_weights",
    "ess",
    "log_mean_exp",
    "degenerate_groups",
]


def check_log_weights(log_weights: torch.Tensor, name: str = "log_weights") -> torch.Tensor:
    """Validate a ``[..., K]`` floating tensor of log-weights: no NaN, no ``+inf``."""
    if not isinstance(log_weights, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(log_weights).__name__}")
    if not log_weights.is_floating_point():
        raise TypeError(f"`{name}` must be a floating tensor, got dtype {log_weights.dtype}")
    if log_weights.dim() < 1 or log_weights.shape[-1] < 1:
        raise ValueError(f"`{name}` must have shape [..., K] with K >= 1, got {tuple(log_weights.shape)}")
    if torch.isnan(log_weights).any():
        raise ValueError(f"`{name}` contains NaN")
    if (log_weights == math.inf).any():
        raise ValueError(f"`{name}` contains +inf")
    return log_weights


def degenerate_groups(log_weights: torch.Tensor) -> torch.Tensor:
    """Boolean ``[...]``: True where every log-weight of the group is ``-inf``."""
    return torch.isneginf(log_weights).all(dim=-1)


def log_normalize(log_weights: torch.Tensor) -> torch.Tensor:
    """log W_k = log w_k − logsumexp_j log w_j per group; degenerate groups become uniform (−log K)."""
    check_log_weights(log_weights)
    lse = torch.logsumexp(log_weights, dim=-1, keepdim=True)
    out = log_weights - lse
    dead = degenerate_groups(log_weights)
    if dead.any():
        k = log_weights.shape[-1]
        out = torch.where(dead.unsqueeze(-1), torch.full_like(out, -math.log(k)), out)
    return out


def normalized_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """W_k = exp(log W_k), summing to 1 per group."""
    return log_normalize(log_weights).exp()


def ess(log_weights: torch.Tensor) -> torch.Tensor:
    """Effective sample size per group, ESS = 1 / Σ_k W_k² = exp(2·lse(log w) − lse(2·log w)); 0 if degenerate."""
    check_log_weights(log_weights)
    out = torch.exp(2 * torch.logsumexp(log_weights, dim=-1) - torch.logsumexp(2 * log_weights, dim=-1))
    return torch.where(degenerate_groups(log_weights), torch.zeros_like(out), out)


def log_mean_exp(log_weights: torch.Tensor) -> torch.Tensor:
    """log((1/K)·Σ_k w_k) per group: the log normaliser (log Z) increment; −inf if degenerate."""
    check_log_weights(log_weights)
    return torch.logsumexp(log_weights, dim=-1) - math.log(log_weights.shape[-1])
