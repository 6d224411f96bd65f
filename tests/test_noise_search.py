"""Noise search on offline pipelines: a verifier that is an exact function of the noise, regeneration, bad input."""

import logging
import math

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)

from fkdiff import NoiseSearchPipeline
from fkdiff.pipelines.noise_search import candidate_seeds, sphere_neighbors
from fkdiff.testing import (
    gaussian_data_pipeline,
    tiny_ddpm_pipeline,
    tiny_flux_pipeline,
    tiny_sd3_pipeline,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)

STEPS = 5
# a direction drawn from a seed far from the candidates' seeds
DIRECTION = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(10**6))
DIRECTION = DIRECTION / DIRECTION.norm()


def projection(images, prompts=None):
    """On the Gaussian-data pipeline the image is c·noise (c fixed by the schedule): this is c·⟨noise, d⟩."""
    return ((2 * images - 1) * DIRECTION).flatten(1).sum(1)


def brightness(images, prompts=None):
    return images.mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def gauss():
    return NoiseSearchPipeline.from_pipe(gaussian_data_pipeline())


def test_verifier_is_an_exact_linear_function_of_the_noise(gauss):
    noises = torch.stack([gauss.noise_from_seed(s) for s in range(6)])
    ratio = projection(gauss.generate(None, noises, STEPS)) / (noises * DIRECTION).flatten(1).sum(1)
    torch.testing.assert_close(ratio, ratio[:1].expand(6), rtol=1e-4, atol=0)


@pytest.mark.parametrize("seed", [0, 1000, 2000, 3000])
def test_zero_order_beats_random_at_equal_nfe(gauss, seed):
    zo = gauss.zero_order_search(
        verifier=projection,
        num_neighbors=8,
        num_rounds=20,
        cosine=0.9,
        num_inference_steps=STEPS,
        seed=seed,
        output_type="pt",
    )
    assert all(b >= a for a, b in zip(zo.history, zo.history[1:]))  # best so far never decreases
    assert len(zo.history) == 21
    n = zo.nfe // STEPS
    rnd = gauss.random_search(
        verifier=projection, num_candidates=n, num_inference_steps=STEPS, seed=seed, output_type="pt"
    )
    assert rnd.nfe == zo.nfe and rnd.verifier_calls == zo.verifier_calls
    assert zo.best_score > rnd.best_score


def test_sphere_neighbors_have_pivot_norm_and_cosine():
    p = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0))
    n = sphere_neighbors(p, 5, 0.8, torch.Generator().manual_seed(1))
    torch.testing.assert_close(n.flatten(1).norm(dim=1), p.norm().expand(5), rtol=1e-5, atol=0)
    cos = (n.flatten(1) @ p.flatten()) / (p.norm() * n.flatten(1).norm(dim=1))
    torch.testing.assert_close(cos, torch.full((5,), 0.8), rtol=1e-5, atol=0)


def test_random_search_winner_regenerates(gauss):
    res = gauss.random_search(
        verifier=projection, num_candidates=10, max_batch_size=3, num_inference_steps=STEPS, seed=7, output_type="pt"
    )
    assert res.nfe == 10 * STEPS and res.verifier_calls == 10
    assert [c["seed"] for c in res.candidates] == candidate_seeds(7, 10) and len(set(candidate_seeds(7, 10))) == 10
    assert res.best_score == max(c["score"] for c in res.candidates)
    assert torch.equal(gauss.noise_from_seed(res.best_seed), res.best_noise)
    again = gauss.regenerate(None, gauss.noise_from_seed(res.best_seed), STEPS)
    # batch composition may change float rounding by an ulp; a different noise would be off by > 1e-2
    assert projection(again).item() == pytest.approx(res.best_score, abs=1e-5)
    torch.testing.assert_close(again, res.images, rtol=0, atol=1e-5)


def test_zero_order_winner_regenerates_from_saved_noise(gauss):
    res = gauss.zero_order_search(
        verifier=projection,
        num_neighbors=3,
        num_rounds=4,
        cosine=0.9,
        num_inference_steps=STEPS,
        seed=5,
        output_type="pt",
    )
    saved = [c for c in res.candidates if c["score"] == res.best_score][0]
    noise = saved["noise"] if saved["seed"] is None else gauss.noise_from_seed(saved["seed"])
    assert torch.equal(noise, res.best_noise)
    assert projection(gauss.regenerate(None, noise, STEPS)).item() == pytest.approx(res.best_score, abs=1e-5)


