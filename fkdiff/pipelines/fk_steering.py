"""FKSteeringPipeline: Feynman–Kac steering (Singhal et al. 2025) of stock diffusers pipelines.

The stock pipeline runs its own loop for G·K particles (K per prompt, prompt-major). A scheduler
proxy intercepts ``step()``: after the real step, at update steps, it decodes x̂₀ of every particle,
scores it, updates the log-weights of :class:`fkdiff.smc.FKSteering`, and reorders the new latents and
the scheduler's per-sample state by the resampled ancestors (within each prompt's group only). The
final latents are decoded once, scored, and the final correction makes the target p₀·exp(λ·r)
whichever potential is used.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.utils import BaseOutput

from ..rewards.base import reward_name
from ..smc import FKSteering, SteeringTrace, check_rewards
from ..smc.correctors import anneal_increment, cfg_increment, corrector_kappa, product_increment
from .base import WrappedPipeline
from .families import vae_decode
from .intercept import (
    UNSUPPORTED_SCHEDULERS,
    SchedulerProxy,
    chunked_forward,
    installed_scheduler,
    is_stochastic,
    reorder_scheduler_state,
    scheduler_x0,
)

logger = logging.getLogger(__name__)

__all__ = ["FKSteeringPipeline", "FKSteeringOutput"]

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class FKSteeringOutput(BaseOutput):
    """Selected images, per-particle rewards and log-weights ``[G, K]``, and the SMC trace.

    ``images`` holds one image per prompt (or group), or all G·K particles when
    ``selection="all"``; ``selected`` gives their flat particle indices.
    """

    images: Any
    rewards: torch.Tensor
    log_weights: torch.Tensor
    trace: SteeringTrace
    selected: torch.Tensor
    latents: torch.Tensor | None = None


def _zero_reward(images, prompts=None):
    """No reward tilt (correctors alone)."""
    return torch.zeros(images.shape[0], device=images.device)


def _vp_kappa(sched, i: int, timestep) -> float:
    """κ of the FK correctors for the step from ``timesteps[i]`` to the next one (ᾱ = 1, or DDIM's final
    ᾱ, after the last)."""
    acp = sched.alphas_cumprod
    t = int(timestep)
    ts = sched.timesteps
    if i + 1 < len(ts):
        a_next = float(acp[int(ts[i + 1])])
    else:
        a_next = float(getattr(sched, "final_alpha_cumprod", torch.tensor(1.0)))
    return corrector_kappa(float(acp[t]), max(a_next, float(acp[t])))


def _chunks(n: int, size: int | None):
    size = size or n
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def _to_output(images: torch.Tensor, output_type: str, pipe):
    """Images in [0, 1] ``[N, C, H, W]`` → the requested output type."""
    if output_type == "pt":
        return images
    arr = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return arr
    return pipe.numpy_to_pil(arr)


class FKSteeringPipeline(WrappedPipeline):
    """FK steering around a loaded diffusers pipeline (no weights are copied).

    Build it with :meth:`from_pretrained` (any supported model id or local folder) or
    :meth:`from_pipe` (an already-loaded pipeline). Calling it runs the stock pipeline for
    ``num_particles`` particles per prompt and steers them toward p₀·exp(λ·reward).
    """

    # ------------------------------------------------------------------ helpers
    def decode(
        self, latents: torch.Tensor, decoder=None, max_batch_size: int | None = None, ctx: dict | None = None
    ) -> torch.Tensor:
        """Latents (or x̂₀) → images in [0, 1], chunked; ``decoder`` overrides the pipeline's VAE.

        ``ctx`` carries call settings a family may need (FLUX: ``height`` and ``width`` to unpack).
        """
        parts = []
        for sl in _chunks(latents.shape[0], max_batch_size):
            if decoder is None:
                parts.append(self.family.decode(self.pipe, latents[sl], ctx))
            elif isinstance(decoder, torch.nn.Module) and hasattr(decoder, "decode"):
                parts.append(vae_decode(decoder, self.family.to_spatial(self.pipe, latents[sl], ctx)))
            else:
                parts.append(decoder(self.family.to_spatial(self.pipe, latents[sl], ctx)))
        return torch.cat(parts, 0)

    def score(self, reward, images, prompts, max_batch_size=None) -> torch.Tensor:
        """Reward of every image, chunked and validated (one finite score per image, in order)."""
        n = images.shape[0]
        outs = []
        for sl in _chunks(n, max_batch_size):
            r = reward(images[sl], None if prompts is None else prompts[sl])
            outs.append(check_rewards(r, sl.stop - sl.start, name=reward_name(reward)))
        return torch.cat(outs).to(torch.float64)

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        *,
        reward: Callable | None = None,
        num_particles: int = 4,
        potential: str = "diff",
        lmbda: float = 10.0,
        resample_start: int = 0,
        resample_end: int | None = None,
        resample_interval: int = 5,
        ess_threshold: float | None = None,
        resampling: str = "systematic",
        selection: str = "best",
        max_batch_size: int | None = None,
        reward_guidance: float = 0.0,
        intermediate_decoder=None,
        corrector: str | None = None,
        anneal_beta: float = 1.0,
        second_prompt: str | list[str] | None = None,
        second_model: torch.nn.Module | None = None,
        batch_size: int = 1,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        **pipe_kwargs,
    ):
        """Steer the stock pipeline.

        Args beyond the base pipeline's own (which pass through: ``guidance_scale``, ``height``,
        ``eta``, ``negative_prompt``, ``callback_on_step_end``, ...):
            reward: callable ``(images [N, C, H, W] in [0, 1], prompts | None) -> Tensor[N]``.
            num_particles: K >= 1 particles per prompt (or per group for unconditional pipelines).
            potential: ``diff`` (default), ``max``, ``sum`` or ``rt``; lmbda: λ of p₀·exp(λ·r).
            resample_start, resample_end, resample_interval: weight-update steps (see FKSteering).
            ess_threshold: resample a group only when ESS < threshold·K (None: at every update).
            resampling: ``systematic``, ``stratified``, ``multinomial`` or ``residual``.
            selection: ``best`` (highest final weight), ``sample`` (a draw by weight) or ``all``.
            max_batch_size: chunk the denoiser, the decodes and the reward to this many rows.
            reward_guidance: scale of the gradient-guided proposal (0: off; needs a differentiable
                reward and a DDPM scheduler); its proposal ratio is added to the weights.
            intermediate_decoder: a cheaper decoder for x̂₀ at update steps (e.g. a TAESD
                ``AutoencoderTiny``, or a callable latents → images in [0, 1]); the final images always
                come from the pipeline's own decoder.
            corrector: FK-corrector weights (Skreta et al. 2025), added to the steering weights:
                ``"cfg"`` makes CFG sample p(x|c)^w·p(x)^(1−w) (w = ``guidance_scale``; SD/SDXL; uses the
                conditional and unconditional predictions CFG computes anyway), ``"anneal"`` samples
                p^β with β = ``anneal_beta`` (the sampler is driven by β·ε̂ from noise N(0, I/β);
                unconditional pipelines, or SD/SDXL without CFG), ``"product"`` samples p₁·p₂ (the sampler is
                driven by ε₁ + ε₂ from noise N(0, I/2)): p₂ is the same SD model under ``second_prompt``
                (CFG off), or ``second_model``, a denoiser sharing the latent space (unconditional, SD, SDXL).
                Needs DDPMScheduler or DDIM with eta > 0. ``reward`` may then be None (no reward tilt).
            batch_size: number of groups for unconditional pipelines.
        """
        pipe, fam = self.pipe, self.family
        if corrector not in (None, "cfg", "anneal", "product"):
            raise ValueError(f"`corrector` must be one of [None, 'cfg', 'anneal', 'product'], got {corrector!r}")
        if reward is None and corrector is not None:
            reward = _zero_reward
        if reward is None or not callable(reward):
            raise TypeError("`reward` must be a callable (images, prompts) -> Tensor[N]")
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"`num_particles` must be an integer >= 1, got {num_particles!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")
        if selection not in ("best", "sample", "all"):
            raise ValueError(f"`selection` must be one of ['best', 'sample', 'all'], got {selection!r}")
        if max_batch_size is not None and (not isinstance(max_batch_size, int) or max_batch_size < 1):
            raise ValueError(f"`max_batch_size` must be a positive integer or None, got {max_batch_size!r}")
        if not math.isfinite(float(reward_guidance)) or reward_guidance < 0:
            raise ValueError(f"`reward_guidance` must be a finite number >= 0, got {reward_guidance!r}")
        if reward_guidance > 0 and not getattr(reward, "differentiable", False):
            raise ValueError("`reward_guidance` > 0 needs a differentiable reward (attribute `differentiable = True`)")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError("`generator` must be a single torch.Generator (it seeds all K·G particles)")
        sched_name = type(pipe.scheduler).__name__
        if sched_name in UNSUPPORTED_SCHEDULERS:
            raise ValueError(
                f"{sched_name} cannot be steered: {UNSUPPORTED_SCHEDULERS[sched_name]}. Swap in a stochastic "
                "scheduler, e.g. pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config) with eta=1.0, "
                "or EulerAncestralDiscreteScheduler / DDPMScheduler."
            )
        if reward_guidance > 0 and (sched_name != "DDPMScheduler" or fam.name not in ("unconditional", "sd", "sdxl")):
            raise ValueError(
                "`reward_guidance` needs a DDPMScheduler (exact Gaussian transitions) on an SD, SDXL or "
                f"unconditional pipeline; got {type(pipe).__name__} with {sched_name}"
            )
        cfg_scale = self._check_corrector(corrector, anneal_beta, pipe_kwargs, second_prompt, second_model)
        noise_scale = {"anneal": anneal_beta, "product": 2.0}.get(corrector, 1.0)  # initial noise N(0, I/Σβ)
        k = num_particles
        if fam.conditional:
            if prompt is None:
                raise ValueError("`prompt` is required for this pipeline (a string or a list of strings)")
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not prompts or not all(isinstance(p, str) for p in prompts):
                raise TypeError("`prompt` must be a string or a non-empty list of strings")
            g = len(prompts)
            for key in ("negative_prompt",):
                neg = pipe_kwargs.get(key)
                if isinstance(neg, list) and len(neg) != g:
                    raise ValueError(f"`{key}` must have {g} entries (one per prompt), got {len(neg)}")
            particle_prompts = [p for p in prompts for _ in range(k)]
            call = dict(prompt=prompts, num_images_per_prompt=k)
        else:
            if prompt is not None:
                raise ValueError(f"{type(pipe).__name__} is unconditional: pass `batch_size` groups, not `prompt`")
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}")
            g, particle_prompts = batch_size, None
            call = dict(batch_size=batch_size * k)

        # resampling draws get their own generator, derived without consuming the user's stream, so
        # that the noise of the stock loop is untouched (λ = 0 reproduces the stock pipeline)
        seed = generator.initial_seed() if generator is not None else int(torch.randint(0, 2**62, (1,)).item())
        smc_gen = torch.Generator().manual_seed((seed * 6364136223846793005 + 1442695040888963407) % 2**63)
        state: dict[str, Any] = dict(step=0, steer=None, num_steps=None)
        size = {"height": pipe_kwargs.get("height"), "width": pipe_kwargs.get("width")}
        step_kwargs_seen: dict = {}

        def on_step(real_step, *args, **kwargs):
            sched = pipe.__dict__["scheduler"]._real
            sig = state.get("signature")
            if sig is None:  # once per call: inspect.signature costs ~0.1 ms
                sig = state["signature"] = inspect.signature(real_step)
            params = sig.parameters
            bound = sig.bind(*args, **kwargs)
            a = bound.arguments
            model_output, timestep, sample = a["model_output"], a["timestep"], a["sample"]
            want_dict = a.get("return_dict", True)
            if "generator" in params and a.get("generator") is None and generator is not None:
                a["generator"] = generator  # pipelines that never pass one (SD3, FLUX)
            a["return_dict"] = True
            if state["steer"] is None:
                n_calls = len(sched.timesteps)
                t_steps = (n_calls + 1) // 2 if hasattr(sched, "state_in_first_order") else n_calls
                state["num_steps"] = t_steps
                state["steer"] = FKSteering(
                    g,
                    k,
                    t_steps,
                    potential=potential,
                    lmbda=lmbda,
                    resampling=resampling,
                    resample_start=resample_start,
                    resample_end=resample_end,
                    resample_interval=resample_interval,
                    ess_threshold=ess_threshold,
                    generator=smc_gen,
                )
                step_kwargs_seen.update({kk: v for kk, v in a.items() if kk in ("eta", "s_churn")})
                if corrector is not None and not is_stochastic(sched, step_kwargs_seen):
                    raise ValueError(
                        f"`corrector={corrector!r}` needs the stochastic (DDPM) sampler its weights are derived for: "
                        "DDPMScheduler, or DDIMScheduler with eta > 0"
                    )
                if k > 1 and not is_stochastic(sched, step_kwargs_seen):
                    logger.warning(
                        "%s with these settings is deterministic: resampled copies of a particle stay identical. "
                        "Use a stochastic sampler (DDPM, DDIM with eta > 0, Euler-ancestral, SDE solvers).",
                        type(sched).__name__,
                    )
            steer: FKSteering = state["steer"]
            i = state["step"]
            if noise_scale != 1.0 and i == 0 and not state.get("sample_scaled"):
                a["sample"] = sample = sample / math.sqrt(noise_scale)  # initial noise N(0, I/Σβ)
                state["sample_scaled"] = True
            if corrector is not None:
                kappa = _vp_kappa(sched, i, timestep)
                if corrector == "cfg":
                    eps_u, eps_c = state["eps"].chunk(2)
                    steer.add_log_weights(cfg_increment(eps_u, eps_c, cfg_scale, kappa), "CFG corrector")
                elif corrector == "product":
                    inc = product_increment(state["eps_experts"], [1.0, 1.0], kappa)
                    steer.add_log_weights(inc, "product-of-experts corrector")
                else:
                    steer.add_log_weights(anneal_increment(state["eps"], anneal_beta, kappa), "annealing corrector")
            guided = reward_guidance > 0 and i < state["num_steps"] - 1
            if guided:
                grad = self._reward_grad(
                    reward,
                    sched,
                    timestep,
                    sample,
                    particle_prompts,
                    lmbda,
                    intermediate_decoder,
                    max_batch_size,
                    state.get("denoiser_call"),
                )
            out = real_step(*bound.args, **bound.kwargs)
            if guided:
                out = self._guide(sched, out, timestep, sample, grad, reward_guidance, steer)
            complete = bool(getattr(sched, "state_in_first_order", True))
            if complete:
                state["step"] = i + 1
                if i < state["num_steps"] - 1 and steer.is_update_step(i):
                    x0 = scheduler_x0(sched, out, model_output, timestep, sample)
                    images = self.decode(x0, intermediate_decoder, max_batch_size, size)
                    idx = steer.update(i, self.score(reward, images, particle_prompts, max_batch_size))
                    if not torch.equal(idx, torch.arange(idx.numel(), device=idx.device)):
                        idx = idx.to(out.prev_sample.device)
                        out.prev_sample = out.prev_sample[idx]
                        reorder_scheduler_state(sched, idx, sample)
            return out if want_dict else out.to_tuple()

        def record_call(module, args, kwargs):
            if not torch.is_grad_enabled():  # the stock loop's call, not our own gradient call
                state["denoiser_call"] = (args, kwargs)

        def scale_first_input(module, args, kwargs):
            if torch.is_grad_enabled() or state.get("input_scaled"):
                return None
            state["input_scaled"] = True  # the first call sees the initial noise: make it N(0, I/Σβ)
            if args:
                return (args[0] / math.sqrt(noise_scale), *args[1:]), kwargs
            key = next(kk for kk, v in kwargs.items() if isinstance(v, torch.Tensor))
            return args, {**kwargs, key: kwargs[key] / math.sqrt(noise_scale)}

        def capture_output(module, args, kwargs, output):
            if torch.is_grad_enabled():
                return None
            eps = output[0] if isinstance(output, tuple) else output.sample
            state["eps"] = eps
            if corrector == "anneal":
                new = eps * anneal_beta  # the sampler is driven by β·ε̂
            elif corrector == "product":
                eps2 = self._second_expert(module, args, kwargs, second_model, second_embeds)
                if eps2.shape != eps.shape:
                    raise ValueError(
                        f"the second expert's prediction has shape {tuple(eps2.shape)}, the first's "
                        f"{tuple(eps.shape)}: the two models must share a latent space"
                    )
                state["eps_experts"] = (eps, eps2)
                new = eps + eps2  # the sampler is driven by ε₁ + ε₂
            else:
                return None
            if isinstance(output, tuple):
                return (new, *output[1:])
            output.sample = new
            return output

        proxy = SchedulerProxy(pipe.scheduler, on_step)
        denoiser = self._denoiser
        hooks = []
        if reward_guidance > 0:
            hooks.append(denoiser.register_forward_pre_hook(record_call, with_kwargs=True))
        if corrector is not None:
            hooks.append(denoiser.register_forward_hook(capture_output, with_kwargs=True))
        if noise_scale != 1.0:
            hooks.append(denoiser.register_forward_pre_hook(scale_first_input, with_kwargs=True))
        second_embeds = None
        if corrector == "product" and second_prompt is not None:
            p2 = [second_prompt] * g if isinstance(second_prompt, str) else list(second_prompt)
            if len(p2) != g:
                raise ValueError(f"`second_prompt` must be a string or a list of {g} strings, got {len(p2)}")
            emb, _ = pipe.encode_prompt(p2, denoiser.device, k, False)
            second_embeds = emb
        try:
            with installed_scheduler(pipe, proxy), chunked_forward(denoiser, max_batch_size):
                result = self._run_stock(call, num_inference_steps, generator, pipe_kwargs)
        finally:
            for h in hooks:
                h.remove()
        steer = state["steer"]
        if steer is None:
            raise RuntimeError("the pipeline never called scheduler.step(); nothing was steered")
        raw = result.images
        if fam.raw_output_type == "latent":
            latents = raw
            images = self.decode(latents, None, max_batch_size, size)
        else:  # pixel-space pipelines return images in [0, 1]
            images = torch.as_tensor(np.asarray(raw)) if not isinstance(raw, torch.Tensor) else raw
            latents = images * 2 - 1
        rewards = self.score(reward, images, particle_prompts, max_batch_size)
        steer.update(state["num_steps"] - 1, rewards)
        sel = steer.select(selection, smc_gen)
        chosen = latents[sel] if output_type == "latent" else _to_output(images[sel], output_type, pipe)
        out = FKSteeringOutput(
            images=chosen,
            rewards=rewards.reshape(g, k).cpu(),
            log_weights=steer.log_weights.cpu(),
            trace=steer.trace,
            selected=sel.cpu(),
            latents=latents[sel],
        )
        return out if return_dict else (out.images,)

    def _second_expert(self, module, args, kwargs, second_model, second_embeds) -> torch.Tensor:
        """ε₂ for the product corrector: ``second_model`` on the same inputs, or the pipeline's own denoiser
        (its forward, bypassing hooks) under the second prompt's embeddings."""
        if second_model is not None:
            if self.family.conditional:
                out = second_model(*args, **kwargs)
            else:
                out = second_model(*args[:2], return_dict=False)
        else:
            key = "encoder_hidden_states"
            if key in kwargs:
                kwargs = {**kwargs, key: second_embeds.to(kwargs[key].dtype)}
            else:  # positional (sample, timestep, encoder_hidden_states)
                args = (*args[:2], second_embeds.to(args[2].dtype), *args[3:])
            out = module.forward(*args, **kwargs)
        return out[0] if isinstance(out, tuple) else out.sample

    def _check_corrector(self, corrector, anneal_beta, pipe_kwargs, second_prompt=None, second_model=None) -> float:
        """Validate the corrector settings; return the CFG scale w (1.0 when CFG is off)."""
        fam, pipe = self.family, self.pipe
        default_w = {"sd": 7.5, "sdxl": 5.0}.get(fam.name, 1.0)
        w = float(pipe_kwargs.get("guidance_scale", default_w))
        if corrector is None:
            return w
        sched_name = type(pipe.scheduler).__name__
        if sched_name not in ("DDPMScheduler", "DDIMScheduler"):
            raise ValueError(
                f"`corrector={corrector!r}` needs a VP scheduler with the DDPM transition (DDPMScheduler, or "
                f"DDIMScheduler with eta > 0), got {sched_name}"
            )
        if pipe.scheduler.config.get("prediction_type", "epsilon") != "epsilon":
            raise ValueError("FK correctors are derived for epsilon-prediction models")
        if corrector == "cfg":
            if fam.name not in ("sd", "sdxl") or w <= 1:
                raise ValueError(
                    "`corrector='cfg'` needs classifier-free guidance: an SD or SDXL pipeline with guidance_scale > 1"
                )
            if float(pipe_kwargs.get("guidance_rescale", 0.0)) != 0.0:
                raise ValueError("`corrector='cfg'` cannot correct `guidance_rescale`; leave it at 0")
        elif corrector == "product":
            if (second_prompt is None) == (second_model is None):
                raise ValueError("`corrector='product'` needs exactly one of `second_prompt` and `second_model`")
            if second_prompt is not None and fam.name != "sd":
                raise ValueError("`second_prompt` needs a Stable Diffusion 1.x/2.x pipeline")
            if fam.conditional and (fam.name not in ("sd", "sdxl") or w > 1):
                raise ValueError(
                    "`corrector='product'` multiplies conditional experts of SD or SDXL: set guidance_scale <= 1"
                )
            if second_model is not None:
                den = self._denoiser
                for key in ("in_channels", "out_channels", "sample_size"):
                    a, b = den.config.get(key), getattr(second_model, "config", {}).get(key)
                    if a != b:
                        raise ValueError(
                            f"`second_model` must share the latent space: its {key} is {b}, the pipeline's is {a}"
                        )
        else:
            if not (isinstance(anneal_beta, (int, float)) and math.isfinite(anneal_beta) and anneal_beta > 0):
                raise ValueError(f"`anneal_beta` must be a finite number > 0, got {anneal_beta!r}")
            if fam.conditional and (fam.name not in ("sd", "sdxl") or w > 1):
                raise ValueError(
                    "`corrector='anneal'` anneals a single model: an unconditional pipeline, or SD/SDXL with "
                    "guidance_scale <= 1 (CFG off)"
                )
        return w

    def _run_stock(self, call: dict, num_inference_steps: int, generator, pipe_kwargs: dict):
        """The stock pipeline's own ``__call__`` for all G·K particles, returning raw latents (or images)."""
        return self.pipe(
            **call,
            num_inference_steps=num_inference_steps,
            generator=generator,
            output_type=self.family.raw_output_type,
            return_dict=True,
            **pipe_kwargs,
        )

    # ------------------------------------------------------------------ gradient-guided proposal
    def _reward_grad(self, reward, sched, timestep, sample, prompts, lmbda, decoder, max_batch, call):
        """∇_{x_t} λ·r(decode(x̂₀(x_t))), differentiating through the denoiser.

        The denoiser is called again, with grad, on the arguments of its last call (recorded by a
        pre-hook) with the latents replaced by x_t; under CFG the input is [x_t; x_t] and the output is
        recombined as ε_u + w·(ε_c − ε_u), as the stock pipelines do.
        """
        from .utils import predict_x0

        if call is None:
            raise RuntimeError("reward_guidance: the denoiser's call was not recorded before scheduler.step()")
        args, kwargs = call
        n = sample.shape[0]
        cfg = args[0].shape[0] == 2 * n
        with torch.enable_grad():
            x = sample.detach().requires_grad_(True)
            inp = torch.cat([x, x]) if cfg else x
            if hasattr(sched, "scale_model_input"):
                inp = sched.scale_model_input(inp, timestep)
            out = self._denoiser(inp.to(args[0].dtype), *args[1:], **kwargs)
            eps = out[0] if isinstance(out, tuple) else out.sample
            if cfg:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + self.pipe.guidance_scale * (eps_c - eps_u)
            images = self.decode(predict_x0(sched, eps, timestep, x), decoder, max_batch)
            r = reward(images, prompts)
            check_rewards(r.detach(), n, name=reward_name(reward))
            (g,) = torch.autograd.grad(lmbda * r.sum(), x)
        return g

    @staticmethod
    def _guide(sched, out, timestep, sample, grad, scale, steer: FKSteering):
        """Shift a DDPM step to N(μ + s·σ²·g, σ²) and add log p(x′|x_t) − log q(x′|x_t) to the weights."""
        t = int(timestep)
        prev_t = int(sched.previous_timestep(t))
        acp = sched.alphas_cumprod
        a_t = acp[t].double()
        a_prev = acp[prev_t].double() if prev_t >= 0 else torch.tensor(1.0, dtype=torch.float64)
        cur_alpha = a_t / a_prev
        cur_beta = 1 - cur_alpha
        c0 = a_prev.sqrt() * cur_beta / (1 - a_t)
        ct = cur_alpha.sqrt() * (1 - a_prev) / (1 - a_t)
        var = sched._get_variance(t).double()
        if sched.config.variance_type != "fixed_small":
            raise ValueError("`reward_guidance` supports DDPMScheduler(variance_type='fixed_small') only")
        x0 = out.pred_original_sample.double()
        mu = c0 * x0 + ct * sample.double()
        shift = scale * var * grad.double()
        new = out.prev_sample.double() + shift
        dims = tuple(range(1, new.dim()))
        log_p = -((new - mu) ** 2).sum(dims) / (2 * var)
        log_q = -((new - mu - shift) ** 2).sum(dims) / (2 * var)
        steer.add_log_weights(log_p - log_q, "gradient-guidance proposal correction")
        out.prev_sample = new.to(out.prev_sample.dtype)
        return out
