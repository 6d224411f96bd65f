"""Composing rewards: weighted sums, normalisation with stated statistics, rank ensembles of verifiers."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..smc import check_rewards
from .base import Reward, check_images, reward_name

__all__ = ["WeightedSum", "Normalized", "RankEnsemble"]


def _call(r, images, prompts) -> torch.Tensor:
    out = r(images, prompts)
    check_rewards(out.detach() if isinstance(out, torch.Tensor) else out, images.shape[0], reward_name(r))
    return out.to(images.device).float()


class WeightedSum(Reward):
    """r = Σ_i w_i·r_i; differentiable when every part is."""

    def __init__(self, rewards: Sequence[tuple[object, float]]):
        super().__init__(batch_size=None)
        if not rewards:
            raise ValueError("WeightedSum needs at least one (reward, weight) pair")
        self.parts = list(rewards)
        self.differentiable = all(getattr(r, "differentiable", False) for r, _ in self.parts)
        for i, (r, _) in enumerate(self.parts):
            if isinstance(r, torch.nn.Module):
                self.add_module(f"part{i}", r)

    def score(self, images, prompts):
        return sum(w * _call(r, images, prompts) for r, w in self.parts)


class Normalized(Reward):
    """r′ = (r − mean)/std with stated statistics (e.g. measured on unsteered samples)."""

    def __init__(self, reward, mean: float, std: float):
        super().__init__(batch_size=None)
        if not std > 0:
            raise ValueError(f"`std` must be > 0, got {std!r}")
        self.reward, self.mean, self.std = reward, float(mean), float(std)
        self.differentiable = bool(getattr(reward, "differentiable", False))

    @property
    def name(self) -> str:
        return f"Normalized({reward_name(self.reward)})"

    def score(self, images, prompts):
        return (_call(self.reward, images, prompts) - self.mean) / self.std


class RankEnsemble(Reward):
    """Ma et al.'s verifier ensemble: each verifier ranks the batch (1 = worst … N = best, ties averaged);
    the score is the mean rank. Only comparable within one call (one batch); not differentiable."""

    differentiable = False

    def __init__(self, verifiers: Sequence[object]):
        super().__init__(batch_size=None)
        if not verifiers:
            raise ValueError("RankEnsemble needs at least one verifier")
        self.verifiers = list(verifiers)

    @staticmethod
    def ranks(scores: torch.Tensor) -> torch.Tensor:
        """Average ranks (1-based) of ``scores [N]``; ties share the mean of their positions."""
        s = scores.double()
        less = (s[None, :] < s[:, None]).sum(1).double()
        equal = (s[None, :] == s[:, None]).sum(1).double()
        return less + (equal + 1) / 2

    def score(self, images, prompts):
        check_images(images)
        with torch.no_grad():
            ranks = [self.ranks(_call(v, images, prompts)) for v in self.verifiers]
        return torch.stack(ranks).mean(0).float()
