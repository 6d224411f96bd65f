"""Feynman–Kac potentials built from rewards at the weight-update steps, and their final correction.

Target: p₀(x)·exp(λ·r(x)). At the n-th update step a particle with rewards r_1..r_n along its path
gains log G_n (s runs over update steps so far, this one included):

- ``diff``: log G_n = λ·(r_n − r_{n−1}), r_0 = 0;
- ``max``:  log G_n = λ·max_{s≤n} r_s;
- ``sum``:  log G_n = λ·Σ_{s≤n} r_s;
- ``rt``:   log G_n = λ·r_n.

At the last step every potential instead adds the *final correction* λ·r(x₀) − Σ_{n} log G_n (the sum
along the particle's path), so the product of all increments along any path is exp(λ·r(x₀)) and the
target is the same whichever potential is used. The state is per particle and must be reordered with
the particles when they are resampled (:func:`reorder_potential_state`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "POTENTIALS",
    "PotentialState",
    "check_potential",
    "init_potential_state",
    "potential_increment",
    "final_correction",
    "reorder_potential_state",
]

POTENTIALS = ("diff", "max", "sum", "rt")


class PotentialState(NamedTuple):
    """Per-particle running statistics, each ``[G, K]`` (float64)."""

    last: torch.Tensor  # r at the previous update (0 before the first)
    running_max: torch.Tensor  # max_s r_s (−inf before the first update)
    running_sum: torch.Tensor  # Σ_s r_s
    path_log_potential: torch.Tensor  # Σ_n log G_n along the particle's path


def check_potential(name: str) -> str:
    if name not in POTENTIALS:
        raise ValueError(f"Unknown potential {name!r}; `potential` must be one of {list(POTENTIALS)}")
    return name


def init_potential_state(shape, device=None) -> PotentialState:
    z = torch.zeros(shape, dtype=torch.float64, device=device)
    return PotentialState(z, torch.full_like(z, -torch.inf), z.clone(), z.clone())


def _advance(state: PotentialState, rewards: torch.Tensor, log_g: torch.Tensor) -> PotentialState:
    return PotentialState(
        last=rewards,
        running_max=torch.maximum(state.running_max, rewards),
        running_sum=state.running_sum + rewards,
        path_log_potential=state.path_log_potential + log_g,
    )


def potential_increment(
    name: str, lmbda: float, rewards: torch.Tensor, state: PotentialState
) -> tuple[torch.Tensor, PotentialState]:
    """log G_n for an intermediate update step, and the advanced state."""
    check_potential(name)
    r = rewards.to(torch.float64)
    if name == "diff":
        log_g = lmbda * (r - state.last)
    elif name == "max":
        log_g = lmbda * torch.maximum(state.running_max, r)
    elif name == "sum":
        log_g = lmbda * (state.running_sum + r)
    else:  # rt
        log_g = lmbda * r
    return log_g, _advance(state, r, log_g)


def final_correction(lmbda: float, rewards: torch.Tensor, state: PotentialState) -> tuple[torch.Tensor, PotentialState]:
    """log G_final = λ·r(x₀) − Σ_n log G_n (path sum), so that Π_n G_n = exp(λ·r(x₀)) on every path."""
    r = rewards.to(torch.float64)
    log_g = lmbda * r - state.path_log_potential
    return log_g, _advance(state, r, log_g)


def reorder_potential_state(state: PotentialState, ancestors: torch.Tensor) -> PotentialState:
    """Gather every per-particle statistic by within-group ancestor indices ``[G, K]``."""
    return PotentialState(*(torch.gather(t, -1, ancestors) for t in state))
