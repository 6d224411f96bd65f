"""Tiny, random-init diffusers pipelines built locally (no hub): for tests and benchmarks.

The CLIP tokenizer is built from the byte-level alphabet alone (256 byte tokens, their ``</w>``
forms and the two specials, no merges), so it needs no downloaded vocabulary.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

__all__ = [
    "build_clip_tokenizer",
    "tiny_ddpm_pipeline",
    "tiny_sd_pipeline",
    "tiny_sdxl_pipeline",
    "tiny_sd3_pipeline",
    "tiny_flux_pipeline",
    "build_t5_tokenizer",
    "gaussian_data_pipeline",
    "tiny_vae",
    "tiny_taesd",
]


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte → printable unicode map, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def build_clip_tokenizer(directory: str | Path | None = None):
    """A ``CLIPTokenizer`` over bytes only (514 tokens), saved in ``directory`` and loaded from there."""
    from transformers import CLIPTokenizer

    directory = Path(directory or tempfile.mkdtemp(prefix="fkdiff-tok-"))
    directory.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab_list = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab_list)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"), model_max_length=77)
    tok.save_pretrained(directory)
    return CLIPTokenizer.from_pretrained(directory)


def build_bert_tokenizer(directory: str | Path | None = None):
    """A lower-case WordPiece ``BertTokenizer`` over letters and digits (no download), saved in ``directory``."""
    from transformers import BertTokenizer

    directory = Path(directory or tempfile.mkdtemp(prefix="fkdiff-bert-"))
    directory.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(vocab=str(directory / "vocab.txt"))
    tok.save_pretrained(directory)
    return tok


def tiny_open_clip(directory: str | Path, name: str = "fkdiff-tiny-clip", seed: int = 0):
    """Register a tiny open_clip model config ``name`` (its JSON written to ``directory``) and build it at
    random weights; ``open_clip.create_model_and_transforms(name, pretrained=path)`` then loads checkpoints."""
    import open_clip

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
    }
    (directory / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(directory)
    _seed(seed)
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=None)
    return model


def tiny_imagereward_checkpoint(directory: str | Path, seed: int = 0) -> Path:
    """``ImageReward.pt`` (reference parameter names) + ``med_config.json`` of a tiny random ImageReward in
    ``directory``, plus a BERT tokenizer in ``directory/tokenizer``; load with ``ImageReward.from_pretrained``."""
    from .rewards.imagereward import ImageRewardModel, imagereward_configs, to_reference_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    build_bert_tokenizer(directory / "tokenizer")
    med = dict(
        vocab_size=80,
        hidden_size=768,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
    )
    _seed(seed)
    model = ImageRewardModel(*imagereward_configs(med))
    state = to_reference_state_dict(model.state_dict())
    torch.save(state, directory / "ImageReward.pt")
    (directory / "med_config.json").write_text(json.dumps(med))
    return directory


def _seed(seed: int):
    torch.manual_seed(seed)


def tiny_vae(seed: int = 0, channels=(8, 8)):
    from diffusers import AutoencoderKL

    _seed(seed)
    return AutoencoderKL(
        block_out_channels=list(channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
        sample_size=32,
    )


def tiny_taesd(seed: int = 0):
    """A random-init ``AutoencoderTiny`` (TAESD architecture, narrow) decoding 4-channel latents."""
    from diffusers import AutoencoderTiny

    _seed(seed)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
        upsampling_scaling_factor=2,
    )


def _clip_text(seed: int, hidden: int = 32, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    _seed(seed)
    cfg = CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=514,
        projection_dim=32,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def tiny_sd_pipeline(
    seed: int = 0, scheduler=None, sample_size: int = 16, unet_channels=(8, 16), vae_channels=(8, 8), layers: int = 1
):
    """A tiny Stable Diffusion pipeline (random weights): 8×8 latents → 16×16 images by default.

    ``unet_channels=(32, 64), vae_channels=(32, 64), layers=2`` is the size of diffusers' own tiny
    test pipeline.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    _seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=tuple(unet_channels),
        layers_per_block=layers,
        sample_size=sample_size // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
        attention_head_dim=2,
    )
    scheduler = scheduler or DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet.eval(),
        scheduler=scheduler,
        vae=tiny_vae(seed, vae_channels).eval(),
        text_encoder=_clip_text(seed),
        tokenizer=build_clip_tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(seed: int = 0, scheduler=None, sample_size: int = 16):
    """A tiny SDXL pipeline (two text encoders, text_time embedding), random weights."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    _seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=sample_size // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 time ids × 8 + 32 pooled
        cross_attention_dim=64,
        norm_num_groups=2,
    )
    scheduler = scheduler or EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    tok = build_clip_tokenizer()
    pipe = StableDiffusionXLPipeline(
        unet=unet.eval(),
        scheduler=scheduler,
        vae=tiny_vae(seed).eval(),
        text_encoder=_clip_text(seed),
        text_encoder_2=_clip_text(seed + 1, projection=True),
        tokenizer=tok,
        tokenizer_2=tok,
        force_zeros_for_empty_prompt=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_ddpm_pipeline(seed: int = 0, sample_size: int = 8, scheduler=None):
    """A tiny unconditional pixel-space DDPMPipeline (random UNet2DModel, 1 channel)."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    _seed(seed)
    unet = UNet2DModel(
        sample_size=sample_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    pipe = DDPMPipeline(unet=unet.eval(), scheduler=scheduler or DDPMScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_t5_tokenizer():
    """A small in-memory Unigram ``T5Tokenizer`` (letters, digits, a few words); no download."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -3.0) for w in ("a", "the", "cat", "dog", "red", "tree", "photo", "of")]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    pieces += [("▁" + c, -6.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _t5_encoder(seed: int, vocab_size: int, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    _seed(seed)
    cfg = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_ff=37, d_kv=8, num_layers=2, num_heads=4, decoder_start_token_id=0
    )
    return T5EncoderModel(cfg).eval()


def _flow_vae(seed: int, latent_channels: int):
    from diffusers import AutoencoderKL

    _seed(seed)
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    ).eval()


def tiny_sd3_pipeline(seed: int = 0, scheduler=None):
    """A tiny SD3 pipeline (two CLIP encoders, a T5 encoder, MMDiT), flow matching, random weights."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    _seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    ).eval()
    clip_tok = build_clip_tokenizer()
    t5_tok = build_t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler or FlowMatchEulerDiscreteScheduler(stochastic_sampling=True),
        vae=_flow_vae(seed, 4),
        text_encoder=_clip_text(seed, projection=True),
        text_encoder_2=_clip_text(seed + 1, projection=True),
        text_encoder_3=_t5_encoder(seed, len(t5_tok)),
        tokenizer=clip_tok,
        tokenizer_2=clip_tok,
        tokenizer_3=t5_tok,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux_pipeline(seed: int = 0, scheduler=None):
    """A tiny FLUX pipeline (CLIP + T5 encoders, packed latents), flow matching, random weights."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    _seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    ).eval()
    t5_tok = build_t5_tokenizer()
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=scheduler or FlowMatchEulerDiscreteScheduler(stochastic_sampling=True),
        vae=_flow_vae(seed, 1),
        text_encoder=_clip_text(seed, projection=False),
        text_encoder_2=_t5_encoder(seed, len(t5_tok)),
        tokenizer=build_clip_tokenizer(),
        tokenizer_2=t5_tok,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gaussian_data_pipeline(std: float = 0.2, sample_size: int = 8, channels: int = 1, scheduler=None):
    """An unconditional pipeline whose data are N(0, std²·I) images, with the exact ε-prediction
    ε*(x, t) = √(1−ᾱ_t)·x / (ᾱ_t·std² + 1 − ᾱ_t). Under a deterministic DDIM sampler the image is a
    fixed linear function of the initial noise (≈ std·noise): a verifier of the image is an exact
    function of the noise."""
    from diffusers import DDIMScheduler, DDPMPipeline
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models.modeling_utils import ModelMixin
    from diffusers.models.unets.unet_2d import UNet2DOutput

    class GaussianDataDenoiser(ModelMixin, ConfigMixin):
        @register_to_config
        def __init__(self, std: float = 0.2, in_channels: int = 1, out_channels: int = 1, sample_size: int = 8):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()), requires_grad=False)
            self.register_buffer("alphas_cumprod", DDIMScheduler().alphas_cumprod.clone(), persistent=False)

        def forward(self, sample, timestep, return_dict: bool = True, **kwargs):
            t = torch.as_tensor(timestep, device=sample.device).long()
            a = self.alphas_cumprod.to(sample.device)[t].to(sample.dtype)
            eps = self.scale * (1 - a).sqrt() * sample / (a * self.config.std**2 + 1 - a)
            return UNet2DOutput(sample=eps) if return_dict else (eps,)

    model = GaussianDataDenoiser(std=std, in_channels=channels, out_channels=channels, sample_size=sample_size)
    pipe = DDPMPipeline(unet=model.eval(), scheduler=scheduler or DDIMScheduler(clip_sample=False))
    pipe.set_progress_bar_config(disable=True)
    return pipe
