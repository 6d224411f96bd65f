"""fkdiff: inference-time scaling and steering of diffusion models, as a diffusers extension.

``import fkdiff.smc`` stays free of diffusers: the diffusers-facing names below are imported lazily.
"""

from . import smc
from .smc import FKSteering, resample

__version__ = "0.1.0"

_LAZY = {
    "FKSteeringPipeline": "fkdiff.pipelines",
    "FKSteeringOutput": "fkdiff.pipelines",
    "predict_x0": "fkdiff.pipelines",
    "LatentRGBDecoder": "fkdiff.pipelines",
    "NoiseSearchPipeline": "fkdiff.pipelines",
    "NoiseSearchOutput": "fkdiff.pipelines",
    **{
        name: "fkdiff.rewards"
        for name in (
            "Reward",
            "FunctionReward",
            "CLIPScore",
            "AestheticScore",
            "ImageReward",
            "PickScore",
            "HPSv2",
            "ClassifierReward",
            "WeightedSum",
            "Normalized",
            "RankEnsemble",
        )
    },
}

__all__ = ["FKSteering", "resample", "smc", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fkdiff' has no attribute {name!r}")
