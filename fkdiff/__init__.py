"""fkdiff: inference-time scaling and steering of diffusion models, as a diffusers extension."""

from . import smc
from .smc import FKSteering, resample

__version__ = "0.1.0"

__all__ = ["FKSteering", "resample", "smc", "__version__"]
