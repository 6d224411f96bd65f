"""Classifier rewards: the log-probability of a target class under any torch classifier."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Reward, to_module

__all__ = ["ClassifierReward"]


class ClassifierReward(Reward):
    """r(x) = log softmax(classifier(preprocess(x)))[target]; ``target`` an int or one per image (``[N]``)."""

    def __init__(
        self, classifier: torch.nn.Module, target: int, preprocess: Callable | None = None, batch_size: int = 64
    ):
        super().__init__(batch_size)
        if isinstance(target, bool) or not isinstance(target, int) or target < 0:
            raise ValueError(f"`target` must be a class index >= 0, got {target!r}")
        self.classifier, self.target, self.preprocess = classifier.eval().requires_grad_(False), target, preprocess

    def score(self, images, prompts=None):
        x = self.preprocess(images) if self.preprocess is not None else images
        logits = self.classifier(to_module(x, self.classifier))
        if logits.dim() != 2 or not (0 <= self.target < logits.shape[1]):
            raise ValueError(f"ClassifierReward: logits of shape {tuple(logits.shape)} have no class {self.target}")
        return torch.log_softmax(logits.float(), dim=-1)[:, self.target]
