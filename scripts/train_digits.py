"""Train the offline demo model: a small DDPM on scikit-learn's handwritten digits, and two classifiers.

Run:  python scripts/train_digits.py [--out assets] [--steps 4000]   (seeded; minutes on 2 CPU cores)

Writes, in diffusers / safetensors formats:
  <out>/digits-ddpm/            UNet2DModel (16×16, 1 channel) + DDPMScheduler, loadable by DDPMPipeline
  <out>/digits-classifier/      the demo reward's classifier (CNN), trained on the training split
  <out>/digits-evaluator/       an independent evaluation classifier (other seed and architecture, MLP)
  <out>/digits-report.json      held-out accuracies, training settings
Images are the 8×8 digits (0–16) upsampled bilinearly to 16×16 and scaled to [-1, 1].
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fkdiff.digits import DigitClassifier, DigitEvaluator, save_classifier


def load_digits_tensors(seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8] in [0, 1]
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def train_classifier(model, x, y, steps: int, seed: int, lr: float = 3e-3):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=gen)
        xb = x[idx]
        # light augmentation: small shifts, so that samples slightly off the data still classify
        shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
        xb = torch.roll(xb, shifts=shift, dims=(2, 3))
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def train_ddpm(x, steps: int, seed: int, batch: int = 64):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3, weight_decay=1e-4)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    data = x * 2 - 1
    unet.train()
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        x0 = data[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        loss = F.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr_sched.step()
        if step % 500 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - t0:.0f}s", flush=True)
    return unet.eval(), sched


def sample_quality(out: Path, xte, num_samples: int = 1000, steps: int = 100, seed: int = 0) -> dict:
    """Evaluation classifier's mean max-probability (confidence) on unconditional samples vs real held-out digits."""
    from diffusers import DDPMPipeline

    from fkdiff.digits import load_classifier

    pipe = DDPMPipeline.from_pretrained(str(out / "digits-ddpm"))
    pipe.set_progress_bar_config(disable=True)
    ev = load_classifier(out / "digits-evaluator")
    with torch.no_grad():
        samples = pipe(
            batch_size=num_samples,
            num_inference_steps=steps,
            output_type="pt",
            generator=torch.Generator().manual_seed(seed),
        ).images
        conf_samples = torch.softmax(ev(samples), -1).amax(-1)
        conf_real = torch.softmax(ev(xte), -1).amax(-1)
        counts = torch.bincount(ev(samples).argmax(-1), minlength=10)
    return dict(
        eval_confidence_on_samples=float(conf_samples.mean()),
        eval_confidence_on_real_test_digits=float(conf_real.mean()),
        sample_class_counts=counts.tolist(),
        num_samples=num_samples,
        sampling_steps=steps,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="assets")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluate-only", action="store_true", help="only (re)compute the sample-quality report")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    xtr, ytr, xte, yte = load_digits_tensors(args.seed)
    if args.evaluate_only:
        report = json.loads((out / "digits-report.json").read_text())
        report.update(sample_quality(out, xte, seed=args.seed))
        (out / "digits-report.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        return
    clf = train_classifier(DigitClassifier(), xtr, ytr, 1500, seed=args.seed + 1)
    ev = train_classifier(DigitEvaluator(), xtr, ytr, 2000, seed=args.seed + 2)
    acc_clf, acc_ev = accuracy(clf, xte, yte), accuracy(ev, xte, yte)
    print(f"held-out accuracy: reward classifier {acc_clf:.3f}, evaluation classifier {acc_ev:.3f}")
    save_classifier(clf, out / "digits-classifier")
    save_classifier(ev, out / "digits-evaluator")
    t0 = time.perf_counter()
    unet, sched = train_ddpm(xtr, args.steps, args.seed)
    from diffusers import DDPMPipeline

    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(out / "digits-ddpm")
    report = dict(
        seed=args.seed,
        ddpm_steps=args.steps,
        ddpm_train_seconds=round(time.perf_counter() - t0, 1),
        train_size=len(ytr),
        test_size=len(yte),
        reward_classifier_test_accuracy=acc_clf,
        evaluation_classifier_test_accuracy=acc_ev,
    )
    report.update(sample_quality(out, xte, seed=args.seed))
    (out / "digits-report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
