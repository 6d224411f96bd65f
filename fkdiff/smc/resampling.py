"""Resampling schemes: ancestor indices within each group of particles.

Every scheme is unbiased: the expected number of offspring of particle k is K·W_k. All random draws
go through the given ``torch.Generator`` (on the weights' device), so the same seed gives the same
ancestors. Indices are *within* a group (values in ``[0, K)``); :func:`flat_indices` turns them
into indices of a flat ``[G·K]`` batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .weights import normalized_weights

__all__ = ["RESAMPLING_SCHEMES", "resample", "flat_indices", "offspring_counts"]


def _uniform(shape, generator, device, dtype) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Ancestor a_i = min{k : Σ_{j≤k} W_j > u_i} for sorted or unsorted u in [0, 1)."""
    cdf = torch.cumsum(weights, dim=-1)
    cdf = cdf / cdf[..., -1:]  # guard against rounding: the last entry is exactly 1
    idx = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True)
    return idx.clamp_(max=weights.shape[-1] - 1)


def _multinomial(weights: torch.Tensor, generator) -> torch.Tensor:
    """K i.i.d. draws from Categorical(W) per group."""
    g, k = weights.shape
    return torch.multinomial(weights, k, replacement=True, generator=generator).reshape(g, k)


def _stratified(weights: torch.Tensor, generator) -> torch.Tensor:
    """u_i = (i + U_i)/K, U_i ~ U[0, 1) independently, then inverse CDF."""
    g, k = weights.shape
    u = _uniform((g, k), generator, weights.device, weights.dtype)
    u = (torch.arange(k, device=weights.device, dtype=weights.dtype) + u) / k
    return _inverse_cdf(weights, u)


def _systematic(weights: torch.Tensor, generator) -> torch.Tensor:
    """u_i = (i + U)/K with one U ~ U[0, 1) per group, then inverse CDF."""
    g, k = weights.shape
    u = _uniform((g, 1), generator, weights.device, weights.dtype)
    u = (torch.arange(k, device=weights.device, dtype=weights.dtype) + u) / k
    return _inverse_cdf(weights, u)


def _residual(weights: torch.Tensor, generator) -> torch.Tensor:
    """⌊K·W_k⌋ deterministic copies of k, the remaining R slots multinomial on K·W_k − ⌊K·W_k⌋."""
    g, k = weights.shape
    kw = k * weights
    counts = torch.floor(kw).long()
    rest = (kw - counts).clamp_(min=0)
    n_det = counts.sum(-1, keepdim=True)
    # residual draws for every group (a group whose counts already fill K ignores them)
    safe = torch.where(rest.sum(-1, keepdim=True) > 0, rest, torch.ones_like(rest))
    extra = torch.multinomial(safe, k, replacement=True, generator=generator)
    slot = torch.arange(k, device=weights.device).expand(g, k)
    det = torch.searchsorted(torch.cumsum(counts, -1), slot.contiguous(), right=True).clamp_(max=k - 1)
    rnd = torch.gather(extra, 1, (slot - n_det).clamp(min=0))
    return torch.where(slot < n_det, det, rnd)


RESAMPLING_SCHEMES: dict[str, Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]] = {
    "multinomial": _multinomial,
    "stratified": _stratified,
    "systematic": _systematic,
    "residual": _residual,
}


def resample(
    log_weights: torch.Tensor,
    scheme: str = "systematic",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Ancestor indices ``LongTensor[G, K]`` drawn so that E[#offspring of k] = K·W_k within each group.

    ``log_weights`` is ``[G, K]`` (or ``[K]``, treated as one group). A degenerate group (all
    ``-inf``) is resampled uniformly.
    """
    if scheme not in RESAMPLING_SCHEMES:
        raise ValueError(f"Unknown resampling scheme {scheme!r}; `scheme` must be one of {sorted(RESAMPLING_SCHEMES)}")
    squeeze = log_weights.dim() == 1
    lw = log_weights.unsqueeze(0) if squeeze else log_weights
    if lw.dim() != 2:
        raise ValueError(f"`log_weights` must have shape [G, K] or [K], got {tuple(log_weights.shape)}")
    weights = normalized_weights(lw.double() if lw.dtype != torch.float64 else lw)
    idx = RESAMPLING_SCHEMES[scheme](weights, generator)
    return idx[0] if squeeze else idx


def flat_indices(ancestors: torch.Tensor) -> torch.Tensor:
    """Map within-group ancestors ``[G, K]`` to indices into a flat, group-major ``[G·K]`` batch."""
    g, k = ancestors.shape
    offset = torch.arange(g, device=ancestors.device).unsqueeze(-1) * k
    return (ancestors + offset).reshape(-1)


def offspring_counts(ancestors: torch.Tensor, num_particles: int | None = None) -> torch.Tensor:
    """Number of offspring of each particle, ``[G, K]``, from ancestor indices ``[G, K]``."""
    k = num_particles or ancestors.shape[-1]
    out = torch.zeros(ancestors.shape[:-1] + (k,), dtype=torch.long, device=ancestors.device)
    return out.scatter_add_(-1, ancestors, torch.ones_like(ancestors))
