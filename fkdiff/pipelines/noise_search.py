"""Noise search (Ma et al. 2025): random, zero-order and path search over initial noises, scored by verifiers.

Every candidate is an initial noise fed to the stock pipeline through ``latents=`` (unconditional
pixel pipelines, which take no ``latents``, run their own two-line loop here). A verifier is any
reward with the contract of :mod:`fkdiff.rewards`: ``(images [N, C, H, W] in [0, 1], prompts) ->
Tensor[N]``. Results carry NFE (denoiser rows evaluated) and verifier calls, so that methods are
compared at equal compute, and every candidate's seed (or its noise tensor where it is not a plain
seed) so the winner regenerates exactly. Search assumes a deterministic sampler (the noise then
determines the image); a warning says so otherwise.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils import BaseOutput

from ..rewards.base import reward_name
from ..smc import check_rewards
from .base import WrappedPipeline
from .fk_steering import OUTPUT_TYPES, _to_output
from .intercept import SchedulerProxy, installed_scheduler, is_stochastic, scheduler_x0

logger = logging.getLogger(__name__)

# stateless, one step() call per step, deterministic: segments of the schedule compose exactly
PATH_SCHEDULERS = {"DDIMScheduler", "EulerDiscreteScheduler", "FlowMatchEulerDiscreteScheduler"}


class _StopSegment(Exception):
    """Raised inside a stock pipeline's loop to end a path-search segment early."""

    def __init__(self, x: torch.Tensor, x0: torch.Tensor):
        super().__init__("segment done")
        self.x, self.x0 = x, x0


class _Prev:
    """Minimal step/denoiser output with ``prev_sample`` / ``sample`` for skipped steps."""

    def __init__(self, t: torch.Tensor):
        self.prev_sample = self.sample = t

    def __getitem__(self, i):
        return (self.prev_sample,)[i]


__all__ = ["NoiseSearchPipeline", "NoiseSearchOutput", "candidate_seeds", "sphere_neighbors"]


def candidate_seeds(seed: int, num: int) -> list[int]:
    """``num`` well-mixed seeds drawn from ``seed`` (consecutive seeds give correlated first normals)."""
    return torch.randint(0, 2**31 - 1, (num,), generator=torch.Generator().manual_seed(seed)).tolist()


def sphere_neighbors(pivot: torch.Tensor, num: int, cosine: float, generator: torch.Generator) -> torch.Tensor:
    """``num`` points n = c·p + √(1−c²)·‖p‖·u, u a random unit vector ⟂ p: ‖n‖ = ‖p‖ and cos(n, p) = c."""
    flat = pivot.reshape(-1).to(torch.float64)
    norm = flat.norm()
    unit = flat / norm
    z = torch.randn(num, flat.numel(), generator=generator, dtype=torch.float64)
    z = z - (z @ unit)[:, None] * unit[None]  # remove the component along the pivot
    z = z / z.norm(dim=1, keepdim=True)
    out = cosine * flat[None] + math.sqrt(max(0.0, 1 - cosine**2)) * norm * z
    return out.reshape(num, *pivot.shape).to(pivot.dtype)


@dataclass
class NoiseSearchOutput(BaseOutput):
    """The best image, its score and noise; every candidate; the best-so-far history; the compute spent."""

    images: Any
    best_score: float
    best_noise: torch.Tensor
    best_seed: int | None
    candidates: list[dict] = field(default_factory=list)  # {"seed", "score", "round", "kind"[, "noise"]}
    history: list[float] = field(default_factory=list)  # best score so far after each round
    nfe: int = 0  # denoiser rows evaluated (CFG counts both halves)
    verifier_calls: int = 0  # images scored
    restarts: list[int] = field(default_factory=list)  # rounds at which zero-order search restarted


