"""FK correctors: the weight formulas, and the exact-target bench for CFG, annealing and products.

Corrected sampling (K = 64 particles, G = 512 groups; CFG's finite-K bias at K = 16 is about the size of
the tolerance) must match the exact target within the Monte-Carlo
tolerance ½·Σ_m 4·SE_m; the uncorrected sampler (plain CFG / scaled score / summed predictions), measured
on 16384 independent samples, must measurably miss it (its TV above its own tolerance).
"""

import math

import pytest
import torch

import fkdiff.bench.correctors as bc
from fkdiff.bench.exact_target import DEFAULT_MIXTURE, compare, group_estimates
from fkdiff.smc.correctors import (
    anneal_increment,
    cfg_increment,
    corrector_kappa,
    initial_noise_std,
    product_increment,
)


def test_special_cases_of_the_product_formula():
    g = torch.Generator().manual_seed(0)
    e1, e2 = torch.randn(5, 4, 3, 3, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    k = 0.37
    torch.testing.assert_close(cfg_increment(e2, e1, 3.0, k), product_increment([e1, e2], [3.0, -2.0], k))
    torch.testing.assert_close(anneal_increment(e1, 2.5, k), product_increment([e1], [2.5], k))
    inner = (e1.double() * e2.double()).flatten(1).sum(1)
    torch.testing.assert_close(product_increment([e1, e2], [1.0, 1.0], k), 2 * k * inner)
    assert anneal_increment(e1, 1.0, k).abs().max() == 0  # β = 1 is the plain sampler: no correction


def test_kappa_and_initial_noise():
    assert corrector_kappa(0.5, 0.5) == 0.0
    assert corrector_kappa(0.25, 0.5) == pytest.approx(math.log(2) / 1.5)
    assert initial_noise_std([1.0, 1.0]) == pytest.approx(1 / math.sqrt(2))
    assert initial_noise_std([2.0, -1.0]) == 1.0
    with pytest.raises(ValueError):
        corrector_kappa(0.5, 0.4)
    with pytest.raises(ValueError):
        initial_noise_std([0.5, -0.5])
    with pytest.raises(ValueError, match="one β per expert"):
        product_increment([torch.zeros(1, 2)], [1.0, 2.0], 0.1)


def tv(name, corrected, k, groups, mutate=None):
    mixes, betas = bc.CORRECTOR_CASES[name]
    target = bc.grid_power_target(mixes, betas, DEFAULT_MIXTURE)
    run = bc.run_corrected(
        [bc.denoiser_for(m) for m in mixes],
        betas,
        num_groups=groups,
        num_particles=k,
        corrected=corrected,
        num_inference_steps=250,
        resample_interval=1,  # CFG weights accumulate every step: resample every step
        seed=1,
    )
    return compare(*group_estimates(DEFAULT_MIXTURE, run.points, run.log_weights), target)


@pytest.mark.parametrize("name", sorted(bc.CORRECTOR_CASES))
def test_corrected_matches_target_uncorrected_does_not(name):
    good = tv(name, True, 64, 512)
    assert good.tv <= good.tv_tolerance, (good.tv, good.tv_tolerance)
    plain = tv(name, False, 1, 16384)
    assert plain.tv > plain.tv_tolerance, (plain.tv, plain.tv_tolerance)


def test_wrong_sign_of_the_correction_is_caught(monkeypatch):
    """Negative control: the bench fails a corrector whose increments have the wrong sign."""
    real = bc.product_increment
    monkeypatch.setattr(bc, "product_increment", lambda eps, betas, kappa: -real(eps, betas, kappa))
    bad = tv("cfg", True, 64, 512)
    assert bad.tv > bad.tv_tolerance
