"""FK correctors through FKSteeringPipeline: exact targets on the bench, CFG weights on a tiny SD pipeline, errors."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler

from fkdiff import FKSteeringPipeline
from fkdiff.bench.correctors import grid_power_target
from fkdiff.bench.exact_target import (
    DEFAULT_MIXTURE,
    GMMDenoiser,
    bench_scheduler,
    compare,
    group_estimates,
    images_to_points,
)
from fkdiff.testing import tiny_ddpm_pipeline, tiny_sd_pipeline


@pytest.fixture(scope="module")
def bench_fk():
    model = GMMDenoiser()
    pipe = DDPMPipeline(unet=model, scheduler=bench_scheduler(model))
    pipe.set_progress_bar_config(disable=True)
    return model, FKSteeringPipeline.from_pipe(pipe)


@pytest.mark.parametrize("beta", [3.0, 0.5])
def test_annealing_corrector_reaches_p_beta(bench_fk, beta):
    model, fk = bench_fk
    target = grid_power_target([model.mixture], [beta], DEFAULT_MIXTURE)
    groups, k = 512, 16
    res = fk(
        corrector="anneal",
        anneal_beta=beta,
        batch_size=groups,
        num_particles=k,
        num_inference_steps=250,
        resample_interval=1,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        selection="all",
    )
    pts = images_to_points(res.images).reshape(groups, k, 2)
    c = compare(*group_estimates(DEFAULT_MIXTURE, pts, res.log_weights), target)
    assert c.tv <= c.tv_tolerance, (c.tv, c.tv_tolerance)
    # the annealed sampler without weights (K = 1: weights play no role) misses it
    plain = fk(
        corrector="anneal",
        anneal_beta=beta,
        batch_size=8192,
        num_particles=1,
        num_inference_steps=250,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        selection="all",
    )
    pts = images_to_points(plain.images).reshape(8192, 1, 2)
    u = compare(*group_estimates(DEFAULT_MIXTURE, pts, torch.zeros(8192, 1, dtype=torch.float64)), target)
    assert u.tv > u.tv_tolerance, (u.tv, u.tv_tolerance)


def test_cfg_corrector_weights_are_the_formula():
    """No resampling (tiny ESS threshold): the final log-weights are Σ_steps κ·w(w−1)·‖ε_c − ε_u‖² with the
    predictions the stock pipeline computed (captured independently by a hook on a stock run)."""
    pipe = tiny_sd_pipeline()
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    w, steps, k = 3.0, 5, 2
    out = FKSteeringPipeline.from_pipe(pipe)(
        ["a cat"],
        corrector="cfg",
        num_particles=k,
        guidance_scale=w,
        num_inference_steps=steps,
        ess_threshold=1e-9,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        selection="all",
    )
    captured = []
    handle = pipe.unet.register_forward_hook(
        lambda m, a, o: captured.append(o[0] if isinstance(o, tuple) else o.sample)
    )
    try:
        stock = pipe(
            ["a cat"],
            num_images_per_prompt=k,
            guidance_scale=w,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        ).images
    finally:
        handle.remove()
    assert torch.equal(out.images, stock)  # weights only: the trajectory is the stock one
    sched = pipe.scheduler
    ts = sched.timesteps
    expected = torch.zeros(k, dtype=torch.float64)
    for i, eps in enumerate(captured):
        a_t = float(sched.alphas_cumprod[int(ts[i])])
        a_n = float(sched.alphas_cumprod[int(ts[i + 1])]) if i + 1 < len(ts) else 1.0
        kappa = math.log(a_n / a_t) / (2 * (1 - a_t))
        u, c = eps.double().chunk(2)
        expected += kappa * w * (w - 1) * (c - u).flatten(1).pow(2).sum(1)
    torch.testing.assert_close(out.log_weights[0], expected, rtol=1e-6, atol=1e-6)


def test_cfg_corrector_runs_with_resampling_and_ddim_eta():
    pipe = tiny_sd_pipeline()
    out = FKSteeringPipeline.from_pipe(pipe)(
        ["a cat", "a dog"],
        corrector="cfg",
        num_particles=3,
        num_inference_steps=4,
        resample_interval=1,
        eta=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    assert out.images.shape == (2, 3, 16, 16)
    assert out.rewards.abs().max() == 0  # no reward: correctors alone


@pytest.mark.parametrize(
    "factory, kwargs, match",
    [
        (tiny_sd_pipeline, dict(corrector="cfg", eta=0.0), "eta > 0"),
        (tiny_sd_pipeline, dict(corrector="cfg", eta=1.0, guidance_scale=1.0), "guidance_scale > 1"),
        (tiny_sd_pipeline, dict(corrector="anneal", eta=1.0), "guidance_scale <= 1"),
        (tiny_sd_pipeline, dict(corrector="magic", eta=1.0), "corrector"),
        (tiny_ddpm_pipeline, dict(corrector="anneal", anneal_beta=0.0), "anneal_beta"),
        (tiny_ddpm_pipeline, dict(corrector="anneal", anneal_beta=-1.0), "anneal_beta"),
        (tiny_ddpm_pipeline, dict(corrector="cfg"), "guidance"),
    ],
)
def test_corrector_bad_input(factory, kwargs, match):
    pipe = factory()
    fk = FKSteeringPipeline.from_pipe(pipe)
    prompt = "a cat" if fk.family.conditional else None
    with pytest.raises(ValueError, match=match):
        fk(prompt, num_particles=2, num_inference_steps=2, output_type="pt", **kwargs)


def test_corrector_refuses_non_vp_scheduler():
    from diffusers import EulerAncestralDiscreteScheduler

    pipe = tiny_sd_pipeline()
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="DDPMScheduler"):
        FKSteeringPipeline.from_pipe(pipe)("a cat", corrector="cfg", num_inference_steps=2)
    assert isinstance(tiny_sd_pipeline().scheduler, DDIMScheduler)


def test_product_of_two_models_reaches_p1_p2(bench_fk):
    from fkdiff.bench.correctors import CORRECTOR_CASES, denoiser_for

    mixes, betas = CORRECTOR_CASES["product"]
    first, second = denoiser_for(mixes[0]), denoiser_for(mixes[1])
    pipe = DDPMPipeline(unet=first, scheduler=bench_scheduler(first))
    pipe.set_progress_bar_config(disable=True)
    target = grid_power_target(mixes, betas, DEFAULT_MIXTURE)
    res = FKSteeringPipeline.from_pipe(pipe)(
        corrector="product",
        second_model=second,
        batch_size=512,
        num_particles=16,
        num_inference_steps=250,
        resample_interval=1,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        selection="all",
    )
    pts = images_to_points(res.images).reshape(512, 16, 2)
    c = compare(*group_estimates(DEFAULT_MIXTURE, pts, res.log_weights), target)
    assert c.tv <= c.tv_tolerance, (c.tv, c.tv_tolerance)


def test_product_of_two_prompts_on_sd_is_seeded():
    pipe = tiny_sd_pipeline()
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    fk = FKSteeringPipeline.from_pipe(pipe)
    kw = dict(
        corrector="product",
        second_prompt="wearing a hat",
        guidance_scale=1.0,
        num_particles=2,
        num_inference_steps=4,
        resample_interval=1,
        output_type="pt",
        selection="all",
    )
    a = fk(["a cat", "a dog"], generator=torch.Generator().manual_seed(0), **kw)
    b = fk(["a cat", "a dog"], generator=torch.Generator().manual_seed(0), **kw)
    assert a.images.shape == (4, 3, 16, 16) and torch.equal(a.images, b.images)
    assert torch.isfinite(a.log_weights).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(second_model="tiny"), "latent space"),
        (dict(), "exactly one"),
        (dict(second_model="gmm", second_prompt="x"), "exactly one"),
    ],
)
def test_product_bad_input(bench_fk, kwargs, match):
    model, fk = bench_fk
    if kwargs.get("second_model") == "tiny":
        kwargs = dict(second_model=tiny_ddpm_pipeline().unet)  # 1 channel, 8×8: another latent space
    elif kwargs.get("second_model") == "gmm":
        kwargs = dict(kwargs, second_model=model)
    with pytest.raises(ValueError, match=match):
        fk(corrector="product", num_particles=2, num_inference_steps=2, output_type="pt", **kwargs)


def test_product_with_cfg_refused():
    pipe = tiny_sd_pipeline()
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="guidance_scale <= 1"):
        FKSteeringPipeline.from_pipe(pipe)("a cat", corrector="product", second_prompt="a hat", num_inference_steps=2)


def test_annealing_combined_with_a_reward_tilt(bench_fk):
    """Corrector weights and FK potentials add up: the target is p^β·exp(λ·r)."""
    from fkdiff.bench.exact_target import SinReward

    model, fk = bench_fk
    reward = SinReward()
    target = grid_power_target([model.mixture], [2.0], DEFAULT_MIXTURE, reward_points=reward.points, lmbda=1.0)
    res = fk(
        reward=reward,
        lmbda=1.0,
        corrector="anneal",
        anneal_beta=2.0,
        batch_size=512,
        num_particles=16,
        num_inference_steps=250,
        resample_interval=1,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        selection="all",
    )
    pts = images_to_points(res.images).reshape(512, 16, 2)
    c = compare(*group_estimates(DEFAULT_MIXTURE, pts, res.log_weights), target)
    assert c.tv <= c.tv_tolerance, (c.tv, c.tv_tolerance)
    plain = grid_power_target([model.mixture], [2.0], DEFAULT_MIXTURE)
    assert 0.5 * (plain.mode_masses - target.mode_masses).abs().sum() > 4 * c.tv_tolerance  # the tilt matters


def test_cfg_corrector_seeded_and_grouped():
    pipe = tiny_sd_pipeline()
    fk = FKSteeringPipeline.from_pipe(pipe)
    kw = dict(
        corrector="cfg",
        num_particles=3,
        num_inference_steps=4,
        resample_interval=1,
        eta=1.0,
        output_type="pt",
        selection="all",
    )
    a = fk(["a cat", "a dog"], generator=torch.Generator().manual_seed(1), **kw)
    b = fk(["a cat", "a dog"], generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a.images, b.images) and torch.equal(a.log_weights, b.log_weights)
    assert all(((r.ancestors >= 0) & (r.ancestors < 3)).all() for r in a.trace.records)


@pytest.mark.parametrize(
    "corrector, kwargs",
    [
        ("cfg", dict(guidance_scale=4.0)),
        ("anneal", dict(anneal_beta=2.0, guidance_scale=1.0)),
        ("product", dict(guidance_scale=1.0)),
    ],
)
def test_correctors_on_sdxl(corrector, kwargs):
    from fkdiff.testing import tiny_sdxl_pipeline

    pipe = tiny_sdxl_pipeline()
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    if corrector == "product":
        kwargs = dict(kwargs, second_model=tiny_sdxl_pipeline(seed=1).unet)
    fk = FKSteeringPipeline.from_pipe(pipe)
    run = dict(
        corrector=corrector,
        num_particles=2,
        num_inference_steps=3,
        resample_interval=1,
        output_type="pt",
        selection="all",
        **kwargs,
    )
    a = fk(["a cat", "a dog"], generator=torch.Generator().manual_seed(0), **run)
    b = fk(["a cat", "a dog"], generator=torch.Generator().manual_seed(0), **run)
    assert a.images.shape == (4, 3, 16, 16) and torch.equal(a.images, b.images)
    assert torch.isfinite(a.log_weights).all() and a.log_weights.abs().sum() > 0
