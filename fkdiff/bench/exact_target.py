"""The exact-target bench: a 2-D Gaussian-mixture "diffusion model" whose noise prediction is exact.

Data p₀ = Σ_m π_m·N(μ_m, σ_m²·I) in 2-D. Under the VP forward process
p_t = Σ_m π_m·N(√ᾱ_t·μ_m, (ᾱ_t·σ_m² + 1 − ᾱ_t)·I), so ε*(x, t) = −√(1−ᾱ_t)·∇log p_t(x) is exact.
:class:`GMMDenoiser` wraps it as a diffusers model (a ``ModelMixin`` returning ``.sample``) on
"images" of shape ``[N, 2, 1, 1]``, so the stock ``DDPMPipeline`` and schedulers run it.

Targets with closed forms (linear tilt) or a fine grid (any reward) are compared with weighted
particle sets through mode masses (Voronoi cells of the means) and means, with tolerances from the
Monte-Carlo standard error across independent groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from ..pipelines.utils import predict_x0
from ..smc import FKSteering, normalized_weights

__all__ = [
    "GaussianMixture",
    "GMMDenoiser",
    "DEFAULT_MIXTURE",
    "LinearReward",
    "SinReward",
    "images_to_points",
    "points_to_images",
    "grid_target",
    "bench_scheduler",
    "run_fk",
    "group_estimates",
    "compare",
]


@dataclass
class GaussianMixture:
    """Isotropic 2-D Gaussian mixture: ``means [M, 2]``, ``stds [M]``, ``weights [M]`` (normalised)."""

    means: torch.Tensor
    stds: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self):
        self.means = torch.as_tensor(self.means, dtype=torch.float64)
        self.stds = torch.as_tensor(self.stds, dtype=torch.float64)
        w = torch.as_tensor(self.weights, dtype=torch.float64)
        self.weights = w / w.sum()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = logsumexp_m [log π_m + log N(x; μ_m, σ_m² I)] for ``x [..., 2]``."""
        x = x.to(torch.float64)
        d2 = ((x.unsqueeze(-2) - self.means) ** 2).sum(-1)
        var = self.stds**2
        comp = -0.5 * d2 / var - torch.log(2 * math.pi * var)
        return torch.logsumexp(comp + self.weights.log(), dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return self.means[idx] + self.stds[idx, None] * z

    def mode_of(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest mean (Voronoi cell) of each point ``[..., 2]``."""
        return torch.cdist(x.to(torch.float64).reshape(-1, 2), self.means).argmin(-1).reshape(x.shape[:-1])

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def tilt_linear(self, a, lmbda: float) -> GaussianMixture:
        """p₀·exp(λ·a·x) ∝ GMM with means μ_m + λσ_m²a, weights ∝ π_m·exp(λa·μ_m + ½λ²σ_m²‖a‖²)."""
        a = torch.as_tensor(a, dtype=torch.float64)
        var = self.stds**2
        logw = self.weights.log() + lmbda * self.means @ a + 0.5 * lmbda**2 * var * (a @ a)
        return GaussianMixture(self.means + lmbda * var[:, None] * a, self.stds, torch.softmax(logw, 0))

    def mode_masses(self) -> torch.Tensor:
        """Mass of each Voronoi cell, by a fine grid (the components overlap their cells slightly)."""
        return grid_target(self, None, 0.0).mode_masses


# Four modes inside [-1, 1]² (pipelines clamp images to [0, 1]), unequal weights.
_DEFAULT_MEANS = ((-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5), (0.5, 0.5))
_DEFAULT_STDS = (0.12, 0.12, 0.12, 0.12)
_DEFAULT_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
DEFAULT_MIXTURE = GaussianMixture(_DEFAULT_MEANS, _DEFAULT_STDS, _DEFAULT_WEIGHTS)


def points_to_images(x: torch.Tensor) -> torch.Tensor:
    """2-D points in model space ``[N, 2]`` → pipeline images ``[N, 2, 1, 1]`` in [0, 1]."""
    return (x / 2 + 0.5).reshape(-1, 2, 1, 1)


def images_to_points(images) -> torch.Tensor:
    """Pipeline images (``[N, 2, 1, 1]`` tensor or ``[N, 1, 1, 2]`` array) in [0, 1] → points ``[N, 2]``."""
    t = torch.as_tensor(images)
    if t.dim() == 4 and t.shape[1] != 2 and t.shape[-1] == 2:
        t = t.permute(0, 3, 1, 2)
    return images_to_points_t(t.to(torch.float64))


class LinearReward:
    """r(x) = a·x on model-space points (images are mapped back from [0, 1]); differentiable."""

    differentiable = True

    def __init__(self, a=(1.0, 0.5)):
        self.a = torch.as_tensor(a, dtype=torch.float64)

    def points(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float64) @ self.a.to(x.device)

    def __call__(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        return self.points(images_to_points_t(images)).to(images.dtype)


class SinReward:
    """r(x) = sin(πx₁)·sin(πx₂): +1 on two diagonal modes, −1 on the others; nonlinear, differentiable."""

    differentiable = True

    def points(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(math.pi * x[..., 0]) * torch.sin(math.pi * x[..., 1])

    def __call__(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        return self.points(images_to_points_t(images))


def images_to_points_t(images: torch.Tensor) -> torch.Tensor:
    """Differentiable version of :func:`images_to_points` for ``[N, 2, 1, 1]`` tensors."""
    return (images.reshape(-1, 2) - 0.5) * 2


@dataclass
class GridTarget:
    """A target density tabulated on a grid: its mode masses and mean."""

    mode_masses: torch.Tensor
    mean: torch.Tensor


def grid_target(
    mixture: GaussianMixture,
    reward_points: Callable[[torch.Tensor], torch.Tensor] | None,
    lmbda: float,
    n: int = 801,
    half_width: float = 1.6,
) -> GridTarget:
    """Mode masses and mean of p₀(x)·exp(λ·r(x)) on an n×n grid over [−w, w]² (midpoint rule)."""
    lin = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(lin, lin, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    logp = mixture.log_prob(pts)
    if reward_points is not None and lmbda != 0:
        logp = logp + lmbda * reward_points(pts).to(torch.float64)
    w = torch.softmax(logp, 0)
    masses = torch.zeros(len(mixture.weights), dtype=torch.float64).index_add_(0, mixture.mode_of(pts), w)
    return GridTarget(masses, (w[:, None] * pts).sum(0))


class GMMDenoiser(ModelMixin, ConfigMixin):
    """Exact ε-prediction of a 2-D Gaussian mixture under a DDPM (VP) noise schedule.

    Inputs are ``[N, 2, 1, 1]`` (``in_channels=2``, ``sample_size=1``), so ``DDPMPipeline`` runs it.
    """

    @register_to_config
    def __init__(
        self,
        means=_DEFAULT_MEANS,
        stds=_DEFAULT_STDS,
        weights=_DEFAULT_WEIGHTS,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        in_channels: int = 2,
        out_channels: int = 2,
        sample_size: int = 1,
    ):
        super().__init__()
        if in_channels != 2 or out_channels != 2 or sample_size != 1:
            raise ValueError("GMMDenoiser models 2-D points: in_channels=out_channels=2, sample_size=1")
        self.mixture = GaussianMixture(means, stds, weights)
        sched = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
        )
        # parameters (frozen) so that ModelMixin can report device and dtype
        self.component_means = torch.nn.Parameter(self.mixture.means.float(), requires_grad=False)
        self.register_buffer("alphas_cumprod", sched.alphas_cumprod.to(torch.float64), persistent=False)

    def eps(self, x: torch.Tensor, timestep) -> torch.Tensor:
        """ε*(x, t) = −√(1−ᾱ_t)·∇ₓ log p_t(x) for points ``x [N, 2]``."""
        mix = self.mixture
        t = torch.as_tensor(timestep, device=x.device).long().reshape(-1)
        a = self.alphas_cumprod.to(x.device)[t].reshape(-1, 1, 1)  # [N or 1, 1, 1]
        xd = x.to(torch.float64).unsqueeze(1)  # [N, 1, 2]
        mu = a.sqrt() * mix.means.to(x.device)  # [.., M, 2]
        var = a * mix.stds.to(x.device) ** 2 + 1 - a  # [.., 1, M]
        var = var.reshape(var.shape[0], -1, 1)  # [.., M, 1]
        diff = xd - mu  # [N, M, 2]
        logc = mix.weights.log().to(x.device)[:, None] - 0.5 * (diff**2).sum(-1, keepdim=True) / var - torch.log(var)
        resp = torch.softmax(logc, dim=1)  # [N, M, 1]
        score = -(resp * diff / var).sum(1)  # [N, 2]
        return -(1 - a.reshape(-1, 1)).sqrt() * score

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True, **kwargs):
        eps = self.eps(sample.reshape(-1, 2), timestep).to(sample.dtype).reshape(sample.shape)
        return UNet2DOutput(sample=eps) if return_dict else (eps,)


def bench_scheduler(model: GMMDenoiser | None = None, **overrides) -> DDPMScheduler:
    """A DDPM scheduler matching the model's noise schedule, with x̂₀ clipping off (it would bias the sampler)."""
    cfg = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
    if model is not None:
        cfg = {k: model.config[k] for k in cfg}
    cfg.update(clip_sample=False)
    cfg.update(overrides)
    return DDPMScheduler(**cfg)


@dataclass
class FKRun:
    points: torch.Tensor  # [G, K, 2] final particles
    log_weights: torch.Tensor  # [G, K]
    steering: FKSteering


def run_fk(
    model: GMMDenoiser,
    scheduler,
    reward: Callable,
    *,
    num_groups: int,
    num_particles: int,
    num_inference_steps: int = 100,
    lmbda: float = 1.0,
    potential: str = "diff",
    resample_interval: int = 10,
    ess_threshold: float | None = None,
    resampling: str = "systematic",
    seed: int = 0,
) -> FKRun:
    """FK steering by a small DDPM loop (the escape-hatch loop): resample x_t on x̂₀ rewards, then step."""
    gen = torch.Generator().manual_seed(seed)
    n = num_groups * num_particles
    scheduler.set_timesteps(num_inference_steps)
    steer = FKSteering(
        num_groups,
        num_particles,
        len(scheduler.timesteps),
        potential=potential,
        lmbda=lmbda,
        resampling=resampling,
        resample_interval=resample_interval,
        ess_threshold=ess_threshold,
        generator=gen,
    )
    x = torch.randn(n, 2, 1, 1, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            eps = model(x, t).sample
            last = i == len(scheduler.timesteps) - 1
            if steer.is_update_step(i) and not last:
                x0 = predict_x0(scheduler, eps, t, x)
                idx = steer.update(i, reward(points_to_images(x0.reshape(-1, 2)).clamp(0, 1)))
                x, eps = x[idx], eps[idx]
            x = scheduler.step(eps, t, x, generator=gen).prev_sample
        # final correction on the sample itself
        steer.update(len(scheduler.timesteps) - 1, reward(points_to_images(x.reshape(-1, 2)).clamp(0, 1)))
    return FKRun(x.reshape(num_groups, num_particles, 2), steer.log_weights, steer)


def group_estimates(mixture: GaussianMixture, points: torch.Tensor, log_weights: torch.Tensor):
    """Per-group weighted mode masses ``[G, M]`` and means ``[G, 2]`` of weighted particle sets."""
    w = normalized_weights(log_weights)  # [G, K]
    modes = mixture.mode_of(points)  # [G, K]
    onehot = torch.nn.functional.one_hot(modes, len(mixture.weights)).to(torch.float64)
    masses = (w.unsqueeze(-1) * onehot).sum(1)
    means = (w.unsqueeze(-1) * points.to(torch.float64)).sum(1)
    return masses, means


@dataclass
class Comparison:
    """Estimate against target: mode masses (TV), per-mode z-scores, mean error, with MC standard errors."""

    tv: float
    masses: torch.Tensor
    target_masses: torch.Tensor
    mass_se: torch.Tensor
    max_z: float  # max over modes of |estimate − target| / SE
    mean_err: float
    tv_tolerance: float  # ½·Σ_m z·SE_m: the TV an estimate within z standard errors per mode can have

    def within(self) -> bool:
        return self.tv <= self.tv_tolerance


def compare(per_group_masses: torch.Tensor, per_group_means: torch.Tensor, target: GridTarget, z: float = 4.0):
    """Average per-group estimates; SE from their spread over the G independent groups."""
    g = per_group_masses.shape[0]
    est = per_group_masses.mean(0)
    se = per_group_masses.std(0, unbiased=True) / math.sqrt(g)
    se = se.clamp(min=1e-12)
    err = est - target.mode_masses
    return Comparison(
        tv=float(0.5 * err.abs().sum()),
        masses=est,
        target_masses=target.mode_masses,
        mass_se=se,
        max_z=float((err.abs() / se).max()),
        mean_err=float((per_group_means.mean(0) - target.mean).norm()),
        tv_tolerance=float(0.5 * z * se.sum()),
    )


BENCH_REWARDS = {"linear": LinearReward, "sin": SinReward}
# update intervals (in steps, for 250 steps) per potential: diff tolerates frequent updates
BENCH_INTERVALS = {"diff": 10, "max": 50, "sum": 50, "rt": 50}


def bench_target(model: GMMDenoiser, reward_name: str, lmbda: float):
    """(reward, target): the linear tilt in closed form, any other reward on the grid."""
    if reward_name not in BENCH_REWARDS:
        raise ValueError(f"Unknown bench reward {reward_name!r}; expected one of {sorted(BENCH_REWARDS)}")
    reward = BENCH_REWARDS[reward_name]()
    if reward_name == "linear":
        return reward, grid_target(model.mixture.tilt_linear(reward.a, lmbda), None, 0.0)
    return reward, grid_target(model.mixture, reward.points, lmbda)


def error_table(
    particles=(1, 4, 16, 64),
    potentials=("diff", "max", "sum", "rt"),
    rewards=("linear", "sin"),
    *,
    num_groups: int = 512,
    num_inference_steps: int = 250,
    lmbda: float = 1.0,
    ess_threshold: float | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Error of FK steering against the exact tilted target, for each reward × potential × K."""
    model = GMMDenoiser()
    scheduler = bench_scheduler(model)
    rows = []
    for reward_name in rewards:
        reward, target = bench_target(model, reward_name, lmbda)
        for potential in potentials:
            interval = max(1, round(BENCH_INTERVALS[potential] * num_inference_steps / 250))
            for k in particles:
                run = run_fk(
                    model,
                    scheduler,
                    reward,
                    num_groups=num_groups,
                    num_particles=k,
                    num_inference_steps=num_inference_steps,
                    lmbda=lmbda,
                    potential=potential,
                    resample_interval=interval,
                    ess_threshold=ess_threshold,
                    seed=seed,
                )
                c = compare(*group_estimates(model.mixture, run.points, run.log_weights), target)
                rows.append(
                    dict(
                        reward=reward_name,
                        potential=potential,
                        K=k,
                        interval=interval,
                        tv=c.tv,
                        tv_tolerance=c.tv_tolerance,
                        within=c.within(),
                        mean_err=c.mean_err,
                        max_z=c.max_z,
                    )
                )
                if progress is not None:
                    progress(f"{reward_name} {potential} K={k}: TV {c.tv:.4f}")
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table: one line per reward × potential, TV error (and tolerance) per K."""
    ks = sorted({r["K"] for r in rows})
    head = f"{'reward':<8}{'potential':<10}" + "".join(f"{'K=' + str(k):>18}" for k in ks)
    lines = [head, "-" * len(head)]
    keys = list(dict.fromkeys((r["reward"], r["potential"]) for r in rows))
    for reward, pot in keys:
        cells = {r["K"]: r for r in rows if r["reward"] == reward and r["potential"] == pot}
        line = f"{reward:<8}{pot:<10}"
        for k in ks:
            r = cells.get(k)
            line += f"{r['tv']:>9.4f} (±{r['tv_tolerance']:.3f})" if r else " " * 18
        lines.append(line)
    lines.append(
        "TV: total-variation error of mode masses against the exact tilted target; "
        "(±x): ½·Σ_m 4·SE_m, the Monte-Carlo tolerance."
    )
    return "\n".join(lines)
