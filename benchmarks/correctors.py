"""FK correctors on the exact-target bench: total-variation error against K, corrected and uncorrected.

Run:  python benchmarks/correctors.py [--groups 512] [--steps 250]
"""

import argparse
import logging
import time

import fkdiff.bench.correctors as bc
from fkdiff.bench.exact_target import DEFAULT_MIXTURE, compare, group_estimates


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=512)
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--particles", default="1,4,16,64")  # CFG needs K ≈ 64 to get below its tolerance
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    ks = [int(k) for k in args.particles.split(",")]
    t0 = time.perf_counter()
    print(
        f"TV error of mode masses against the exact target (±: ½·Σ 4·SE); DDPM {args.steps} steps, "
        f"{args.groups} groups; 'plain' is the uncorrected sampler ({args.groups * max(ks)} samples)"
    )
    head = f"{'case':<12}{'plain':>18}" + "".join(f"{'K=' + str(k):>18}" for k in ks)
    print(head + "\n" + "-" * len(head))
    for name, (mixes, betas) in bc.CORRECTOR_CASES.items():
        target = bc.grid_power_target(mixes, betas, DEFAULT_MIXTURE)
        models = [bc.denoiser_for(m) for m in mixes]

        def err(corrected, k, groups, models=models, betas=betas, target=target):
            run = bc.run_corrected(
                models,
                betas,
                num_groups=groups,
                num_particles=k,
                corrected=corrected,
                num_inference_steps=args.steps,
                resample_interval=1,
            )
            c = compare(*group_estimates(DEFAULT_MIXTURE, run.points, run.log_weights), target)
            return f"{c.tv:>9.4f} (±{c.tv_tolerance:.3f})"

        line = f"{name:<12}" + err(False, 1, args.groups * max(ks))
        line += "".join(err(True, k, args.groups) for k in ks)
        print(line, flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
