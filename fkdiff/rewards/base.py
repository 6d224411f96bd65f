"""The Reward contract and shared machinery.

A reward is a callable ``reward(images, prompts) -> Tensor[N]``: ``images`` ``[N, C, H, W]`` in [0, 1] on any
device/dtype, ``prompts`` a list of N strings or None; one finite score per image, in input order, higher
is better, on the images' device. ``differentiable`` says whether gradients flow to the images. A plain
function with that signature is a valid reward; :class:`Reward` adds chunking (``batch_size``) and checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..smc import check_rewards

__all__ = ["Reward", "FunctionReward", "check_images", "resolve_weights_file", "reward_name", "to_module"]


def reward_name(reward) -> str:
    """How errors name a reward: its ``name``, a function's ``__name__``, else its class name."""
    return getattr(reward, "name", None) or getattr(reward, "__name__", None) or type(reward).__name__


def to_module(x: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """``x`` on the device and in the floating dtype of ``module``'s parameters (fp16/bf16 models take fp32 images)."""
    p = next(module.parameters(), None)
    return x if p is None else x.to(device=p.device, dtype=p.dtype)


def check_images(images, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"`{name}` must be a tensor [N, C, H, W] in [0, 1], got {shape}")
    return images


class Reward(torch.nn.Module):
    """Base class: subclasses implement :meth:`score` on one chunk; ``__call__`` chunks and validates."""

    differentiable: bool = True

    def __init__(self, batch_size: int | None = 32):
        super().__init__()
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"`batch_size` must be a positive integer or None, got {batch_size!r}")
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return type(self).__name__

    def score(self, images: torch.Tensor, prompts: list[str] | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, images: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
        images = check_images(images)
        n = images.shape[0]
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"{self.name}: got {n} images but {len(prompts)} prompts")
        size = self.batch_size or n
        outs = []
        for s in range(0, n, size):
            chunk = self.score(images[s : s + size], None if prompts is None else list(prompts[s : s + size]))
            check_rewards(chunk.detach() if isinstance(chunk, torch.Tensor) else chunk, min(size, n - s), self.name)
            outs.append(chunk)  # validated; kept with its graph so gradients reach the images
        return torch.cat(outs).to(images.device)


class FunctionReward(Reward):
    """Wrap a plain function ``(images, prompts) -> Tensor[N]`` with chunking and checks."""

    def __init__(self, fn, batch_size: int | None = None, differentiable: bool = False, name: str | None = None):
        super().__init__(batch_size)
        self.fn = fn
        self.differentiable = differentiable
        self._name = name or getattr(fn, "__name__", type(fn).__name__)

    @property
    def name(self) -> str:
        return self._name

    def score(self, images, prompts):
        return self.fn(images, prompts)


def resolve_weights_file(id_or_path: str | os.PathLike, filename: str, *, what: str) -> Path:
    """A local file: ``id_or_path`` itself, ``id_or_path/filename``, or ``filename`` from hub repo ``id_or_path``.

    Offline with nothing cached: an error naming the file, the hub repo and how to pass a local path.
    """
    p = Path(id_or_path)
    if p.is_file():
        return p
    if p.is_dir():
        if (p / filename).is_file():
            return p / filename
        raise FileNotFoundError(f"{what}: {p} has no {filename!r}; put the file there or pass its path")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=str(id_or_path), filename=filename))
    except Exception as e:  # offline, missing repo or file: say what to do
        raise FileNotFoundError(
            f"{what}: could not get {filename!r} from the hub repo {str(id_or_path)!r} ({type(e).__name__}). "
            f"Download it where the hub is reachable (huggingface-cli download {id_or_path} {filename}) and pass "
            "the local file or its folder instead of the repo id."
        ) from e
