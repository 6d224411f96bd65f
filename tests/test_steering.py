import logging
import math

import pytest
import torch

from fkdiff.smc import POTENTIALS, FKSteering, check_rewards, select_particles


def naive_increment(potential, lmbda, path_rewards):
    """log G_n from DESIGN.md §5, recomputed from the particle's reward history r_1..r_n."""
    r = path_rewards
    if potential == "diff":
        return lmbda * (r[-1] - (r[-2] if len(r) > 1 else 0.0))
    if potential == "max":
        return lmbda * max(r)
    if potential == "sum":
        return lmbda * sum(r)
    return lmbda * r[-1]


def drive(steer, gen, scale=2.0):
    """Run a whole schedule with random rewards; returns nothing, the trace holds it all."""
    for step in range(steer.num_steps):
        if steer.is_update_step(step):
            r = scale * torch.randn(steer.G * steer.K, generator=gen, dtype=torch.float64)
            steer.update(step, r)


def paths(steer, g, k):
    """Walk the ancestry back from final particle (g, k): per record, the index of its ancestor."""
    out, idx = [], k
    for rec in reversed(steer.trace.records):
        idx = int(rec.ancestors[g, idx])  # index before this record's resampling
        out.append(idx)
    return out[::-1]


@pytest.mark.parametrize("potential", POTENTIALS)
@pytest.mark.parametrize("ess_threshold", [None, 0.5])
@pytest.mark.parametrize("seed", range(6))
def test_path_product_is_exp_lambda_r0(potential, ess_threshold, seed):
    """Along every particle path, Σ log G_n = λ·r(x₀); each increment is the DESIGN formula of the
    path's own rewards; the final log-weight carries every increment since the path's last
    resampling (skipped, ESS-gated steps included)."""
    gen = torch.Generator().manual_seed(seed)
    lmbda = 0.7 + seed
    steer = FKSteering(
        3,
        5,
        23,
        potential=potential,
        lmbda=lmbda,
        resample_interval=1 + seed % 3,
        resample_start=seed % 2,
        ess_threshold=ess_threshold,
        generator=gen,
    )
    drive(steer, gen)
    recs = steer.trace.records
    assert steer.finished and recs[-1].step == 22
    resampled_any = False
    for g in range(3):
        for k in range(5):
            idxs = paths(steer, g, k)
            rewards = [float(rec.rewards[g, i]) for rec, i in zip(recs, idxs)]
            incs = [float(rec.log_increment[g, i]) for rec, i in zip(recs, idxs)]
            assert sum(incs) == pytest.approx(lmbda * rewards[-1], abs=1e-9)
            for n in range(len(recs) - 1):
                assert incs[n] == pytest.approx(naive_increment(potential, lmbda, rewards[: n + 1]), abs=1e-9)
            last_rs = max((n for n, rec in enumerate(recs) if rec.resampled[g]), default=-1)
            resampled_any |= last_rs >= 0
            carried = sum(incs[last_rs + 1 :])
            assert float(steer.log_weights[g, k]) == pytest.approx(carried, abs=1e-9)
    assert resampled_any


def test_ess_gate_skips_and_carries():
    # Equal rewards within a group keep ESS = K: the gate never fires, weights stay uniform but carried.
    steer = FKSteering(2, 4, 5, resample_interval=1, ess_threshold=0.5, potential="rt", lmbda=1.0)
    for step in range(4):
        steer.update(step, torch.tensor([[1.0] * 4, [2.0] * 4]))
    assert not any(r.resampled.any() for r in steer.trace.records)
    torch.testing.assert_close(steer.log_weights, torch.tensor([[4.0] * 4, [8.0] * 4], dtype=torch.float64))
    # a degenerate reward spread fires it for that group only
    steer2 = FKSteering(2, 4, 5, resample_interval=1, ess_threshold=0.5, lmbda=1.0)
    steer2.update(0, torch.tensor([[0.0, 0.0, 0.0, 50.0], [1.0, 1.0, 1.0, 1.0]]))
    rec = steer2.trace.records[0]
    assert rec.resampled.tolist() == [True, False]
    assert rec.ancestors[0].tolist() == [3, 3, 3, 3]
    assert rec.ancestors[1].tolist() == [0, 1, 2, 3]


def test_resampling_never_crosses_groups_and_is_seeded():
    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        steer = FKSteering(4, 6, 12, resample_interval=2, generator=gen)
        drive(steer, torch.Generator().manual_seed(99))
        return steer

    a, b = run(5), run(5)
    for ra, rb in zip(a.trace.records, b.trace.records):
        assert torch.equal(ra.ancestors, rb.ancestors)
        assert ((ra.ancestors >= 0) & (ra.ancestors < 6)).all()
    torch.testing.assert_close(a.log_weights, b.log_weights)
    assert a.trace.ancestry().shape == (4, 6)


def test_flat_indices_returned_by_update():
    steer = FKSteering(2, 3, 3, resample_interval=1, lmbda=1.0)
    idx = steer.update(0, torch.tensor([0.0, 0.0, 100.0, 100.0, 0.0, 0.0]))
    assert idx.tolist() == [2, 2, 2, 3, 3, 3]