def test_zero_order_step_size_and_restarts(gauss):
    def constant(images, prompts=None):
        return torch.zeros(images.shape[0])

    res = gauss.zero_order_search(
        verifier=constant,
        num_neighbors=2,
        num_rounds=3,
        cosine=None,
        step_size=0.5,
        num_inference_steps=STEPS,
        output_type="pt",
    )
    assert res.restarts == [1, 2]  # nothing ever improves: restart each round but the last
    assert sum(c["kind"] == "restart" for c in res.candidates) == 2
    assert res.nfe == STEPS * (1 + 3 * 2 + 2)


def test_path_search_improves_and_replays(gauss):
    res = gauss.path_search(
        verifier=projection,
        num_paths=3,
        num_branches=3,
        num_inference_steps=10,
        start_step=4,
        backward_steps=1,
        forward_steps=3,
        seed=2,
        output_type="pt",
    )
    assert res.history[-1] == res.best_score
    finals = [c for c in res.candidates if c["step"] == 10]
    best = max(finals, key=lambda c: c["score"])
    assert best["score"] == pytest.approx(res.best_score)
    replay = gauss.path_replay(None, best, num_inference_steps=10, start_step=4, backward_steps=1, forward_steps=3)
    assert projection(replay).item() == pytest.approx(res.best_score, abs=1e-5)
    # NFE: 3 paths × 4 steps, then rounds of 9 branches × 3 steps (4→3→6→5→8→7→10)
    assert res.nfe == 3 * 4 + 3 * 9 * 3


def test_search_on_sd_and_flux_pipelines():
    sd = tiny_sd_pipeline()
    ns = NoiseSearchPipeline.from_pipe(sd)
    res = ns.random_search("a cat", verifier=brightness, num_candidates=3, num_inference_steps=3, output_type="pt")
    assert res.nfe == 3 * 3 * 2  # CFG: both halves count
    again = ns.regenerate("a cat", res.best_noise, 3)
    assert brightness(again).item() == pytest.approx(res.best_score, abs=1e-5)
    path = ns.path_search(
        "a cat", verifier=brightness, num_paths=2, num_branches=2, num_inference_steps=6, output_type="np"
    )
    assert path.images.shape == (1, 16, 16, 3)

    flux = tiny_flux_pipeline(scheduler=FlowMatchEulerDiscreteScheduler())
    ns = NoiseSearchPipeline.from_pipe(flux)
    kw = dict(height=16, width=16, max_sequence_length=16)
    res = ns.random_search(
        "a cat", verifier=brightness, num_candidates=2, num_inference_steps=2, output_type="pt", **kw
    )
    assert brightness(ns.regenerate("a cat", res.best_noise, 2, **kw)).item() == pytest.approx(res.best_score, abs=1e-5)


def test_stochastic_sampler_warns(caplog):
    ns = NoiseSearchPipeline.from_pipe(tiny_ddpm_pipeline())  # DDPMScheduler
    with caplog.at_level(logging.WARNING, logger="fkdiff"):
        ns.random_search(verifier=brightness, num_candidates=1, num_inference_steps=2, output_type="pt")
    assert "stochastic" in caplog.text


def bad_shape(images, prompts=None):
    return torch.zeros(images.shape[0], 2)


def bad_nan(images, prompts=None):
    return torch.full((images.shape[0],), math.nan)


@pytest.mark.parametrize(
    "method, kwargs, exc, match",
    [
        ("random_search", dict(num_candidates=0), ValueError, "num_candidates"),
        ("zero_order_search", dict(cosine=1.0), ValueError, r"cosine.*\(0, 1\)"),
        ("zero_order_search", dict(cosine=0.0), ValueError, "cosine"),
        ("zero_order_search", dict(num_neighbors=0), ValueError, "num_neighbors"),
        ("zero_order_search", dict(cosine=None, step_size=-1.0), ValueError, "step_size"),
        ("random_search", dict(verifier=bad_shape), ValueError, r"bad_shape.*shape"),
        ("random_search", dict(verifier=bad_nan), ValueError, "bad_nan.*non-finite"),
        ("random_search", dict(verifier=None), TypeError, "verifier"),
        ("random_search", dict(output_type="latent"), ValueError, "output_type"),
        ("path_search", dict(forward_steps=1, backward_steps=1), ValueError, "forward_steps"),
        ("path_search", dict(start_step=99), ValueError, "start_step"),
    ],
)
def test_bad_input(gauss, method, kwargs, exc, match):
    base = dict(verifier=projection, num_inference_steps=STEPS, output_type="pt")
    with pytest.raises(exc, match=match):
        getattr(gauss, method)(**{**base, **kwargs})


