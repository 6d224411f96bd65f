"""Overhead of FK steering against the stock pipeline at the same batch, on a tiny SD pipeline.

Run:  python benchmarks/overhead.py [--steps 50] [--repeats 5] [--clip-model ViT-L-14]

Prints, for K = 4, 8, 16 (each measured alternately with the stock run, medians of ``--repeats``):
  - steering (zero-cost reward, weight updates every 5 of 50 steps, x̂₀ decoded by the pipeline's
    VAE) / stock pipeline with num_images_per_prompt=K;
  - the same with a cheap intermediate decoder: a random-init TAESD-architecture AutoencoderTiny, or
    a LatentRGBDecoder (linear latent → RGB map fitted to the pipeline's VAE);
then the peak resident memory of a large steering run with and without ``max_batch_size``
(each in a fresh process), and the share of a steering run's time spent in x̂₀ decoding plus the
reward when the reward is a full-size CLIP architecture (open_clip, random weights).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time

import torch

from fkdiff import FKSteeringPipeline
from fkdiff.pipelines.decoders import LatentRGBDecoder
from fkdiff.testing import tiny_sd_pipeline, tiny_taesd


def zero_reward(images, prompts=None):
    return torch.zeros(images.shape[0])


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# the size of diffusers' own tiny SD test pipeline
TINY = dict(unet_channels=(32, 64), vae_channels=(32, 64), layers=2)


def overhead_table(steps: int, repeats: int, size: int) -> list[dict]:
    pipe = tiny_sd_pipeline(sample_size=size, **TINY)
    fk = FKSteeringPipeline.from_pipe(pipe)
    decoders = {
        "vae": None,
        "taesd": tiny_taesd(),
        "latent-rgb": LatentRGBDecoder.fit(pipe.vae, generator=torch.Generator().manual_seed(0)),
    }
    rows = []
    for k in (4, 8, 16):
        common = dict(num_inference_steps=steps, eta=1.0, output_type="pt")

        def stock(k=k, common=common):
            pipe("a photo of a cat", num_images_per_prompt=k, generator=torch.Generator().manual_seed(0), **common)

        def steer(decoder, k=k, common=common):
            fk(
                "a photo of a cat",
                reward=zero_reward,
                num_particles=k,
                resample_interval=5,
                intermediate_decoder=decoder,
                generator=torch.Generator().manual_seed(0),
                **common,
            )

        stock()
        for dec in decoders.values():
            steer(dec)  # warm-up
        ratios = {name: [] for name in decoders}
        for _ in range(repeats):
            for name, dec in decoders.items():  # alternate: stock, steer, stock, steer, ...
                t_stock = timed(stock)
                ratios[name].append(timed(lambda dec=dec: steer(dec)) / t_stock)
        rows.append(dict(K=k, **{name: statistics.median(v) for name, v in ratios.items()}))
    return rows


def child_peak_memory(k: int, max_batch_size: int | None, size: int) -> None:
    """Run one steering call and print the process's peak RSS (MiB) as JSON."""
    import resource

    pipe = tiny_sd_pipeline(sample_size=size, **TINY)
    FKSteeringPipeline.from_pipe(pipe)(
        ["a cat", "a dog"],
        reward=zero_reward,
        num_particles=k,
        num_inference_steps=4,
        resample_interval=1,
        max_batch_size=max_batch_size,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        eta=1.0,
    )
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_memory(k: int, size: int, max_batch_size: int | None) -> float:
    args = [sys.executable, __file__, "--child-memory", str(k), "--size", str(size)]
    if max_batch_size:
        args += ["--max-batch-size", str(max_batch_size)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def reward_share(clip_model: str, steps: int) -> dict | None:
    try:
        import open_clip
    except ImportError:
        return None
    model, _, _ = open_clip.create_model_and_transforms(clip_model, pretrained=None)
    model.eval()
    tok = open_clip.get_tokenizer(clip_model)
    times = {"reward": 0.0, "decode": 0.0}

    def clip_reward(images, prompts):
        t0 = time.perf_counter()
        x = torch.nn.functional.interpolate(images, size=224, mode="bilinear", antialias=True)
        with torch.no_grad():
            img = model.encode_image(x)
            txt = model.encode_text(tok(prompts))
        r = torch.nn.functional.cosine_similarity(img, txt)
        times["reward"] += time.perf_counter() - t0
        return r

    pipe = tiny_sd_pipeline(sample_size=64)
    fk = FKSteeringPipeline.from_pipe(pipe)
    real_decode = fk.decode

    def decode(*a, **kw):
        t0 = time.perf_counter()
        out = real_decode(*a, **kw)
        times["decode"] += time.perf_counter() - t0
        return out

    fk.decode = decode
    total = timed(
        lambda: fk(
            "a photo of a cat",
            reward=clip_reward,
            num_particles=4,
            num_inference_steps=steps,
            resample_interval=5,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
            eta=1.0,
        )
    )
    return dict(
        model=clip_model,
        total_s=total,
        decode_s=times["decode"],
        reward_s=times["reward"],
        share=(times["decode"] + times["reward"]) / total,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", type=int, default=32, help="image size of the tiny SD pipeline")
    p.add_argument("--clip-model", default="ViT-L-14", help="open_clip architecture for the reward-share line")
    p.add_argument("--child-memory", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-batch-size", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.child_memory:
        child_peak_memory(args.child_memory, args.max_batch_size, args.size)
        return

    print(
        f"Tiny SD pipeline (UNet and VAE channels 32/64, as diffusers' tests; {args.size}×{args.size}), "
        f"{args.steps} steps, DDIM η=1, weight updates every 5 steps, zero-cost reward; "
        f"median of {args.repeats} alternating runs"
    )
    print("steering time / stock time, by the decoder of x̂₀ at update steps:")
    print(f"{'K':>4} {'VAE':>8} {'TAESD':>8} {'latent-rgb':>11}")
    for row in overhead_table(args.steps, args.repeats, args.size):
        print(f"{row['K']:>4} {row['vae']:>8.3f} {row['taesd']:>8.3f} {row['latent-rgb']:>11.3f}")

    k, size = 16, 64
    full = peak_memory(k, size, None)
    chunked = peak_memory(k, size, 8)
    print(
        f"\nPeak RSS, 2 prompts × K={k} at {size}×{size} (CFG batch {4 * k}): "
        f"{full:.0f} MiB unchunked, {chunked:.0f} MiB with max_batch_size=8 (ratio {chunked / full:.2f})"
    )

    share = reward_share(args.clip_model, args.steps)
    if share is None:
        print("\nopen_clip is not installed (pip install 'fkdiff[clip]'): reward-share line skipped")
    else:
        print(
            f"\nWith a full-size {share['model']} CLIP reward (random weights), K=4: decode {share['decode_s']:.2f} s "
            f"+ reward {share['reward_s']:.2f} s of {share['total_s']:.2f} s = {100 * share['share']:.0f}% of the run"
        )


if __name__ == "__main__":
    main()
