"""The offline demo: a digits DDPM and two digit classifiers shipped in ``assets/`` (trained by
``scripts/train_digits.py``), and their loaders. Images are 16×16, one channel, in [0, 1]."""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = [
    "ASSETS",
    "DigitClassifier",
    "DigitEvaluator",
    "save_classifier",
    "load_classifier",
    "load_demo_pipeline",
    "digit_reward",
]

ASSETS = Path(__file__).resolve().parent / "assets"  # package data (the repo-root assets/ links here)


class DigitClassifier(torch.nn.Module):
    """The demo reward's classifier: a small CNN on 16×16 digits."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.SiLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.SiLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(32 * 4 * 4, 64),
            torch.nn.SiLU(),
            torch.nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.net(x)


class DigitEvaluator(torch.nn.Module):
    """An independent evaluation classifier (other architecture: an MLP), never used as a reward."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(256, 128),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(128, 10),
        )

    def forward(self, x):
        return self.net(x)


_KINDS = {"DigitClassifier": DigitClassifier, "DigitEvaluator": DigitEvaluator}


def save_classifier(model: torch.nn.Module, folder: str | Path) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"class": type(model).__name__}))


def load_classifier(folder: str | Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no classifier at {folder}: run `python scripts/train_digits.py` to create it")
    kind = json.loads((folder / "config.json").read_text())["class"]
    if kind not in _KINDS:
        raise ValueError(f"unknown classifier class {kind!r} in {folder}; expected one of {sorted(_KINDS)}")
    model = _KINDS[kind]()
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval()


def load_demo_pipeline(assets: str | Path = ASSETS):
    """The shipped digits DDPM as a diffusers ``DDPMPipeline`` (local files only)."""
    from diffusers import DDPMPipeline

    folder = Path(assets) / "digits-ddpm"
    if not folder.is_dir():
        raise FileNotFoundError(f"no demo model at {folder}: run `python scripts/train_digits.py` to create it")
    pipe = DDPMPipeline.from_pretrained(str(folder))
    return pipe


def digit_reward(digit: int, assets: str | Path = ASSETS):
    """The demo reward: log p(digit | image) under the shipped reward classifier."""
    from .rewards import ClassifierReward

    return ClassifierReward(load_classifier(Path(assets) / "digits-classifier"), target=digit)