def test_log_z_estimate_is_unbiased():
    """E[Ẑ] = Z for SMC. With i.i.d. N(0,1) rewards at the last step only and λ = 1,
    Z = E[exp(r)] = e^{1/2}; Ẑ per group is the mean of K lognormals, Var = (e² − e)/K."""
    g, k = 20000, 4
    steer = FKSteering(g, k, 1, lmbda=1.0)
    steer.update(0, torch.randn(g * k, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    z_hat = steer.trace.log_z.exp()
    se = math.sqrt((math.e**2 - math.e) / k / g)
    assert abs(z_hat.mean().item() - math.exp(0.5)) < 5 * se


def test_log_z_with_resampling():
    # rewards depend on the particle only through a constant per step: Z = exp(λ Σ c_n) exactly
    steer = FKSteering(2, 3, 4, resample_interval=1, potential="rt", lmbda=0.5)
    for step, c in enumerate([1.0, -2.0, 0.5, 3.0]):
        steer.update(step, torch.full((6,), c))
    # rt increments: 0.5, -1, 0.25, then final correction λ·r0 − path = 1.5 − (−0.25) = 1.75
    torch.testing.assert_close(steer.trace.log_z, torch.full((2,), 1.5, dtype=torch.float64))


def test_degenerate_group_all_minus_inf():
    steer = FKSteering(2, 3, 3, resample_interval=1, generator=torch.Generator().manual_seed(0))
    steer.add_log_weights(torch.tensor([[-math.inf] * 3, [0.0] * 3]))
    steer.update(0, torch.zeros(6))
    rec = steer.trace.records[0]
    assert rec.ess[0] == 0 and rec.resampled[0]
    assert steer.log_weights[0].eq(0).all()  # reset after the uniform resampling
    assert steer.log_z[0] == -math.inf and torch.isfinite(steer.log_z[1])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rewards_rejected(bad):
    steer = FKSteering(1, 3, 2)
    with pytest.raises(ValueError, match="non-finite.*indices \\[1\\]"):
        steer.update(0, torch.tensor([0.0, bad, 1.0]))


def test_wrong_reward_shape_and_type():
    steer = FKSteering(2, 3, 2)
    with pytest.raises(ValueError, match=r"shape \[6\]"):
        steer.update(0, torch.zeros(5))
    with pytest.raises(ValueError, match=r"shape \[6\]"):
        steer.update(0, torch.zeros(6, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        steer.update(0, [0.0] * 6)
    with pytest.raises(TypeError, match="reward"):
        check_rewards(torch.zeros(6, dtype=torch.complex64), 6)


def test_single_particle_runs():
    steer = FKSteering(3, 1, 4, resample_interval=1, lmbda=2.0)
    drive(steer, torch.Generator().manual_seed(0))
    assert all(r.ancestors.eq(0).all() for r in steer.trace.records)
    assert steer.select("best").tolist() == [0, 1, 2]


def test_not_an_update_step_and_finished():
    steer = FKSteering(1, 2, 10, resample_start=2, resample_interval=4)
    assert steer.update_steps == [2, 6, 9]
    with pytest.raises(ValueError, match="not an update step"):
        steer.update(3, torch.zeros(2))
    for s in steer.update_steps:
        steer.update(s, torch.zeros(2))
    with pytest.raises(RuntimeError, match="finished"):
        steer.update(9, torch.zeros(2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(potential="exp"), r"potential.*\['diff', 'max', 'sum', 'rt'\]"),
        (dict(resampling="magic"), r"resampling.*multinomial.*residual.*stratified.*systematic"),
        (dict(ess_threshold=1.5), "ess_threshold"),
        (dict(ess_threshold=0.0), "ess_threshold"),
        (dict(resample_interval=0), "resample_interval"),
        (dict(resample_start=5, resample_end=3), "resample_start"),
        (dict(resample_end=10), "resample_end"),
        (dict(lmbda=math.nan), "lmbda"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FKSteering(1, 4, 10, **kwargs)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_particle_count(k):
    with pytest.raises(ValueError, match="num_particles"):
        FKSteering(1, k, 10)


def test_frequent_updates_warn_for_max_and_sum(caplog):
    with caplog.at_level(logging.WARNING, logger="fkdiff"):
        FKSteering(1, 4, 50, potential="max", resample_interval=1)
    assert "potential='max'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fkdiff"):
        FKSteering(1, 4, 50, potential="diff", resample_interval=1)
    assert caplog.text == ""


def test_selection():
    lw = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, -1.0]])
    assert select_particles(lw, "best").tolist() == [1, 3]
    assert select_particles(lw, "all").tolist() == list(range(6))
    draws = torch.stack([select_particles(lw, "sample", torch.Generator().manual_seed(s)) for s in range(300)])
    assert ((draws[:, 0] >= 0) & (draws[:, 0] < 3)).all() and ((draws[:, 1] >= 3) & (draws[:, 1] < 6)).all()
    assert (draws[:, 0] == 1).float().mean() > 0.9  # W = 0.976 for particle 1
    with pytest.raises(ValueError, match="selection"):
        select_particles(lw, "median")


def test_trace_as_dict_is_json_ready():
    import json

    steer = FKSteering(1, 2, 3, resample_interval=1)
    drive(steer, torch.Generator().manual_seed(0))
    d = json.loads(json.dumps(steer.trace.as_dict()))
    assert len(d["records"]) == 3 and len(d["log_z"]) == 1
