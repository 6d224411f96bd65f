"""ImageReward (Xu et al. 2023), implemented natively on transformers' BLIP building blocks.

ImageReward-v1.0 is BLIP's ViT-L/16 image encoder, BLIP's BERT text encoder with cross-attention to the
image tokens, and a 5-layer linear head on the text encoder's first token, standardised:
``score = (head(text_encoder(prompt, image)[:, 0]) − 0.16717) / 1.03334``. The published checkpoint
(``ImageReward.pt`` + ``med_config.json`` in the hub repo THUDM/ImageReward) uses BLIP's original
parameter names; :func:`convert_imagereward_state_dict` maps them onto ``BlipVisionModel`` /
``BlipTextModel``. Equivalence with the reference package is checked in ``tests/test_imagereward.py``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from .base import Reward, resolve_weights_file, to_module
from .clip import OPENAI_MEAN, OPENAI_STD, clip_preprocess

__all__ = [
    "ImageReward",
    "ImageRewardModel",
    "convert_imagereward_state_dict",
    "to_reference_state_dict",
    "imagereward_configs",
]

logger = logging.getLogger(__name__)

SCORE_MEAN = 0.16717362830052426
SCORE_STD = 1.0333394966054072
HEAD_SIZES = (768, 1024, 128, 64, 16, 1)
_VIT, _BLOCK = "blip.visual_encoder.", "blip.visual_encoder.blocks.{n}."
# (reference name, ImageRewardModel name): a pair ending in "." maps a prefix, any other an exact name; {n} is
# a layer index. The reference head is Sequential(Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear,
# Linear), without activations: its Linear layers 0, 2, 4, 6, 7 are head.0 … head.4.
_NAMES = [
    ("blip.text_encoder.", "text."),
    (_VIT + "cls_token", "vision.embeddings.class_embedding"),
    (_VIT + "pos_embed", "vision.embeddings.position_embedding"),
    (_VIT + "patch_embed.proj.", "vision.embeddings.patch_embedding."),
    (_BLOCK + "norm1.", "vision.encoder.layers.{n}.layer_norm1."),
    (_BLOCK + "norm2.", "vision.encoder.layers.{n}.layer_norm2."),
    (_BLOCK + "attn.qkv.", "vision.encoder.layers.{n}.self_attn.qkv."),
    (_BLOCK + "attn.proj.", "vision.encoder.layers.{n}.self_attn.projection."),
    (_BLOCK + "mlp.", "vision.encoder.layers.{n}.mlp."),
    (_VIT + "norm.", "vision.post_layernorm."),
    *[(f"mlp.layers.{r}.{p}", f"head.{o}.{p}") for o, r in enumerate((0, 2, 4, 6, 7)) for p in ("weight", "bias")],
]


def _rename(name: str, reverse: bool = False) -> str | None:
    """Reference name → ImageRewardModel's (``reverse``: the other way); None when no pair applies."""
    for a, b in _NAMES:
        src, dst = (b, a) if reverse else (a, b)
        pattern = re.escape(src).replace(re.escape("{n}"), r"(\d+)") + ("" if src.endswith(".") else "$")
        if m := re.match(pattern, name):
            return dst.replace("{n}", m.group(1) if m.groups() else "") + name[m.end() :]
    return None


def imagereward_configs(med_config: dict | None = None, *, vision: dict | None = None):
    """(BlipVisionConfig, BlipTextConfig) of ImageReward-v1.0: ViT-L/16 at 224, BERT-base from ``med_config``."""
    from transformers import BlipTextConfig, BlipVisionConfig

    vis = dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=16,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        attention_dropout=0.0,
    )
    med = dict(med_config or {})
    vis.update(med.get("vision_config", {}))  # not in the published file: fkdiff's tiny test checkpoints
    vis.update(vision or {})
    text = BlipTextConfig(
        vocab_size=med.get("vocab_size", 30524),
        hidden_size=med.get("hidden_size", 768),
        intermediate_size=med.get("intermediate_size", 3072),
        num_hidden_layers=med.get("num_hidden_layers", 12),
        num_attention_heads=med.get("num_attention_heads", 12),
        max_position_embeddings=med.get("max_position_embeddings", 512),
        layer_norm_eps=med.get("layer_norm_eps", 1e-12),
        hidden_act=med.get("hidden_act", "gelu"),
        pad_token_id=med.get("pad_token_id", 0),
        bos_token_id=None,  # generation ids of BLIP's decoder; unused by the encoder
        eos_token_id=None,
        sep_token_id=None,
        encoder_hidden_size=vis["hidden_size"],
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        is_decoder=True,  # builds the cross-attention layers; forward() runs it bidirectional (is_decoder=False)
    )
    return BlipVisionConfig(**vis), text


class ImageRewardModel(torch.nn.Module):
    """BLIP image encoder → BLIP text encoder (cross-attending to image tokens) → linear head on token 0."""

    def __init__(self, vision_config, text_config):
        super().__init__()
        from transformers import BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        if text_config.hidden_size != HEAD_SIZES[0]:
            raise ValueError(
                f"ImageReward's head takes {HEAD_SIZES[0]} features, text hidden_size is {text_config.hidden_size}"
            )
        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        self.head = torch.nn.Sequential(*[torch.nn.Linear(a, b) for a, b in zip(HEAD_SIZES[:-1], HEAD_SIZES[1:])])

    @classmethod
    def from_state_dict(cls, state: dict, med_config: dict | None = None) -> ImageRewardModel:
        """Build (skipping random init: every weight is overwritten) and load a reference-named state dict."""
        try:
            from transformers.initialization import no_init_weights
        except ImportError:  # transformers 4
            from transformers.modeling_utils import no_init_weights
        with no_init_weights():
            model = cls(*imagereward_configs(med_config))
        model.load_state_dict(convert_imagereward_state_dict(state), strict=True)
        return model

    def forward(self, pixel_values, input_ids, attention_mask) -> torch.Tensor:
        """Standardised ImageReward score per (image, prompt) row: [N]."""
        image_tokens = self.vision(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=image_tokens.device)
        out = self.text(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_tokens,
            encoder_attention_mask=image_mask,
            is_decoder=False,
            return_dict=True,
        )
        raw = self.head(out.last_hidden_state[:, 0, :]).float().squeeze(-1)
        return (raw - SCORE_MEAN) / SCORE_STD


