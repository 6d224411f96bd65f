"""Inputs shared by the ImageReward equivalence check: seeded weights, images, prompts, vocabulary.

Pure torch (no fkdiff, no transformers), so that ``scripts/imagereward_reference.py`` imports this same file
inside the throwaway venv of the reference package and both sides build bit-identical inputs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

FIXTURE = Path(__file__).parent / "fixtures" / "imagereward_reference.json"
SEED = 20261130
PROMPTS = [
    "a photo of a cat",
    "a red car on a street at night",
    "a painting of a mountain lake",
    "two dogs playing in the snow",
]
# BERT's special tokens, then whole words and word pieces; anything else tokenises to [UNK]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "a an the of on in at and two photo painting picture cat dog dogs car red blue green street night day "
    "mountain lake snow playing sitting ##s ##ing ##ed"
).split()
# ImageReward's med_config.json for BERT-base (the published file; vocab 30522 + [DEC] + [ENC])
MED_CONFIG = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "encoder_width": 1024,
    "add_cross_attention": True,
}


def seeded_weights(spec: list, seed: int = SEED) -> dict[str, torch.Tensor]:
    """{name: shape} list + seed → float32 tensors, drawn in list order from one CPU generator.

    Scales keep a deep random network well conditioned (and the head's output O(1)): LayerNorm weights
    1 + 0.1·z, biases and token/position tables 0.02·z, other matrices z/√fan_in.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in spec:
        z = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
        lname = name.lower()
        if "norm" in lname and name.endswith("weight"):
            out[name] = 1 + 0.1 * z
        elif name.endswith("bias") or len(shape) < 2 or name.endswith(("cls_token", "pos_embed")):
            out[name] = 0.02 * z
        else:
            out[name] = z / math.sqrt(math.prod(shape[1:]))
    return out


def seeded_images(n: int = len(PROMPTS), size: int = 224, seed: int = SEED) -> torch.Tensor:
    """[n, 3, size, size] in [0, 1] on the 8-bit grid (k/255), so a PIL round trip is exact: smooth
    colour gradients plus noise, different per image."""
    g = torch.Generator().manual_seed(seed + 1)
    lin = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    imgs = []
    for i in range(n):
        phase = torch.rand(3, 1, 1, generator=g) * 6.28
        base = 0.5 + 0.4 * torch.sin((i + 1) * 3 * xx + phase) * torch.cos((i + 2) * 2 * yy - phase)
        imgs.append(base + 0.1 * torch.randn(3, size, size, generator=g))
    return (torch.stack(imgs).clamp(0, 1) * 255).round() / 255


def write_vocab(folder: Path) -> Path:
    path = Path(folder) / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return path
