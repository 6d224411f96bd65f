"""Feynman–Kac corrector weights (Skreta et al. 2025) for VP, ε-prediction samplers.

A sampler driven by a combination ε = Σ_i β_i·ε_i of experts' noise predictions (CFG: β = (w, 1−w) on
(ε_c, ε_u); annealing p^β: one expert with weight β; product p₁·p₂: β = (1, 1)) does not sample the
tilted target q_t ∝ Π_i p_{i,t}^{β_i}. Comparing the sampler's Fokker–Planck equation with ∂_t log q_t
gives, for a step t → t′ with Δ = log(ᾱ_{t′}/ᾱ_t) ≥ 0 and κ = Δ / (2·(1 − ᾱ_t)),

    Δlog w = κ · (‖Σ_i β_i ε_i‖² − Σ_i β_i ‖ε_i‖²)

(terms constant in x drop out under normalisation). Special cases: CFG κ·w(w−1)·‖ε_c − ε_u‖²;
annealing κ·β(β−1)·‖ε‖²; product of two experts 2κ·⟨ε₁, ε₂⟩. The initial noise must be the target's
at t = T: N(0, I/Σ_i β_i). Derivation: ``docs/fk-correctors.md``; checked on the exact-target bench.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["corrector_kappa", "product_increment", "cfg_increment", "anneal_increment", "initial_noise_std"]


def corrector_kappa(alpha_bar_t: float, alpha_bar_next: float) -> float:
    """κ = log(ᾱ_{t′}/ᾱ_t) / (2·(1 − ᾱ_t)) for a step t → t′ (ᾱ_{t′} ≥ ᾱ_t)."""
    a, b = float(alpha_bar_t), float(alpha_bar_next)
    if not (0 < a < 1 and a <= b <= 1):
        raise ValueError(f"need 0 < ᾱ_t < 1 and ᾱ_t <= ᾱ_t' <= 1, got ᾱ_t={a}, ᾱ_t'={b}")
    return math.log(b / a) / (2 * (1 - a))


def _sq(x: torch.Tensor) -> torch.Tensor:
    return x.double().flatten(1).pow(2).sum(1)


def product_increment(eps: Sequence[torch.Tensor], betas: Sequence[float], kappa: float) -> torch.Tensor:
    """Δlog w = κ·(‖Σ β_i ε_i‖² − Σ β_i ‖ε_i‖²) per sample (``[N]``, float64)."""
    if len(eps) != len(betas) or not eps:
        raise ValueError(f"need one β per expert, got {len(eps)} predictions and {len(betas)} weights")
    combined = sum(b * e.double() for b, e in zip(betas, eps))
    return kappa * (_sq(combined) - sum(b * _sq(e) for b, e in zip(betas, eps)))


def cfg_increment(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, w: float, kappa: float) -> torch.Tensor:
    """CFG target p(x|c)^w·p(x)^(1−w): Δlog w = κ·w(w−1)·‖ε_c − ε_u‖²."""
    return kappa * w * (w - 1) * _sq(eps_cond.double() - eps_uncond.double())


def anneal_increment(eps: torch.Tensor, beta: float, kappa: float) -> torch.Tensor:
    """Annealed target p^β (sampler driven by β·ε): Δlog w = κ·β(β−1)·‖ε‖²."""
    return kappa * beta * (beta - 1) * _sq(eps)


def initial_noise_std(betas: Sequence[float]) -> float:
    """Standard deviation of the target's initial noise Π_i N(0, I)^{β_i} = N(0, I/Σβ_i)."""
    total = float(sum(betas))
    if total <= 0:
        raise ValueError(f"the experts' weights must sum to > 0, got {list(betas)}")
    return 1 / math.sqrt(total)
