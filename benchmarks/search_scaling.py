"""Best reward against NFE: random search, zero-order search, path search and FK steering on one model.

Run:  python benchmarks/search_scaling.py [--repeats 8] [--steps 50] [--out search_scaling.png]

The model is the exact-target bench model (a 2-D Gaussian mixture with exact ε; the offline demo
model will replace it when it exists); the verifier is the bench's nonlinear reward
r(x) = sin(πx₁)·sin(πx₂). Search uses deterministic DDIM (the noise determines the sample); FK
steering uses DDPM with K = budget particles (λ = 10, updates every 5 steps) and reports the reward of
its selected particle. NFE counts denoiser evaluations per sample-step. Each cell is the mean over
``--repeats`` seeds, with its standard error.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics

import torch
from diffusers import DDIMScheduler, DDPMPipeline

from fkdiff import FKSteeringPipeline, NoiseSearchPipeline
from fkdiff.bench.exact_target import GMMDenoiser, SinReward, bench_scheduler


def run_methods(budget: int, steps: int, seed: int, search: NoiseSearchPipeline, fk: FKSteeringPipeline, reward):
    out = {}
    r = search.random_search(
        verifier=reward, num_candidates=budget, num_inference_steps=steps, seed=seed, output_type="pt"
    )
    out["random"] = (r.nfe, r.best_score)
    if budget >= 3:
        k = min(4, budget - 1)
        z = search.zero_order_search(
            verifier=reward,
            num_neighbors=k,
            num_rounds=max(1, (budget - 1) // k),
            cosine=0.9,
            num_inference_steps=steps,
            seed=seed,
            output_type="pt",
        )
        out["zero-order"] = (z.nfe, z.best_score)
    if budget >= 2:
        n = max(1, budget // 4)
        p = search.path_search(
            verifier=reward,
            num_paths=n,
            num_branches=4,
            start_step=steps // 2,
            backward_steps=steps // 10,
            forward_steps=steps // 5,
            num_inference_steps=steps,
            seed=seed,
            output_type="pt",
        )
        out["path"] = (p.nfe, p.best_score)
    f = fk(
        reward=reward,
        batch_size=1,
        num_particles=budget,
        lmbda=10.0,
        resample_interval=5,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
    )
    out["fk"] = (budget * steps, float(reward(f.images)))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--budgets", default="1,2,4,8,16,32")
    p.add_argument("--out", default="search_scaling.png")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    model = GMMDenoiser()
    ddim = DDIMScheduler.from_config(bench_scheduler(model).config, clip_sample=False, set_alpha_to_one=True)
    search = NoiseSearchPipeline.from_pipe(DDPMPipeline(unet=model, scheduler=ddim))
    fk = FKSteeringPipeline.from_pipe(DDPMPipeline(unet=model, scheduler=bench_scheduler(model)))
    fk.pipe.set_progress_bar_config(disable=True)
    reward = SinReward()
    budgets = [int(b) for b in args.budgets.split(",")]
    table: dict[str, dict[int, tuple[float, float, float]]] = {}
    for b in budgets:
        runs = [run_methods(b, args.steps, 1000 * s, search, fk, reward) for s in range(args.repeats)]
        for method in runs[0]:
            nfes = [r[method][0] for r in runs]
            scores = [r[method][1] for r in runs]
            se = statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else 0.0
            table.setdefault(method, {})[b] = (statistics.mean(nfes), statistics.mean(scores), se)

    print(
        f"Best reward (sin(πx₁)·sin(πx₂), max 1) against compute on the exact-target model, {args.steps} steps, "
        f"mean ± SE over {args.repeats} seeds; cell: reward (NFE)"
    )
    head = f"{'method':<12}" + "".join(f"{'budget ' + str(b):>24}" for b in budgets)
    print(head)
    print("-" * len(head))
    for method, cells in table.items():
        line = f"{method:<12}"
        for b in budgets:
            c = cells.get(b)
            line += f"{c[1]:>10.3f} ±{c[2]:.3f} ({c[0]:>5.0f})" if c else " " * 24
        print(line)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, cells in table.items():
        xs = [cells[b][0] for b in budgets if b in cells]
        ys = [cells[b][1] for b in budgets if b in cells]
        es = [cells[b][2] for b in budgets if b in cells]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("NFE (denoiser evaluations per sample-step)")
    ax.set_ylabel("best reward")
    ax.set_title("Reward against compute, exact-target model")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
