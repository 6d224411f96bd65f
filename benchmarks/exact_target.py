"""Exact-target bench, large version: TV error of FK steering against the exact tilted target, per K.

Run:  python benchmarks/exact_target.py [--groups 1024] [--steps 500]

Prints one table for every-update resampling and one for ESS-gated (adaptive) resampling. The error
must fall with K down to the sampler's own floor (DDPM at finitely many steps is slightly biased).
"""

import argparse
import logging
import time

from fkdiff.bench.exact_target import error_table, format_table


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=1024)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lmbda", type=float, default=1.0)
    p.add_argument("--particles", default="1,4,16,64,256")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    ks = [int(k) for k in args.particles.split(",")]
    for ess in (None, 0.5):
        t0 = time.perf_counter()
        rows = error_table(
            ks, num_groups=args.groups, num_inference_steps=args.steps, lmbda=args.lmbda, ess_threshold=ess
        )
        label = "resampling at every update step" if ess is None else f"adaptive resampling (ESS < {ess}·K)"
        print(
            f"\n== {label}; {args.groups} groups, {args.steps} DDPM steps, λ = {args.lmbda} "
            f"({time.perf_counter() - t0:.0f} s)\n{format_table(rows)}"
        )


if __name__ == "__main__":
    main()
