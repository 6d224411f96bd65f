"""What every fkdiff pipeline wrapper shares: a loaded diffusers pipeline, its family, and construction."""

from __future__ import annotations

import torch

from .families import Family, detect_family

__all__ = ["WrappedPipeline"]


class WrappedPipeline:
    """Wraps a loaded diffusers pipeline (no weights copied); components read through (``.unet``, ``.vae``...)."""

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
