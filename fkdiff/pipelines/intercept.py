"""Intercepting a stock pipeline's loop: a scheduler proxy whose ``step()`` calls back, and denoiser chunking.

The proxy keeps ``step``'s signature (pipelines inspect it to decide whether to pass ``eta`` and
``generator``), forwards every other attribute read and write to the real scheduler, reports the real
class to ``isinstance``, and is installed in the pipeline's instance ``__dict__`` only for the
duration of a call, so the pipeline's config (and ``save_pretrained``) never sees it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "SchedulerProxy",
    "installed_scheduler",
    "chunked_forward",
    "reorder_scheduler_state",
    "scheduler_x0",
    "is_stochastic",
    "UNSUPPORTED_SCHEDULERS",
]

# calls step() twice in its first step with no flag to tell (PNDM), or keeps a Brownian tree that
# cannot be reordered with the particles (DPMSolverSDE)
UNSUPPORTED_SCHEDULERS = {
    "PNDMScheduler": "it calls step() twice in its first step and is deterministic",
    "DPMSolverSDEScheduler": "its Brownian-tree noise cannot be reordered with resampled particles",
}


class SchedulerProxy:
    """Wraps a scheduler; ``step(...)`` becomes ``on_step(real_step, *args, **kwargs)``."""

    def __init__(self, real, on_step: Callable[..., Any]):
        object.__setattr__(self, "_real", real)
        real_step = real.step

        @functools.wraps(real_step)
        def step(*args, **kwargs):
            return on_step(real_step, *args, **kwargs)

        object.__setattr__(self, "step", step)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "_real"), name)

    def __setattr__(self, name, value):
        setattr(self._real, name, value)

    @property
    def __class__(self):  # isinstance(proxy, DDIMScheduler) stays true
        return type(self._real)


@contextlib.contextmanager
def installed_scheduler(pipe, proxy):
    """Put ``proxy`` in ``pipe.__dict__['scheduler']`` for the block, leaving the config untouched."""
    had = "scheduler" in pipe.__dict__
    old = pipe.__dict__.get("scheduler")
    pipe.__dict__["scheduler"] = proxy
    try:
        yield proxy
    finally:
        if had:
            pipe.__dict__["scheduler"] = old
        else:
            del pipe.__dict__["scheduler"]


def _split(obj, batch: int, sl: slice):
    if isinstance(obj, torch.Tensor) and obj.dim() > 0 and obj.shape[0] == batch:
        return obj[sl]
    if isinstance(obj, dict):
        return {k: _split(v, batch, sl) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(v, torch.Tensor) for v in obj):
        return type(obj)(_split(v, batch, sl) for v in obj)
    return obj


def _cat(outs: list):
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outs, 0)
    if isinstance(first, tuple):
        return tuple(_cat([o[i] for o in outs]) for i in range(len(first)))
    if hasattr(first, "keys"):  # diffusers BaseOutput
        return type(first)(**{k: _cat([o[k] for o in outs]) for k in first.keys()})
    raise TypeError(f"cannot concatenate denoiser outputs of type {type(first).__name__}")


def _first_tensor(args, kwargs):
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, torch.Tensor):
            return v
    return None


@contextlib.contextmanager
def chunked_forward(module: torch.nn.Module, max_batch_size: int | None):
    """Run ``module`` on batches of at most ``max_batch_size`` rows (every batch-sized tensor is split)."""
    if not max_batch_size:
        yield
        return
    forward = module.forward
    had_own = "forward" in module.__dict__  # e.g. a hook or a spy already installed on the instance

    @functools.wraps(forward)
    def chunked(*args, **kwargs):
        x = _first_tensor(args, kwargs)
        if x is None or x.dim() == 0 or x.shape[0] <= max_batch_size:
            return forward(*args, **kwargs)
        b = x.shape[0]
        outs = []
        for s in range(0, b, max_batch_size):
            sl = slice(s, min(s + max_batch_size, b))
            outs.append(forward(*_split(list(args), b, sl), **_split(kwargs, b, sl)))
        return _cat(outs)

    module.forward = chunked
    try:
        yield
    finally:
        if had_own:
            module.forward = forward
        else:
            del module.forward


def _same_shape(t, ref: torch.Tensor) -> bool:
    return isinstance(t, torch.Tensor) and t.shape == ref.shape


def reorder_scheduler_state(scheduler, index: torch.Tensor, sample: torch.Tensor) -> list[str]:
    """Gather rows of every scheduler attribute shaped like ``sample`` (tensors, and lists of them)."""
    touched = []
    for name, value in list(vars(scheduler).items()):
        if _same_shape(value, sample):
            setattr(scheduler, name, value[index.to(value.device)])
            touched.append(name)
        elif isinstance(value, (list, tuple)) and any(_same_shape(v, sample) for v in value):
            new = [v[index.to(v.device)] if _same_shape(v, sample) else v for v in value]
            setattr(scheduler, name, type(value)(new) if isinstance(value, tuple) else new)
            touched.append(name)
    return touched


def scheduler_x0(scheduler, output, model_output, timestep, sample) -> torch.Tensor:
    """x̂₀ of the step just taken: the output's ``pred_original_sample``/``denoised``, a data-prediction
    solver's last model output, flow matching's x − σ·v, or the ᾱ_t formula of the prediction type."""
    from .utils import predict_x0

    for field in ("pred_original_sample", "denoised"):
        val = getattr(output, field, None)
        if isinstance(val, torch.Tensor):
            return val
    cfg = scheduler.config
    name = type(scheduler).__name__
    if name.startswith("FlowMatch"):
        idx = scheduler.step_index - 1  # step() has advanced it
        sigma = scheduler.sigmas[idx].to(sample.device, sample.dtype)
        return sample - sigma * model_output
    outs = getattr(scheduler, "model_outputs", None)
    data_pred = cfg.get("algorithm_type", "") in ("dpmsolver++", "sde-dpmsolver++") or cfg.get("predict_x0", False)
    if data_pred and outs and isinstance(outs[-1], torch.Tensor) and outs[-1].shape == sample.shape:
        return outs[-1]
    if hasattr(scheduler, "alphas_cumprod"):
        return predict_x0(scheduler, model_output, timestep, sample)
    raise ValueError(f"cannot compute x̂₀ for {name}: it exposes neither pred_original_sample nor ᾱ_t")


def is_stochastic(scheduler, step_kwargs: dict) -> bool:
    """Whether the scheduler's step draws fresh noise (copies of a resampled particle then diverge)."""
    name = type(scheduler).__name__
    cfg = scheduler.config
    if name in ("DDPMScheduler", "DDPMWuerstchenScheduler", "LCMScheduler", "SASolverScheduler"):
        return True
    if name == "DDIMScheduler":
        return float(step_kwargs.get("eta", 0.0) or 0.0) > 0
    if name == "TCDScheduler":
        return float(step_kwargs.get("eta", 0.3) or 0.0) > 0
    if "Ancestral" in name:
        return True
    if name in ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler"):
        return str(cfg.get("algorithm_type", "")).startswith("sde")
    if name.startswith("FlowMatch"):
        return bool(cfg.get("stochastic_sampling", False))
    if name == "EulerDiscreteScheduler":
        return float(step_kwargs.get("s_churn", 0.0) or 0.0) > 0
    return False
