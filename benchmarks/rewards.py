"""Images per second of each reward at batch 8 on this machine, full-size architectures at random weights.

Run:  python benchmarks/rewards.py [--repeats 3] [--size 512]

Rewards measured: CLIP score (open_clip ViT-L-14), LAION aesthetic (ViT-L-14 + MLP head), a classifier
reward (torchvision ResNet-50), ImageReward (BLIP ViT-L/16 + BERT-base), HPSv2 (open_clip ViT-H-14) and
PickScore (transformers CLIP ViT-H/14).
"""

import argparse
import statistics
import time

import torch

from fkdiff.rewards import ClassifierReward
from fkdiff.rewards.clip import OPENAI_MEAN, OPENAI_STD, AestheticHead, AestheticScore, CLIPScore, HPSv2
from fkdiff.rewards.pickscore import PickScore


def rate(reward, images, prompts, repeats):
    with torch.no_grad():
        reward(images, prompts)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            reward(images, prompts)
            times.append(time.perf_counter() - t0)
    return images.shape[0] / statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", type=int, default=512, help="input image size (rewards resize to their own)")
    args = p.parse_args()
    import open_clip
    import torchvision

    images = torch.rand(8, 3, args.size, args.size)
    prompts = ["a photo of a cat"] * 8
    model, _, _ = open_clip.create_model_and_transforms("ViT-L-14", pretrained=None)
    model.eval()
    tok = open_clip.get_tokenizer("ViT-L-14")
    rows = [
        ("CLIPScore ViT-L-14", CLIPScore(model, tok, 224, OPENAI_MEAN, OPENAI_STD, batch_size=8)),
        ("AestheticScore ViT-L-14", AestheticScore(model, AestheticHead(768), 224, batch_size=8)),
        (
            "ClassifierReward ResNet-50",
            ClassifierReward(
                torchvision.models.resnet50(weights=None),
                target=1,
                preprocess=lambda x: torch.nn.functional.interpolate(x, size=224, mode="bilinear"),
            ),
        ),
    ]
    print(f"images/s at batch 8 ({args.size}×{args.size} inputs), {torch.get_num_threads()} threads:")
    for name, reward in rows:
        print(f"  {name:<28} {rate(reward, images, prompts, args.repeats):8.2f}", flush=True)
    del rows, model
    from fkdiff.rewards.imagereward import ImageReward, ImageRewardModel, imagereward_configs
    from fkdiff.testing import build_bert_tokenizer

    ir = ImageReward(ImageRewardModel(*imagereward_configs()), build_bert_tokenizer(), batch_size=8)
    print(f"  {'ImageReward BLIP ViT-L/16':<28} {rate(ir, images, prompts, args.repeats):8.2f}", flush=True)
    del ir
    big, _, _ = open_clip.create_model_and_transforms("ViT-H-14", pretrained=None)
    hps = HPSv2(big.eval(), open_clip.get_tokenizer("ViT-H-14"), 224, batch_size=8)
    print(f"  {'HPSv2 ViT-H-14':<28} {rate(hps, images, prompts, args.repeats):8.2f}", flush=True)
    del hps, big
    from transformers import CLIPConfig, CLIPModel

    from fkdiff.testing import build_clip_tokenizer

    cfg = CLIPConfig(
        text_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24),
        vision_config=dict(
            hidden_size=1280,
            intermediate_size=5120,
            num_attention_heads=16,
            num_hidden_layers=32,
            image_size=224,
            patch_size=14,
        ),
        projection_dim=1024,
    )
    pick = PickScore(CLIPModel(cfg), build_clip_tokenizer(), 224, batch_size=8)
    print(f"  {'PickScore CLIP ViT-H/14':<28} {rate(pick, images, prompts, args.repeats):8.2f}")


if __name__ == "__main__":
    main()