def convert_imagereward_state_dict(state: dict) -> dict:
    """Reference names (``blip.visual_encoder.*``, ``blip.text_encoder.*``, ``mlp.layers.*``) → ImageRewardModel's.

    Parts of BLIP the score never uses are dropped, as the reference's non-strict load ignores them: the
    contrastive projections (``blip.vision_proj``, ``blip.text_proj``) and any other ``blip.*`` head, a
    text pooler, the ``position_ids`` buffer. A name outside ``blip.*`` / ``mlp.*`` is an error, and the
    caller loads strictly, so a wrong or truncated checkpoint cannot load silently.
    """
    out, unknown, dropped = {}, [], []
    for key, value in state.items():
        used = key.startswith(("blip.visual_encoder.", "blip.text_encoder."))
        if (
            key.endswith("position_ids")
            or key.startswith("blip.text_encoder.pooler.")
            or (key.startswith("blip.") and not used)
        ):
            dropped.append(key)
        elif (new := _rename(key)) is not None:
            out[new] = value
        else:
            unknown.append(key)
    if unknown:
        more = "…" if len(unknown) > 5 else ""
        raise ValueError(f"not an ImageReward checkpoint: unexpected parameters {unknown[:5]}{more}")
    if dropped:
        logger.info("ImageReward: %d checkpoint tensors unused by the score, e.g. %s", len(dropped), dropped[:3])
    return out


def to_reference_state_dict(state: dict) -> dict:
    """ImageRewardModel's names → the published checkpoint's (the inverse of :func:`convert_imagereward_state_dict`
    on the tensors the score uses): how test checkpoints in the reference layout are written."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if (ref := _rename(key, reverse=True)) is None:
            raise ValueError(f"not an ImageRewardModel parameter: {key!r}")
        out[ref] = value
    return out


class ImageReward(Reward):
    """ImageReward-v1.0 score (standardised: about −2 … 2; 0 is the mean over its training comparisons).

    Prompts are required (one per image), tokenised with BERT's uncased WordPiece to 35 tokens, as the
    reference does. Preprocessing is on tensors (bicubic resize of the shorter side to 224, centre crop,
    CLIP normalisation), so the score is differentiable in the images.
    """

    REPO = "THUDM/ImageReward"
    FILE = "ImageReward.pt"
    CONFIG = "med_config.json"
    TOKENIZER = "google-bert/bert-base-uncased"
    max_length = 35

    def __init__(self, model: ImageRewardModel, tokenizer, batch_size: int = 16):
        super().__init__(batch_size)
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        self.image_size = model.vision.config.image_size

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str = REPO,
        tokenizer=None,
        med_config: str | None = None,
        device="cpu",
        dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> ImageReward:
        """``checkpoint``: hub repo with ``ImageReward.pt``, a folder holding it, or the file (``.pt`` or
        ``.safetensors``). ``med_config``: path to ``med_config.json`` (default: next to the checkpoint / in the
        repo). ``tokenizer``: hub id or folder of BERT-base-uncased, or a tokenizer object (default: a
        ``tokenizer/`` folder beside a local checkpoint if there is one, else google-bert/bert-base-uncased)."""
        path = resolve_weights_file(checkpoint, cls.FILE, what="ImageReward checkpoint")
        if med_config is None:  # beside a local checkpoint, else from the same hub repo
            local = Path(checkpoint)
            source = local.parent if local.is_file() else checkpoint
            med_config = resolve_weights_file(source, cls.CONFIG, what="ImageReward med_config")
        config = json.loads(Path(med_config).read_text())
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model = ImageRewardModel.from_state_dict(state, config)
        if tokenizer is None:
            tokenizer = path.parent / "tokenizer" if (path.parent / "tokenizer").is_dir() else cls.TOKENIZER
        return cls(model.to(device=device, dtype=dtype), _load_tokenizer(tokenizer), **kwargs)

    def score(self, images, prompts):
        if prompts is None:
            raise ValueError("ImageReward needs prompts (one per image)")
        param = next(self.model.parameters())
        pixels = to_module(
            clip_preprocess(images.to(param.device), self.image_size, OPENAI_MEAN, OPENAI_STD), self.model
        )
        tokens = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return self.model(pixels, tokens["input_ids"].to(param.device), tokens["attention_mask"].to(param.device))


def _load_tokenizer(tokenizer):
    if not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(tokenizer))
    except Exception as e:
        raise FileNotFoundError(
            f"ImageReward tokenizer: could not load {str(tokenizer)!r} ({type(e).__name__}). ImageReward uses "
            f"BERT-base-uncased ({ImageReward.TOKENIZER}); download it where the hub is reachable "
            f"(huggingface-cli download {ImageReward.TOKENIZER}) and pass its folder as `tokenizer`."
        ) from e
