"""The ``fkdiff`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

__all__ = ["main"]


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return vals


def _str_list(choices):
    def parse(text: str) -> list[str]:
        vals = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in vals if v not in choices]
        if bad or not vals:
            raise argparse.ArgumentTypeError(f"unknown {bad or text!r}; choose from {', '.join(choices)}")
        return vals

    return parse


def cmd_bench(args) -> int:
    from .bench.exact_target import error_table, format_table
    from .smc import POTENTIALS

    t0 = time.perf_counter()
    rows = error_table(
        particles=args.particles,
        potentials=args.potentials or POTENTIALS,
        rewards=args.rewards,
        num_groups=args.groups,
        num_inference_steps=args.steps,
        lmbda=args.lmbda,
        ess_threshold=args.ess_threshold,
        seed=args.seed,
    )
    sys.stdout.write(
        f"Exact-target bench: 2-D Gaussian mixture, DDPM {args.steps} steps, λ = {args.lmbda}, "
        f"{args.groups} groups per K\n\n{format_table(rows)}\n\n({time.perf_counter() - t0:.1f} s)\n"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def cmd_demo(args) -> int:
    from .demo import format_report, run_demo

    folder, report = run_demo(
        args.digit,
        num_images=args.images,
        budget=args.budget,
        steps=args.steps,
        lmbda=args.lmbda,
        seed=args.seed,
        out_root=args.out,
    )
    sys.stdout.write(
        f"{report['task']}: {args.images} images per method, {args.budget} samples of compute per image\n\n"
        f"{format_report(report)}\n\nwrote {folder}/grid.png, report.json, reward_vs_nfe.png "
        f"({report['total_seconds']:.0f} s)\n"
    )
    return 0


def _source(text: str) -> tuple[str, str]:
    name, sep, source = text.partition("=")
    if not sep or not name.strip() or not source.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH_OR_ID, got {text!r}")
    return name.strip().lower(), source.strip()


def cmd_generate(args) -> int:
    from .generate import read_prompts, run_generate

    folder, report = run_generate(
        model=args.model,
        prompts=read_prompts(args.prompt, args.prompts_file),
        method=args.method,
        search=args.search,
        rounds=args.rounds,
        particles=args.particles,
        rewards=args.reward,
        reward_sources=dict(args.reward_source or []),
        steps=args.steps,
        guidance=args.guidance,
        lmbda=args.lmbda,
        num_images=args.num_images,
        height=args.height,
        width=args.width,
        scheduler=args.scheduler,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        out_root=args.out,
    )
    method = report["method"] + (f" ({report['search']})" if report["search"] else "")
    lines = [f"{method} on {report['model']} ({report['family']}), NFE per image {report['nfe_per_image']:g}"]
    for img in report["images"]:
        score = "" if img["reward"] is None else f"  reward {img['reward']:.4g}"
        lines.append(f"  {img['file']}{score}  {img['prompt'] or ''}")
    lines.append(f"wrote {folder}/grid.png, report.json ({report['timings']['total_seconds']:.0f} s)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .bench.exact_target import BENCH_REWARDS
    from .generate import METHODS, REWARDS, SEARCHES
    from .smc import POTENTIALS

    parser = argparse.ArgumentParser(prog="fkdiff", description="Inference-time steering of diffusion models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="steer the shipped digits model toward a digit: search vs FK at equal NFE")
    d.add_argument("--digit", type=int, default=3, choices=range(10), metavar="0-9")
    d.add_argument("--images", type=int, default=4, help="images per method")
    d.add_argument("--budget", type=int, default=8, help="samples of compute per image (K particles, N candidates)")
    d.add_argument("--steps", type=int, default=50, help="denoising steps")
    d.add_argument("--lmbda", type=float, default=1.0, help="FK tilt λ")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="fkdiff-out", help="a new folder is created inside")
    d.set_defaults(func=cmd_demo)

    g = sub.add_parser(
        "generate",
        help="plain sampling, FK steering or best-of-N search on a diffusers model",
        description="Generate with a diffusers pipeline (SD 1.x/2.x, SDXL, SD3, FLUX, unconditional) or the "
        "shipped digits model. Rewards: " + ", ".join(REWARDS) + ". Several --reward flags are summed with weights.",
    )
    g.add_argument("--model", default="digits", help="hub id or local pipeline folder; 'digits' = the shipped model")
    g.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    g.add_argument("--prompts-file", default=None, help="a text file, one prompt per line")
    g.add_argument("--method", choices=METHODS, default="fk")
    g.add_argument("--search", choices=SEARCHES, default="random", help="which noise search (--method search)")
    g.add_argument("--rounds", type=int, default=4, help="zero-order search rounds")
    g.add_argument(
        "--particles",
        type=int,
        default=4,
        help="FK particles K per prompt; search: candidates N (random), neighbours (zero-order), paths = branches",
    )
    g.add_argument("--reward", action="append", metavar="NAME[:WEIGHT]", help="a reward (repeat to combine)")
    g.add_argument("--reward-source", action="append", type=_source, metavar="NAME=PATH_OR_ID", help="weights")
    g.add_argument("--steps", type=int, default=50, help="denoising steps")
    g.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the pipeline's)")
    g.add_argument("--lmbda", type=float, default=10.0, help="FK tilt λ of p0·exp(λ·r)")
    g.add_argument("--num-images", type=int, default=4, help="images for unconditional models")
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--scheduler", default="auto", choices=("auto", "keep", "ddim", "ddpm", "euler-ancestral"))
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    g.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    g.add_argument("--out", default="fkdiff-out", help="a new folder is created inside")
    g.set_defaults(func=cmd_generate)

    b = sub.add_parser("bench", help="the exact-target bench: error against particles, as a table")
    b.add_argument("--particles", type=_int_list, default=[1, 4, 16, 64], help="comma-separated K values")
    b.add_argument("--potentials", type=_str_list(POTENTIALS), default=None, help="comma-separated potentials")
    b.add_argument("--rewards", type=_str_list(sorted(BENCH_REWARDS)), default=["linear", "sin"])
    b.add_argument("--groups", type=int, default=512, help="independent groups per K (sets the MC error)")
    b.add_argument("--steps", type=int, default=250, help="DDPM inference steps")
    b.add_argument("--lmbda", type=float, default=1.0, help="tilt strength λ")
    b.add_argument("--ess-threshold", type=float, default=None, help="adaptive resampling threshold")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", default=None, help="also write the rows to this JSON file")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if getattr(args, "groups", 1) < 1 or getattr(args, "steps", 1) < 1:
        raise SystemExit("fkdiff: error: --groups and --steps must be >= 1")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input or missing weights: a one-line message, exit 2
        if args.verbose:
            raise
        sys.stderr.write(f"fkdiff {args.command}: error: {e}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
