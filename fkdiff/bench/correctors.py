"""Exact targets for FK correctors on the 2-D Gaussian-mixture bench.

Experts are Gaussian mixtures with exact ε; a class-conditional model is a subset of the mixture's
components. Targets on a grid: CFG p(x|c)^w·p(x)^(1−w), annealing p^β, products p₁·p₂.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..pipelines.utils import alpha_bar
from ..smc import FKSteering
from ..smc.correctors import corrector_kappa, initial_noise_std, product_increment
from .exact_target import DEFAULT_MIXTURE, GaussianMixture, GMMDenoiser, GridTarget, bench_scheduler

__all__ = ["sub_mixture", "denoiser_for", "grid_power_target", "run_corrected", "CORRECTOR_CASES"]


def sub_mixture(mix: GaussianMixture, components: Sequence[int]) -> GaussianMixture:
    """The class-conditional mixture made of ``components`` (weights renormalised)."""
    idx = torch.as_tensor(list(components))
    return GaussianMixture(mix.means[idx], mix.stds[idx], mix.weights[idx])


def denoiser_for(mix: GaussianMixture) -> GMMDenoiser:
    return GMMDenoiser(
        means=tuple(map(tuple, mix.means.tolist())), stds=tuple(mix.stds.tolist()), weights=tuple(mix.weights.tolist())
    )


def grid_power_target(
    experts: Sequence[GaussianMixture],
    betas: Sequence[float],
    cells: GaussianMixture,
    n: int = 801,
    w: float = 1.6,
    reward_points=None,
    lmbda: float = 0.0,
) -> GridTarget:
    """Mode masses (Voronoi cells of ``cells``' means) and mean of Π_i p_i^{β_i}·exp(λ·r) on an n×n grid."""
    lin = torch.linspace(-w, w, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(lin, lin, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    logp = sum(b * e.log_prob(pts) for b, e in zip(betas, experts))
    if reward_points is not None and lmbda:
        logp = logp + lmbda * reward_points(pts)
    p = torch.softmax(logp, 0)
    masses = torch.zeros(len(cells.weights), dtype=torch.float64).index_add_(0, cells.mode_of(pts), p)
    return GridTarget(masses, (p[:, None] * pts).sum(0))


@dataclass
class CorrectorRun:
    points: torch.Tensor  # [G, K, 2]
    log_weights: torch.Tensor  # [G, K]


def run_corrected(
    experts: Sequence[GMMDenoiser],
    betas: Sequence[float],
    *,
    num_groups: int,
    num_particles: int,
    num_inference_steps: int = 250,
    corrected: bool = True,
    resample_interval: int = 5,
    seed: int = 0,
) -> CorrectorRun:
    """DDPM driven by ε = Σ β_i ε_i from N(0, I/Σβ); with ``corrected``, FK-corrector weights and resampling."""
    scheduler = bench_scheduler(experts[0])
    scheduler.set_timesteps(num_inference_steps)
    gen = torch.Generator().manual_seed(seed)
    g, k = num_groups, num_particles
    steer = FKSteering(
        g, k, len(scheduler.timesteps), potential="rt", lmbda=0.0, resample_interval=resample_interval, generator=gen
    )
    x = torch.randn(g * k, 2, 1, 1, generator=gen, dtype=torch.float64) * initial_noise_std(betas)
    zeros = torch.zeros(g * k)
    last = len(scheduler.timesteps) - 1
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            eps = [m(x, t).sample for m in experts]
            combined = sum(b * e for b, e in zip(betas, eps))
            if corrected:
                prev_t = int(scheduler.previous_timestep(t))
                a_next = float(scheduler.alphas_cumprod[prev_t]) if prev_t >= 0 else 1.0
                kappa = corrector_kappa(float(alpha_bar(scheduler, t, x).flatten()[0]), a_next)
                steer.add_log_weights(product_increment(eps, betas, kappa))
            x = scheduler.step(combined, t, x, generator=gen).prev_sample
            if corrected and steer.is_update_step(i) and i < last:
                x = x[steer.update(i, zeros)]
        if corrected:
            steer.update(last, zeros)
    lw = steer.log_weights if corrected else torch.zeros(g, k, dtype=torch.float64)
    return CorrectorRun(x.reshape(g, k, 2), lw)


def _cases():
    """name → (expert mixtures, β): CFG on class {0, 3} with w = 2, annealing β = 3 and 1/2, and a product of
    the mixture with a broad Gaussian expert."""
    mix = DEFAULT_MIXTURE
    return {
        "cfg": ([sub_mixture(mix, [0, 3]), mix], [2.0, -1.0]),
        "anneal-3": ([mix], [3.0]),
        "anneal-0.5": ([mix], [0.5]),
        "product": ([mix, GaussianMixture([[0.3, 0.3]], [0.5], [1.0])], [1.0, 1.0]),
    }


CORRECTOR_CASES = _cases()
