import math

import pytest
import torch

from fkdiff.smc import ess, log_mean_exp, log_normalize, normalized_weights


def test_log_normalize_matches_linear_space():
    lw = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]], dtype=torch.float64)
    w = normalized_weights(lw)
    torch.testing.assert_close(w, torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=torch.float64))
    torch.testing.assert_close(log_normalize(lw).exp().sum(-1), torch.ones(2, dtype=torch.float64))


def test_log_space_survives_extreme_values():
    # linear-space weights would underflow to 0/0 here
    lw = torch.tensor([[-5000.0, -5001.0, -5002.0]], dtype=torch.float64)
    w = normalized_weights(lw)
    ref = torch.softmax(torch.tensor([0.0, -1.0, -2.0], dtype=torch.float64), 0)
    torch.testing.assert_close(w[0], ref)
    assert torch.isfinite(ess(lw)).all()


def test_ess_bounds_and_values():
    uniform = torch.zeros(1, 8)
    assert ess(uniform).item() == pytest.approx(8.0)
    one_hot = torch.tensor([[0.0] + [-math.inf] * 7])
    assert ess(one_hot).item() == pytest.approx(1.0)
    lw = torch.tensor([[math.log(1.0), math.log(3.0)]], dtype=torch.float64)
    assert ess(lw).item() == pytest.approx(1.0 / (0.25**2 + 0.75**2))


def test_log_mean_exp_is_log_of_mean_weight():
    lw = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(log_mean_exp(lw), lw.exp().mean(-1).log())


def test_degenerate_group_is_defined():
    lw = torch.tensor([[-math.inf, -math.inf, -math.inf], [0.0, 0.0, -math.inf]])
    torch.testing.assert_close(normalized_weights(lw)[0], torch.full((3,), 1 / 3))
    assert ess(lw)[0].item() == 0.0
    assert log_mean_exp(lw)[0].item() == -math.inf
    assert ess(lw)[1].item() == pytest.approx(2.0)


def test_single_particle():
    lw = torch.tensor([[3.0], [-2.0]])
    torch.testing.assert_close(normalized_weights(lw), torch.ones(2, 1))
    torch.testing.assert_close(ess(lw), torch.ones(2))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_and_posinf_rejected(bad):
    with pytest.raises(ValueError, match="log_weights"):
        log_normalize(torch.tensor([[0.0, bad]]))


def test_non_tensor_rejected():
    with pytest.raises(TypeError, match="log_weights"):
        ess([[0.0, 1.0]])