def test_prompt_rules_and_path_scheduler():
    with pytest.raises(ValueError, match="unconditional"):
        NoiseSearchPipeline.from_pipe(gaussian_data_pipeline()).random_search("a cat", verifier=brightness)
    sd = tiny_sd_pipeline()
    with pytest.raises(TypeError, match="prompt"):
        NoiseSearchPipeline.from_pipe(sd).random_search(None, verifier=brightness)
    sd.scheduler = DPMSolverMultistepScheduler.from_config(sd.scheduler.config)
    with pytest.raises(ValueError, match="stateless"):
        NoiseSearchPipeline.from_pipe(sd).path_search("a cat", verifier=brightness, num_inference_steps=4)
    assert isinstance(gaussian_data_pipeline().scheduler, DDIMScheduler)


def test_seed_means_what_the_stock_pipeline_draws():
    """noise_from_seed(s) is the stock pipeline's own draw with generator=manual_seed(s): a winner's seed
    reproduces it with plain diffusers."""
    sd = tiny_sd_pipeline()
    ns = NoiseSearchPipeline.from_pipe(sd)
    stock = sd("a cat", num_inference_steps=3, generator=torch.Generator().manual_seed(123), output_type="pt").images
    ours = ns.regenerate("a cat", ns.noise_from_seed(123), 3)
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-6)


FLOW_KW = dict(height=16, width=16, max_sequence_length=16)


@pytest.mark.parametrize("name", ["sd-ddim", "sd-euler", "sdxl-ddim", "sd3", "flux"])
def test_path_segments_through_stock_pipelines(name):
    """Segments of the stock loop compose: steps [0, a) then [a, T) equal [0, T) and the stock pipeline
    given the same noise; path search then runs and its winner replays."""
    if name.startswith("sd-"):
        pipe, kw = tiny_sd_pipeline(), {}
        if name == "sd-euler":
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    elif name == "sdxl-ddim":
        pipe, kw = tiny_sdxl_pipeline(), {}
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    else:
        factory = tiny_sd3_pipeline if name == "sd3" else tiny_flux_pipeline
        pipe, kw = factory(scheduler=FlowMatchEulerDiscreteScheduler()), dict(FLOW_KW)
    ns = NoiseSearchPipeline.from_pipe(pipe)
    steps = 6
    noise = ns.noise_from_seed(3, kw.get("height"), kw.get("width"))
    run = ns._start_segments("a cat", steps, kw)
    x = ns._initial(noise[None])
    full, _ = run(x, 0, steps)
    half, _ = run(x, 0, 2)
    rest, _ = run(half, 2, steps)
    torch.testing.assert_close(rest, full, rtol=1e-5, atol=1e-5)
    stock = pipe("a cat", latents=noise[None], num_inference_steps=steps, output_type="latent", **kw).images
    torch.testing.assert_close(full, stock, rtol=1e-5, atol=1e-5)

    res = ns.path_search(
        "a cat",
        verifier=brightness,
        num_paths=2,
        num_branches=2,
        num_inference_steps=steps,
        start_step=2,
        backward_steps=1,
        forward_steps=2,
        output_type="pt",
        **kw,
    )
    best = max((c for c in res.candidates if c["step"] == steps), key=lambda c: c["score"])
    replay = ns.path_replay(
        "a cat", best, num_inference_steps=steps, start_step=2, backward_steps=1, forward_steps=2, **kw
    )
    assert brightness(replay).item() == pytest.approx(res.best_score, abs=1e-5)
    # NFE: skipped steps cost nothing: 2 paths × 2 steps, then 9 rounds... counted from the schedule
    cfg = 2 if name.startswith("sd") else 1
    rounds = len({c["round"] for c in res.candidates})
    assert res.nfe == cfg * (2 * 2 + rounds * 4 * 2)
