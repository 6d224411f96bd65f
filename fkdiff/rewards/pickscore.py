"""PickScore (Kirstain et al. 2023): a CLIP-H fine-tune scored through transformers' CLIPModel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Reward, to_module
from .clip import OPENAI_MEAN, OPENAI_STD, clip_preprocess

__all__ = ["PickScore"]


def _features(out) -> torch.Tensor:
    """transformers 4 returns the projected features; 5 wraps them as ``pooler_output``."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class PickScore(Reward):
    """PickScore = logit_scale.exp() · cos(image, text) (about 18–23 for typical pairs with the real weights)."""

    MODEL = "yuvalkirstain/PickScore_v1"
    PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"

    def __init__(self, model, tokenizer, image_size: int = 224, mean=OPENAI_MEAN, std=OPENAI_STD, batch_size: int = 16):
        super().__init__(batch_size)
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        self.image_size, self.mean, self.std = image_size, mean, std

    @classmethod
    def from_pretrained(cls, model: str = MODEL, processor: str | None = None, device="cpu", **kwargs) -> PickScore:
        """Hub ids or local folders (``save_pretrained`` output) for the CLIPModel and its tokenizer/processor
        (default: the model folder when it holds a tokenizer, else the CLIP-H processor PickScore uses)."""
        from pathlib import Path

        from transformers import AutoTokenizer, CLIPModel

        if processor is None:
            processor = model if (Path(model) / "tokenizer_config.json").is_file() else cls.PROCESSOR
        clip = CLIPModel.from_pretrained(model).to(device)
        tok = AutoTokenizer.from_pretrained(processor)
        size = clip.config.vision_config.image_size
        return cls(clip, tok, size, **kwargs)

    def score(self, images, prompts):
        if prompts is None:
            raise ValueError("PickScore needs prompts (one per image)")
        dev = next(self.model.parameters()).device
        pixels = to_module(clip_preprocess(images.to(dev), self.image_size, self.mean, self.std), self.model)
        img = _features(self.model.get_image_features(pixel_values=pixels))
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        txt = _features(
            self.model.get_text_features(
                input_ids=tokens["input_ids"].to(dev), attention_mask=tokens["attention_mask"].to(dev)
            )
        )
        return self.model.logit_scale.exp() * F.cosine_similarity(img.float(), txt.float(), dim=-1)
