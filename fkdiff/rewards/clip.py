"""CLIP-based rewards with open_clip: CLIP score and the LAION aesthetic predictor.

Preprocessing happens on tensors (resize of the shorter side, centre crop, normalisation), so gradients
flow from the score to the images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Reward, resolve_weights_file, to_module

__all__ = ["CLIPScore", "AestheticScore", "HPSv2", "clip_preprocess", "AestheticHead"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """[0, 1] images → resize shorter side to ``size`` (bicubic, antialiased), centre crop, normalise."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(images.float(), size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top : top + size, left : left + size]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _load_open_clip(model_name: str, pretrained: str | None, device):
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
    model.eval().requires_grad_(False)
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean, std = cfg.get("mean", OPENAI_MEAN), cfg.get("std", OPENAI_STD)
    return model, open_clip.get_tokenizer(model_name), int(size), mean, std


class CLIPScore(Reward):
    """CLIP score = 100 · cos(image embedding, text embedding), as torchmetrics' CLIPScore, per image and
    unclipped (negative when they disagree), so it has gradients everywhere. Range about [−100, 100];
    typical matched pairs score 25–35 with OpenAI ViT-L/14."""

    scale = 100.0

    def __init__(self, model, tokenizer, image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD, batch_size: int = 32):
        super().__init__(batch_size)
        self.model, self.tokenizer = model, tokenizer
        self.image_size, self.mean, self.std = image_size, mean, std

    @classmethod
    def from_pretrained(
        cls, model_name: str = "ViT-L-14", pretrained: str | None = "openai", device="cpu", **kwargs
    ) -> CLIPScore:
        """Any open_clip model name with a pretrained tag (downloads) or a local ``.pt``/``.safetensors`` path."""
        model, tok, size, mean, std = _load_open_clip(model_name, pretrained, device)
        return cls(model, tok, size, mean, std, **kwargs)

    def score(self, images, prompts):
        if prompts is None:
            raise ValueError(f"{self.name} needs prompts (one per image)")
        dev = next(self.model.parameters()).device
        img = self.model.encode_image(
            to_module(clip_preprocess(images.to(dev), self.image_size, self.mean, self.std), self.model)
        )
        txt = self.model.encode_text(self.tokenizer(prompts).to(dev))
        return self.scale * F.cosine_similarity(img.float(), txt.float(), dim=-1)


class AestheticHead(torch.nn.Module):
    """The improved-aesthetic-predictor MLP (768 → 1024 → 128 → 64 → 16 → 1); keys ``layers.{0,2,4,6,7}``."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(dim, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.layers(emb).squeeze(-1)


class AestheticScore(Reward):
    """LAION aesthetic score (about 1–10): the MLP head on L2-normalised CLIP ViT-L/14 image embeddings."""

    HEAD_REPO = "camenduru/improved-aesthetic-predictor"
    HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"

    def __init__(
        self, model, head: AestheticHead, image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD, batch_size: int = 32
    ):
        super().__init__(batch_size)
        self.model, self.head = model, head.eval().requires_grad_(False)
        self.image_size, self.mean, self.std = image_size, mean, std

    @classmethod
    def from_pretrained(
        cls,
        head: str = HEAD_REPO,
        clip_model: str = "ViT-L-14",
        clip_pretrained: str | None = "openai",
        device="cpu",
        **kwargs,
    ) -> AestheticScore:
        """``head``: hub repo holding ``sac+logos+ava1-l14-linearMSE.pth``, its folder, or the file itself."""
        path = resolve_weights_file(head, cls.HEAD_FILE, what="AestheticScore head")
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model, _, size, mean, std = _load_open_clip(clip_model, clip_pretrained, device)
        mlp = AestheticHead(state["layers.0.weight"].shape[1])
        mlp.load_state_dict(state)
        return cls(model, mlp.to(device), size, mean, std, **kwargs)

    def score(self, images, prompts=None):
        dev = next(self.model.parameters()).device
        pixels = to_module(clip_preprocess(images.to(dev), self.image_size, self.mean, self.std), self.model)
        emb = F.normalize(self.model.encode_image(pixels).float(), dim=-1)
        return self.head(to_module(emb, self.head)).float()


class HPSv2(CLIPScore):
    """HPS v2.1 (Wu et al. 2023): open_clip ViT-H-14 with the HPS checkpoint; score = cos(image, text)
    (about 0.25–0.35 for typical pairs with the real weights)."""

    REPO = "xswu/HPSv2"
    FILE = "HPS_v2.1_compressed.pt"
    scale = 1.0

    @classmethod
    def from_pretrained(cls, checkpoint: str = REPO, clip_model: str = "ViT-H-14", device="cpu", **kwargs) -> HPSv2:
        """``checkpoint``: hub repo holding ``HPS_v2.1_compressed.pt``, its folder, or the file itself."""
        path = resolve_weights_file(checkpoint, cls.FILE, what="HPSv2 checkpoint")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        model, tok, size, mean, std = _load_open_clip(clip_model, None, device)
        model.load_state_dict(state)
        return cls(model, tok, size, mean, std, **kwargs)
