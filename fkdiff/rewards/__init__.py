"""Rewards (potentials of FK steering, verifiers of noise search), all following the Reward contract."""

from .base import FunctionReward, Reward, check_images, resolve_weights_file
from .classifier import ClassifierReward
from .compose import Normalized, RankEnsemble, WeightedSum

__all__ = [
    "AestheticScore",
    "CLIPScore",
    "ClassifierReward",
    "FunctionReward",
    "HPSv2",
    "ImageReward",
    "PickScore",
    "Normalized",
    "RankEnsemble",
    "Reward",
    "WeightedSum",
    "check_images",
    "resolve_weights_file",
]


def __getattr__(name):  # open_clip is an optional extra: import it only when asked for
    if name in ("CLIPScore", "AestheticScore", "HPSv2"):
        from . import clip

        return getattr(clip, name)
    if name == "ImageReward":
        from .imagereward import ImageReward

        return ImageReward
    if name == "PickScore":
        from .pickscore import PickScore

        return PickScore
    raise AttributeError(f"module 'fkdiff.rewards' has no attribute {name!r}")
