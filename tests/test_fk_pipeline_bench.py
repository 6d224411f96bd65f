"""The exact-target bench through the user-facing pipeline:
FKSteeringPipeline.from_pipe(DDPMPipeline(GMMDenoiser, DDPMScheduler)) converges to p₀·exp(λ·r).

Tolerance as in test_exact_target.py: ½·Σ_m 4·SE_m from the spread of G independent groups.
"""

import logging

import pytest
import torch
from diffusers import DDPMPipeline

from fkdiff import FKSteeringPipeline
from fkdiff.bench.exact_target import (
    GMMDenoiser,
    bench_scheduler,
    bench_target,
    compare,
    group_estimates,
    images_to_points,
)

GROUPS = 512


@pytest.fixture(scope="module")
def setup():
    model = GMMDenoiser()
    pipe = DDPMPipeline(unet=model, scheduler=bench_scheduler(model))
    pipe.set_progress_bar_config(disable=True)
    return model, FKSteeringPipeline.from_pipe(pipe)


def errors(model, fk, reward_name, guidance):
    reward, target = bench_target(model, reward_name, 1.0)
    out = {}
    for k in (1, 4, 16):
        res = fk(
            reward=reward,
            batch_size=GROUPS,
            num_particles=k,
            lmbda=1.0,
            num_inference_steps=250,
            resample_interval=10,
            reward_guidance=guidance,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
            selection="all",
        )
        pts = images_to_points(res.images).reshape(GROUPS, k, 2)
        out[k] = compare(*group_estimates(model.mixture, pts, res.log_weights), target)
    return out


@pytest.mark.parametrize("reward_name", ["linear", "sin"])
@pytest.mark.parametrize("guidance", [0.0, 1.0])
def test_pipeline_converges_to_tilted_target(setup, reward_name, guidance, caplog):
    model, fk = setup
    with caplog.at_level(logging.ERROR):
        err = errors(model, fk, reward_name, guidance)
    table = {k: (round(e.tv, 4), round(e.tv_tolerance, 4)) for k, e in err.items()}
    assert err[16].tv <= err[16].tv_tolerance, table
    assert err[16].tv < err[1].tv, table
    if guidance == 0:
        assert err[1].tv > err[1].tv_tolerance  # K = 1 unguided is the plain sampler: off target


def test_guidance_proposal_correction_matters(setup, caplog, monkeypatch):
    """Negative control: dropping the log p − log q correction of the guided proposal leaves a biased
    sampler (the target is no longer p₀·exp(λ·r))."""
    from fkdiff.smc import FKSteering

    model, fk = setup
    monkeypatch.setattr(FKSteering, "add_log_weights", lambda self, inc, name="": None)
    with caplog.at_level(logging.ERROR):
        err = errors(model, fk, "sin", 1.0)
    assert err[16].tv > err[16].tv_tolerance, {k: (round(e.tv, 4), round(e.tv_tolerance, 4)) for k, e in err.items()}
