"""What every fkdiff pipeline wrapper shares: a loaded diffusers pipeline, its family, and construction."""

from __future__ import annotations

import contextlib

import torch

from .families import Family, detect_family

__all__ = ["WrappedPipeline"]


class WrappedPipeline:
    """Wraps a loaded diffusers pipeline (no weights copied); components read through (``.unet``, ``.vae``...)."""

    # set (to a predicate) while a caller replays steps without evaluating them: the NFE counter skips them
    _skip_now = None

    def __init__(self, pipe):
        self.pipe = pipe
        self.family: Family = detect_family(pipe)

    @classmethod
    def from_pipe(cls, pipe):
        """Wrap a loaded pipeline (shares its modules)."""
        return cls(pipe)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load the right pipeline class from a hub id or local folder (as ``DiffusionPipeline`` does)."""
        from diffusers import DiffusionPipeline

        return cls(DiffusionPipeline.from_pretrained(pretrained_model_name_or_path, **kwargs))

    def to(self, *args, **kwargs):
        self.pipe.to(*args, **kwargs)
        return self

    def __getattr__(self, name):
        if name == "pipe":
            raise AttributeError(name)
        return getattr(self.pipe, name)

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    @property
    def _denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, "unet", None) or self.pipe.transformer

    @contextlib.contextmanager
    def _counting(self, counter: dict):
        """While active, ``counter["nfe"]`` grows by the rows of every denoiser call (CFG counts both halves)."""

        def hook(module, args, kwargs):
            skip = self._skip_now
            if skip is not None and skip():  # a path-search segment skipping this step: no evaluation
                return
            x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
            counter["nfe"] += int(x.shape[0])

        handle = self._denoiser.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
