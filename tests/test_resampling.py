import math

import pytest
import torch

from fkdiff.smc import RESAMPLING_SCHEMES, flat_indices, offspring_counts, resample

SCHEMES = sorted(RESAMPLING_SCHEMES)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_unbiased_offspring_counts(scheme):
    """E[#offspring of k] = K·W_k. The mean over R independent draws has standard error at most
    sqrt(K·W_k·(1−W_k)/R) (the multinomial variance bounds that of the other three schemes), so a
    5-sigma band fails by chance with probability < 1e-6 per particle."""
    torch.manual_seed(0)
    k, reps = 7, 20000
    w = torch.tensor([0.02, 0.3, 0.05, 0.13, 0.2, 0.0, 0.3], dtype=torch.float64)
    lw = w.log().expand(reps, k)  # R groups with the same weights: R independent draws
    gen = torch.Generator().manual_seed(123)
    counts = offspring_counts(resample(lw, scheme, gen)).to(torch.float64)
    mean = counts.mean(0)
    expected = k * w
    se = (k * w * (1 - w) / reps).sqrt()
    assert (counts.sum(-1) == k).all()
    assert counts[:, 5].sum() == 0  # zero weight → never an ancestor
    assert ((mean - expected).abs() <= 5 * se + 1e-12).all(), (scheme, mean, expected, se)


@pytest.mark.parametrize("scheme", ["systematic", "residual", "stratified"])
def test_low_variance_schemes_keep_deterministic_part(scheme):
    # systematic: counts are floor or ceil of K·W; residual and stratified: at least floor(K·W) - 1 / floor
    k = 10
    w = torch.tensor([0.35, 0.25, 0.2, 0.1, 0.05, 0.05, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    lw = w.log().expand(500, k)
    counts = offspring_counts(resample(lw, scheme, torch.Generator().manual_seed(0)))
    floor = torch.floor(k * w).long()
    if scheme == "systematic":
        assert ((counts >= floor) & (counts <= floor + 1)).all()
    elif scheme == "residual":
        assert (counts >= floor).all()
    else:
        assert (counts >= floor - 1).all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_generator_same_ancestors(scheme):
    lw = torch.randn(5, 9, generator=torch.Generator().manual_seed(1))
    a = resample(lw, scheme, torch.Generator().manual_seed(7))
    b = resample(lw, scheme, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert a.dtype == torch.long and a.shape == (5, 9)
    assert ((a >= 0) & (a < 9)).all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_degenerate_group_resamples_uniformly(scheme):
    lw = torch.full((4000, 4), -math.inf)
    counts = offspring_counts(resample(lw, scheme, torch.Generator().manual_seed(0))).double()
    assert (counts.sum(-1) == 4).all()
    # uniform: each mean count is 1, SE <= sqrt(4·0.25·0.75/4000)
    assert ((counts.mean(0) - 1).abs() < 5 * math.sqrt(0.75 / 4000)).all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_single_particle_is_its_own_ancestor(scheme):
    assert torch.equal(resample(torch.randn(3, 1), scheme), torch.zeros(3, 1, dtype=torch.long))


def test_one_dimensional_input_is_one_group():
    out = resample(torch.tensor([0.0, -math.inf, -math.inf]), "multinomial", torch.Generator().manual_seed(0))
    assert torch.equal(out, torch.zeros(3, dtype=torch.long))


def test_unknown_scheme_lists_valid_names():
    with pytest.raises(ValueError, match="multinomial.*residual.*stratified.*systematic"):
        resample(torch.zeros(1, 3), "bogus")


def test_bad_shape_and_values():
    with pytest.raises(ValueError, match="log_weights"):
        resample(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="NaN"):
        resample(torch.tensor([[0.0, math.nan]]))


def test_flat_indices_stay_in_group():
    anc = torch.tensor([[2, 2, 0], [1, 0, 0]])
    assert flat_indices(anc).tolist() == [2, 2, 0, 4, 3, 3]
