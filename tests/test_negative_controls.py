"""Negative controls: the exact-target bench must *fail* on known-wrong SMC implementations.

Each mutation below is a defect seen in practice (DESIGN.md §6). It is patched in for one test; the
same check that passes for fkdiff's implementation (test_exact_target.py) must then fail for at
least one potential. This is what shows the bench can catch a wrong final correction.
"""

import logging

import pytest
import torch

import fkdiff.bench.exact_target as bench
import fkdiff.smc.steering as steering
from fkdiff.smc import potentials as P

from .test_exact_target import bench_errors, target_for


def wrong_final_max(lmbda, rewards, state):
    """Final correction with λ·max_s r_s instead of λ·r(x₀)."""
    r = rewards.to(torch.float64)
    log_g = lmbda * torch.maximum(state.running_max, r) - state.path_log_potential
    return log_g, P._advance(state, r, log_g)


def no_final_correction(lmbda, rewards, state):
    r = rewards.to(torch.float64)
    return torch.zeros_like(r), P._advance(state, r, torch.zeros_like(r))


class DropsSkippedIncrements(steering.FKSteering):
    """Adaptive resampling that forgets the increments of steps where it did not resample."""

    def update(self, step, rewards):
        self.log_weights = torch.zeros_like(self.log_weights)
        return super().update(step, rewards)


_check_rewards = steering.check_rewards


def floored_rewards(rewards, num, name="reward"):
    return _check_rewards(rewards, num, name).clamp(min=0)


def detect(model, scheduler, potentials, reward_name="linear", ess_threshold=None, reward=None):
    """Whether the bench check (K = 16 within tolerance) fails for any of the potentials."""
    base_reward, target = target_for(model, reward_name)
    failures = []
    for potential in potentials:
        e = bench_errors(model, scheduler, reward or base_reward, target, potential, ess_threshold, ks=(16,))[16]
        if e.tv > e.tv_tolerance:
            failures.append((potential, round(e.tv, 3), round(e.tv_tolerance, 3)))
    return failures


@pytest.fixture(scope="module")
def model():
    return bench.GMMDenoiser()


@pytest.fixture(scope="module")
def scheduler(model):
    return bench.bench_scheduler(model)


@pytest.fixture(autouse=True)
def quiet(caplog):
    with caplog.at_level(logging.ERROR):
        yield


def test_wrong_final_correction_is_caught(model, scheduler, monkeypatch):
    monkeypatch.setattr(steering, "final_correction", wrong_final_max)
    assert detect(model, scheduler, ["diff", "max"])


def test_missing_final_correction_is_caught(model, scheduler, monkeypatch):
    monkeypatch.setattr(steering, "final_correction", no_final_correction)
    assert detect(model, scheduler, ["max", "rt"])


def test_dropped_skipped_increments_are_caught(model, scheduler, monkeypatch):
    monkeypatch.setattr(bench, "FKSteering", DropsSkippedIncrements)
    assert detect(model, scheduler, ["diff", "max"], ess_threshold=0.5)


def test_floored_rewards_are_caught(model, scheduler, monkeypatch):
    """Rewards floored at 0: an all-negative reward (sin − 3) then steers nothing."""
    monkeypatch.setattr(steering, "check_rewards", floored_rewards)
    sin = bench.SinReward()
    assert detect(model, scheduler, ["diff"], "sin", reward=lambda images, prompts=None: sin(images) - 3.0)


def test_unmutated_passes_the_same_checks(model, scheduler):
    assert not detect(model, scheduler, ["diff", "max"])
    assert not detect(model, scheduler, ["diff"], ess_threshold=0.5)
