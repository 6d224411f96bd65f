"""diffusers-facing code: how a denoising loop is intercepted or written."""

from .utils import predict_x0

__all__ = ["predict_x0"]