class NoiseSearchPipeline(WrappedPipeline):
    """Search over initial noises of a loaded diffusers pipeline (no weights copied)."""

    # ------------------------------------------------------------------ noise
    def noise_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        """Shape of one initial noise, as the pipeline's ``latents=`` takes it (FLUX: packed)."""
        pipe, fam = self.pipe, self.family
        if fam.name == "unconditional":
            s = pipe.unet.config.sample_size
            s = (s, s) if isinstance(s, int) else tuple(s)
            return (pipe.unet.config.in_channels, *s)
        f = pipe.vae_scale_factor
        if fam.name == "flux":
            default = pipe.default_sample_size * f
            h = 2 * (int(height or default) // (f * 2))
            w = 2 * (int(width or default) // (f * 2))
            c = pipe.transformer.config.in_channels // 4
            return ((h // 2) * (w // 2), c * 4)
        den = self._denoiser
        size = den.config.sample_size
        default = (size if isinstance(size, int) else size[0]) * f
        return (den.config.in_channels, int(height or default) // f, int(width or default) // f)

    def noise_from_seed(self, seed: int, height=None, width=None) -> torch.Tensor:
        """The candidate noise of ``seed``: standard normal from ``torch.Generator().manual_seed(seed)`` (CPU),
        which is what the stock pipeline draws for one image with that generator."""
        shape = self.noise_shape(height, width)
        if self.family.name == "flux":
            c4 = shape[1]
            seq = shape[0]
            side = int(math.isqrt(seq))
            # FLUX draws unpacked noise [C, 2h, 2w] and packs it: do the same so seeds mean the same
            unpacked = torch.randn(1, c4 // 4, side * 2, seq // side * 2, generator=torch.Generator().manual_seed(seed))
            return self.pipe._pack_latents(unpacked, 1, c4 // 4, side * 2, seq // side * 2)[0]
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))

    # ------------------------------------------------------------------ generation and scoring
    def generate(self, prompt, noises: torch.Tensor, num_inference_steps: int, **pipe_kwargs) -> torch.Tensor:
        """Images in [0, 1] for a batch of initial noises ``[n, *noise_shape]`` (one prompt for all)."""
        pipe, n = self.pipe, noises.shape[0]
        den = self._denoiser
        noises = noises.to(den.device, den.dtype)
        if self.family.name == "unconditional":
            sched = pipe.scheduler
            sched.set_timesteps(num_inference_steps)
            x = noises * getattr(sched, "init_noise_sigma", 1.0)
            gen = pipe_kwargs.get("generator")
            for t in sched.timesteps:
                x = sched.step(pipe.unet(x, t).sample, t, x, generator=gen).prev_sample
            return (x.float() / 2 + 0.5).clamp(0, 1)
        out = pipe(
            prompt=[prompt] * n,
            latents=noises,
            num_inference_steps=num_inference_steps,
            output_type="latent",
            **pipe_kwargs,
        ).images
        ctx = {"height": pipe_kwargs.get("height"), "width": pipe_kwargs.get("width")}
        return self.family.decode(pipe, out, ctx)

    def _score(self, verifier, images, prompt, counter) -> torch.Tensor:
        n = images.shape[0]
        r = verifier(images, None if prompt is None else [prompt] * n)
        counter["verifier_calls"] += n
        return check_rewards(r, n, name=reward_name(verifier)).to(torch.float64).cpu()

    def _evaluate(self, verifier, prompt, noises, steps, max_batch_size, counter, kw):
        """Scores and images of a batch of noises, generated in chunks of ``max_batch_size``."""
        scores, images = [], []
        size = max_batch_size or noises.shape[0]
        for s in range(0, noises.shape[0], size):
            im = self.generate(prompt, noises[s : s + size], steps, **kw)
            scores.append(self._score(verifier, im, prompt, counter))
            images.append(im.cpu())
        return torch.cat(scores), torch.cat(images)

    def _check(self, prompt, verifier, max_batch_size, output_type, kw):
        if verifier is None or not callable(verifier):
            raise TypeError("`verifier` must be a callable (images, prompts) -> Tensor[N]")
        if output_type not in OUTPUT_TYPES[:3]:
            raise ValueError(f"`output_type` must be one of {list(OUTPUT_TYPES[:3])}, got {output_type!r}")
        if max_batch_size is not None and (not isinstance(max_batch_size, int) or max_batch_size < 1):
            raise ValueError(f"`max_batch_size` must be a positive integer or None, got {max_batch_size!r}")
        if self.family.conditional and not isinstance(prompt, str):
            raise TypeError("`prompt` must be a string (one prompt per search)")
        if not self.family.conditional and prompt is not None:
            raise ValueError(f"{type(self.pipe).__name__} is unconditional: `prompt` must be None")
        if "latents" in kw or "num_images_per_prompt" in kw:
            raise ValueError("`latents` and `num_images_per_prompt` are chosen by the search")
        if is_stochastic(self.pipe.scheduler, kw):
            logger.warning(
                "%s is stochastic here: the image then depends on more than the initial noise, so scores are "
                "noisy and the winner does not regenerate from its noise alone. Prefer a deterministic sampler.",
                type(self.pipe.scheduler).__name__,
            )

    def _finish(self, best_image, output_type, **fields) -> NoiseSearchOutput:
        return NoiseSearchOutput(images=_to_output(best_image[None], output_type, self.pipe), **fields)

    # ------------------------------------------------------------------ random search
    @torch.no_grad()
    def random_search(
        self,
        prompt: str | None = None,
        *,
        verifier: Callable,
        num_candidates: int = 8,
        seed: int = 0,
        max_batch_size: int | None = None,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        **pipe_kwargs,
    ) -> NoiseSearchOutput:
        """Best-of-N: the candidates are the noises of ``candidate_seeds(seed, N)``."""
        self._check(prompt, verifier, max_batch_size, output_type, pipe_kwargs)
        if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
            raise ValueError(f"`num_candidates` must be an integer >= 1, got {num_candidates!r}")
        counter = {"nfe": 0, "verifier_calls": 0}
        h, w = pipe_kwargs.get("height"), pipe_kwargs.get("width")
        seeds = candidate_seeds(seed, num_candidates)
        noises = torch.stack([self.noise_from_seed(s, h, w) for s in seeds])
        with self._counting(counter):
            scores, images = self._evaluate(
                verifier, prompt, noises, num_inference_steps, max_batch_size, counter, pipe_kwargs
            )
        best = int(scores.argmax())
        history, run = [], -math.inf
        for s in scores.tolist():
            run = max(run, s)
            history.append(run)
        cands = [dict(seed=s, score=float(v), round=i, kind="random") for i, (s, v) in enumerate(zip(seeds, scores))]
        return self._finish(
            images[best],
            output_type,
            best_score=float(scores[best]),
            best_noise=noises[best],
            best_seed=seeds[best],
            candidates=cands,
            history=history,
            **counter,
        )

    # ------------------------------------------------------------------ zero-order search
    @torch.no_grad()
    def zero_order_search(
        self,
        prompt: str | None = None,
        *,
        verifier: Callable,
        num_neighbors: int = 4,
        num_rounds: int = 4,
        cosine: float | None = 0.95,
        step_size: float | None = None,
        seed: int = 0,
        max_batch_size: int | None = None,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        **pipe_kwargs,
    ) -> NoiseSearchOutput:
        """Zero-order search: K neighbours of the pivot per round, on the sphere of the pivot's norm at cosine
        similarity ``cosine`` (or ``n = ‖p‖·(p + s·z)/‖p + s·z‖`` with ``step_size`` s); the pivot moves to the best
        neighbour when it improves, else the search restarts from a fresh noise. The best so far is kept.

        The initial pivot is the noise of ``seed``; neighbours and restarts are drawn from
        ``torch.Generator().manual_seed(seed)`` and saved with each candidate (``noise``).
        """
        self._check(prompt, verifier, max_batch_size, output_type, pipe_kwargs)
        for name, val in (("num_neighbors", num_neighbors), ("num_rounds", num_rounds)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {val!r}")
        if step_size is None:
            if cosine is None or not (0.0 < float(cosine) < 1.0):
                raise ValueError(f"`cosine` must be in (0, 1) (exclusive), got {cosine!r}")
        elif not (float(step_size) > 0 and math.isfinite(step_size)):
            raise ValueError(f"`step_size` must be a finite number > 0, got {step_size!r}")
        counter = {"nfe": 0, "verifier_calls": 0}
        h, w = pipe_kwargs.get("height"), pipe_kwargs.get("width")
        gen = torch.Generator().manual_seed(seed)
        cands, history, restarts = [], [], []

        def evaluate(noises):
            with self._counting(counter):
                return self._evaluate(
                    verifier, prompt, noises, num_inference_steps, max_batch_size, counter, pipe_kwargs
                )

        pivot = self.noise_from_seed(seed, h, w)
        (pivot_score,), pivot_img = evaluate(pivot[None])
        pivot_score = float(pivot_score)
        cands.append(dict(seed=seed, score=pivot_score, round=0, kind="pivot"))
        best = (pivot_score, pivot, seed, pivot_img[0])
        history.append(best[0])
        for rnd in range(1, num_rounds + 1):
            if step_size is None:
                neigh = sphere_neighbors(pivot, num_neighbors, float(cosine), gen)
            else:
                z = torch.randn((num_neighbors, *pivot.shape), generator=gen, dtype=pivot.dtype)
                moved = pivot[None] + step_size * z
                dims = tuple(range(1, moved.dim()))
                neigh = moved * (pivot.norm() / moved.flatten(1).norm(dim=1)).reshape(-1, *([1] * len(dims)))
            scores, images = evaluate(neigh)
            for j in range(num_neighbors):
                cands.append(
                    dict(seed=None, noise=neigh[j].clone(), score=float(scores[j]), round=rnd, kind="neighbor")
                )
            j = int(scores.argmax())
            if float(scores[j]) > pivot_score:
                pivot, pivot_score = neigh[j], float(scores[j])
                if pivot_score > best[0]:
                    best = (pivot_score, pivot, None, images[j])
            elif rnd < num_rounds:  # stuck: restart from a fresh noise (a new pivot, scored)
                restarts.append(rnd)
                pivot = torch.randn(pivot.shape, generator=gen, dtype=pivot.dtype)
                (s,), img = evaluate(pivot[None])
                pivot_score = float(s)
                cands.append(dict(seed=None, noise=pivot.clone(), score=pivot_score, round=rnd, kind="restart"))
                if pivot_score > best[0]:
                    best = (pivot_score, pivot, None, img[0])
            history.append(best[0])
        return self._finish(
            best[3],
            output_type,
            best_score=best[0],
            best_noise=best[1],
            best_seed=best[2],
            candidates=cands,
            history=history,
            restarts=restarts,
            **counter,
        )

    # ------------------------------------------------------------------ search over paths
    def _segment_runner(self, prompt, pipe_kwargs: dict):
        """A function ``run(x, a, b) -> (x, x̂₀)`` taking steps a..b−1 of the schedule from latents ``x``.

        Conditional pipelines run their stock ``__call__``: steps before ``a`` are skipped (the denoiser
        is not called and the scheduler's step index advances), and the call stops after step b−1.
        """
        pipe, fam = self.pipe, self.family
        sched = pipe.scheduler
        name = type(sched).__name__
        if name not in PATH_SCHEDULERS or is_stochastic(sched, pipe_kwargs):
            raise ValueError(
                "path search runs segments of the schedule and needs a stateless, single-call, deterministic "
                f"scheduler ({', '.join(sorted(PATH_SCHEDULERS))}; DDIM with eta=0), got {name}"
            )
        if fam.name == "unconditional":

            def run(x, a, b):
                x0 = x
                for k in range(a, b):
                    t = sched.timesteps[k]
                    eps = pipe.unet(sched.scale_model_input(x, t), t).sample
                    out = sched.step(eps, t, x)
                    x0 = scheduler_x0(sched, out, eps, t, x)
                    x = out.prev_sample
                return x, x0

            return run

        den = self._denoiser

        def run(x, a, b):
            state = {"k": 0}
            sig = inspect.signature(sched.step)

            def on_step(real_step, *args, **kwargs):
                bound = sig.bind(*args, **kwargs)
                arg = bound.arguments
                k = state["k"]
                state["k"] = k + 1
                if k < a:  # skipped: keep the latents, advance the step index as step() would
                    if getattr(sched, "_step_index", None) is None and hasattr(sched, "_init_step_index"):
                        sched._init_step_index(arg["timestep"])
                    if getattr(sched, "_step_index", None) is not None:
                        sched._step_index += 1
                    return (arg["sample"],) if not arg.get("return_dict", True) else _Prev(arg["sample"])
                want_dict = arg.get("return_dict", True)
                arg["return_dict"] = True
                out = real_step(*bound.args, **bound.kwargs)
                if k == b - 1 and b < len(sched.timesteps):
                    x0 = scheduler_x0(sched, out, arg["model_output"], arg["timestep"], arg["sample"])
                    raise _StopSegment(out.prev_sample, x0)
                return out if want_dict else out.to_tuple()

            forward = den.forward

            def maybe_skip(*args, **kwargs):
                if state["k"] < a:
                    first = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
                    zeros = torch.zeros_like(first)
                    return (zeros,) if not kwargs.get("return_dict", True) else _Prev(zeros)
                return forward(*args, **kwargs)

            den.forward = maybe_skip
            self._skip_now = lambda: state["k"] < a
            try:
                with installed_scheduler(pipe, SchedulerProxy(sched, on_step)):
                    latents = pipe(
                        prompt=[prompt] * x.shape[0],
                        latents=x / float(getattr(sched, "init_noise_sigma", 1.0)),
                        output_type="latent",
                        **pipe_kwargs,
                    ).images
            except _StopSegment as stop:
                return stop.x, stop.x0
            finally:
                del den.forward
                self._skip_now = None
            return latents, latents

        return run

    def _renoise(self, x: torch.Tensor, i: int, j: int, seeds: list[int]) -> torch.Tensor:
        """Forward process from the level of step i back to the noisier level of step j, with ε per seed:
        VP: √(ᾱ_j/ᾱ_i)·x + √(1 − ᾱ_j/ᾱ_i)·ε; flow matching: a·x + √(σ_j² − a²σ_i²)·ε, a = (1−σ_j)/(1−σ_i);
        σ-space (Euler): x + √(σ_j² − σ_i²)·ε."""
        if j == i:
            return x
        sched = self.pipe.scheduler
        eps = torch.stack([torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        eps, xd = eps.to(x.device).double(), x.double()
        name = type(sched).__name__
        if name.startswith("FlowMatch"):
            si, sj = float(sched.sigmas[i]), float(sched.sigmas[j])
            a = (1 - sj) / (1 - si)
            out = a * xd + math.sqrt(max(0.0, sj**2 - (a * si) ** 2)) * eps
        elif name == "EulerDiscreteScheduler":
            si, sj = float(sched.sigmas[i]), float(sched.sigmas[j])
            out = xd + math.sqrt(max(0.0, sj**2 - si**2)) * eps
        else:
            acp = sched.alphas_cumprod
            ratio = (acp[int(sched.timesteps[j])] / acp[int(sched.timesteps[i])]).to(torch.float64)
            out = ratio.sqrt() * xd + (1 - ratio).sqrt() * eps
        return out.to(x.dtype)

    @torch.no_grad()
    def path_search(
        self,
        prompt: str | None = None,
        *,
        verifier: Callable,
        num_paths: int = 4,
        num_branches: int = 4,
        start_step: int | None = None,
        backward_steps: int = 2,
        forward_steps: int = 4,
        seed: int = 0,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        **pipe_kwargs,
    ) -> NoiseSearchOutput:
        """Search over paths: N noises (``candidate_seeds(seed, N)``) are denoised to step ``start_step``; then,
        until the end of the schedule, each path branches into M by re-noising ``backward_steps`` steps back
        and denoising ``forward_steps`` forward, the N·M branches are scored on x̂₀ and the best N kept.

        Each candidate records its lineage (initial seed and the seed of every re-noising), from which
        :meth:`path_replay` regenerates it exactly.
        """
        self._check(prompt, verifier, None, output_type, pipe_kwargs)
        for name, val, low in (
            ("num_paths", num_paths, 1),
            ("num_branches", num_branches, 1),
            ("backward_steps", backward_steps, 0),
            ("forward_steps", forward_steps, 1),
        ):
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {val!r}")
        if forward_steps <= backward_steps:
            raise ValueError(f"`forward_steps` ({forward_steps}) must exceed `backward_steps` ({backward_steps})")
        steps = num_inference_steps
        i0 = steps // 2 if start_step is None else start_step
        if not (0 <= i0 < steps):
            raise ValueError(f"`start_step` must be in [0, {steps}), got {start_step!r}")
        counter = {"nfe": 0, "verifier_calls": 0}
        run = self._start_segments(prompt, steps, pipe_kwargs)
        gen = torch.Generator().manual_seed(seed)
        lineages = [dict(seed=s, branch_seeds=[]) for s in candidate_seeds(seed, num_paths)]
        cands, history = [], []
        h, w = pipe_kwargs.get("height"), pipe_kwargs.get("width")
        ctx = {"height": h, "width": w}
        with self._counting(counter):
            x = self._initial(torch.stack([self.noise_from_seed(lin["seed"], h, w) for lin in lineages]))
            x, _ = run(x, 0, i0)
            i, rnd = i0, 0
            while i < steps:
                rnd += 1
                j = max(0, i - backward_steps)
                end = min(steps, j + forward_steps)
                seeds = torch.randint(0, 2**62, (len(lineages), num_branches), generator=gen).tolist()
                xs = x.repeat_interleave(num_branches, 0)
                flat_seeds = [s for row in seeds for s in row]
                xs, x0 = run(self._renoise(xs, i, j, flat_seeds), j, end)
                target = xs if end == steps else x0  # final round: score the samples themselves
                scores = self._score(verifier, self.family.decode(self.pipe, target, ctx), prompt, counter)
                keep = scores.argsort(descending=True)[:num_paths]
                new_lin = []
                for idx in range(len(flat_seeds)):
                    p, m = divmod(idx, num_branches)
                    lin = dict(seed=lineages[p]["seed"], branch_seeds=lineages[p]["branch_seeds"] + [flat_seeds[idx]])
                    cands.append(dict(lin, score=float(scores[idx]), round=rnd, kind="branch", step=end))
                    if idx in keep.tolist():
                        new_lin.append((float(scores[idx]), lin, idx))
                new_lin.sort(key=lambda e: -e[0])
                lineages = [e[1] for e in new_lin]
                x = xs[torch.tensor([e[2] for e in new_lin], device=xs.device)]
                history.append(new_lin[0][0])
                i = end
        final_images = self.family.decode(self.pipe, x, ctx).cpu()
        best = lineages[0]
        return self._finish(
            final_images[0],
            output_type,
            best_score=history[-1],
            best_noise=self.noise_from_seed(best["seed"], h, w),
            best_seed=best["seed"],
            candidates=cands,
            history=history,
            **counter,
        )

    @torch.no_grad()
    def path_replay(
        self,
        prompt,
        lineage: dict,
        *,
        start_step: int | None = None,
        backward_steps: int = 2,
        forward_steps: int = 4,
        num_inference_steps: int = 50,
        **pipe_kwargs,
    ) -> torch.Tensor:
        """Regenerate a path-search candidate (images in [0, 1], ``[1, C, H, W]``) from its lineage."""
        steps = num_inference_steps
        run = self._start_segments(prompt, steps, pipe_kwargs)
        h, w = pipe_kwargs.get("height"), pipe_kwargs.get("width")
        x = self._initial(self.noise_from_seed(lineage["seed"], h, w)[None])
        i = steps // 2 if start_step is None else start_step
        x, _ = run(x, 0, i)
        for s in lineage["branch_seeds"]:
            j = max(0, i - backward_steps)
            end = min(steps, j + forward_steps)
            x, _ = run(self._renoise(x, i, j, [s]), j, end)
            i = end
        return self.family.decode(self.pipe, x, {"height": h, "width": w})

    def _start_segments(self, prompt, steps: int, pipe_kwargs: dict):
        """Set the schedule (for the unconditional loop) and return the segment runner."""
        if "generator" in pipe_kwargs:
            raise ValueError("path search draws its own noises: do not pass `generator`")
        if self.family.name == "unconditional":
            self.pipe.scheduler.set_timesteps(steps)
        return self._segment_runner(prompt, dict(pipe_kwargs, num_inference_steps=steps))

    def _initial(self, noises: torch.Tensor) -> torch.Tensor:
        """Initial latents of the loop: noise × the scheduler's ``init_noise_sigma``."""
        den = self._denoiser
        return noises.to(den.device, den.dtype) * float(getattr(self.pipe.scheduler, "init_noise_sigma", 1.0))

    # ------------------------------------------------------------------ regeneration
    @torch.no_grad()
    def regenerate(self, prompt, noise: torch.Tensor, num_inference_steps: int = 50, **pipe_kwargs) -> torch.Tensor:
        """The image (in [0, 1], ``[1, C, H, W]``) of one saved noise: how a winner is reproduced."""
        return self.generate(prompt, noise[None], num_inference_steps, **pipe_kwargs)
