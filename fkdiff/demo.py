"""`fkdiff demo`: steer the shipped digits model toward one digit with best-of-N, zero-order search and FK
steering at equal compute; write an image grid, a JSON report and a reward-against-NFE plot."""

from __future__ import annotations

import json
import logging
import platform
import time
from datetime import datetime
from pathlib import Path

import torch

from .digits import ASSETS, load_classifier, load_demo_pipeline
from .rewards import ClassifierReward

__all__ = ["run_demo", "new_output_folder", "to_pil", "DEMO_REPORT_SCHEMA"]

logger = logging.getLogger(__name__)


def new_output_folder(root: str | Path, prefix: str = "demo") -> Path:
    """A fresh folder ``root/prefix-YYYYmmdd-HHMMSS[-n]``; an existing one is never reused."""
    root = Path(root)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = root / (f"{prefix}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new output folder under {root}")


def to_pil(image: torch.Tensor):
    """One [C, H, W] image in [0, 1] (C = 1 or 3) → an 8-bit PIL image ("L" or "RGB")."""
    from PIL import Image

    arr = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def _grid(rows: dict[str, torch.Tensor], path: Path, scale: int = 4) -> None:
    """Save rows of [N, 1, H, W] images in [0, 1] as one PNG, a label column on the left."""
    from PIL import Image, ImageDraw

    n = max(v.shape[0] for v in rows.values())
    h, w = next(iter(rows.values())).shape[-2:]
    label_w, pad = 110, 4
    cell_h, cell_w = h * scale + pad, w * scale + pad
    canvas = Image.new("L", (label_w + n * cell_w, len(rows) * cell_h), color=255)
    draw = ImageDraw.Draw(canvas)
    for r, (name, imgs) in enumerate(rows.items()):
        draw.text((4, r * cell_h + cell_h // 2 - 6), name, fill=0)
        for c in range(imgs.shape[0]):
            tile = to_pil(imgs[c, :1]).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + c * cell_w, r * cell_h))
    canvas.save(path)


def _plot(curves: dict[str, list[tuple[int, float]]], path: Path, digit: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, pts in curves.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("NFE per image (denoiser evaluations)")
    ax.set_ylabel(f"mean reward: log p({digit} | image)")
    ax.set_title(f"Steering the digits model toward {digit}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(
    digit: int = 3,
    *,
    num_images: int = 4,
    budget: int = 8,
    steps: int = 50,
    lmbda: float = 1.0,
    seed: int = 0,
    out_root: str | Path = "fkdiff-out",
    assets: str | Path = ASSETS,
    budgets_for_plot=(1, 2, 4, 8),
) -> tuple[Path, dict]:
    """Run the demo; returns the output folder and the report."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from .pipelines import FKSteeringPipeline, NoiseSearchPipeline

    if not (isinstance(digit, int) and 0 <= digit <= 9):
        raise ValueError(f"`digit` must be an integer in 0..9, got {digit!r}")
    if budget < 1 or num_images < 1 or steps < 1:
        raise ValueError("`budget`, `num_images` and `steps` must be >= 1")
    pipe = load_demo_pipeline(assets)
    pipe.set_progress_bar_config(leave=False)
    reward = ClassifierReward(load_classifier(Path(assets) / "digits-classifier"), target=digit)
    evaluator = load_classifier(Path(assets) / "digits-evaluator")
    ddpm = DDPMScheduler.from_config(pipe.scheduler.config)
    ddim = DDIMScheduler.from_config(pipe.scheduler.config)

    def evaluate(images: torch.Tensor) -> dict:
        with torch.no_grad():
            probs = torch.softmax(evaluator(images), -1)
        return dict(
            reward_mean=float(reward(images).mean()),
            eval_accuracy=float((probs.argmax(-1) == digit).float().mean()),
            eval_confidence=float(probs[:, digit].mean()),
        )

    def method_runs(b: int) -> dict[str, tuple[torch.Tensor, int, float]]:
        """images, NFE per image, seconds for each method at a budget of b samples per image."""
        out = {}
        t0 = time.perf_counter()
        pipe.scheduler = ddpm
        plain = pipe(
            batch_size=num_images,
            num_inference_steps=steps,
            output_type="pt",
            generator=torch.Generator().manual_seed(seed),
        ).images
        out["plain"] = (plain, steps, time.perf_counter() - t0)
        pipe.scheduler = ddim
        search = NoiseSearchPipeline.from_pipe(pipe)
        t0, imgs, nfe = time.perf_counter(), [], 0
        for i in range(num_images):
            res = search.random_search(
                verifier=reward, num_candidates=b, num_inference_steps=steps, seed=seed * 1000 + i, output_type="pt"
            )
            imgs.append(res.images)
            nfe += res.nfe
        out["best-of-N"] = (torch.cat(imgs), nfe // num_images, time.perf_counter() - t0)
        if b >= 3:
            t0, imgs, nfe = time.perf_counter(), [], 0
            k = 2 if b < 7 else 3
            for i in range(num_images):
                res = search.zero_order_search(
                    verifier=reward,
                    num_neighbors=k,
                    num_rounds=max(1, (b - 1) // k),
                    cosine=0.9,
                    num_inference_steps=steps,
                    seed=seed * 1000 + i,
                    output_type="pt",
                )
                imgs.append(res.images)
                nfe += res.nfe
            out["zero-order"] = (torch.cat(imgs), nfe // num_images, time.perf_counter() - t0)
        pipe.scheduler = ddpm
        t0 = time.perf_counter()
        fk = FKSteeringPipeline.from_pipe(pipe)(
            reward=reward,
            batch_size=num_images,
            num_particles=b,
            lmbda=lmbda,
            resample_interval=5,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        )
        out["FK steering"] = (fk.images, b * steps, time.perf_counter() - t0)
        return out

    t_start = time.perf_counter()
    torch.set_grad_enabled(False)
    try:
        main, curves = _all_runs(method_runs, budget, budgets_for_plot, reward)
    finally:
        torch.set_grad_enabled(True)
    folder = new_output_folder(out_root)
    _grid({name: v[0] for name, v in main.items()}, folder / "grid.png")
    _plot(curves, folder / "reward_vs_nfe.png", digit)
    report = dict(
        task=f"steer the unconditional digits DDPM toward the digit {digit}",
        settings=dict(
            digit=digit,
            num_images=num_images,
            budget=budget,
            steps=steps,
            lmbda=lmbda,
            seed=seed,
            fk_scheduler="DDPMScheduler",
            search_scheduler="DDIMScheduler (eta=0)",
            reward="log p(digit | image) under the shipped reward classifier",
            evaluator="independent MLP classifier (never used as a reward)",
        ),
        methods={
            name: dict(nfe_per_image=nfe, seconds=round(sec, 3), **evaluate(imgs))
            for name, (imgs, nfe, sec) in main.items()
        },
        reward_vs_nfe={name: [dict(nfe=n, reward_mean=r) for n, r in pts] for name, pts in curves.items()},
        total_seconds=round(time.perf_counter() - t_start, 2),
        environment=dict(python=platform.python_version(), torch=torch.__version__),
        files=["grid.png", "report.json", "reward_vs_nfe.png"],
    )
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    return folder, report


def _all_runs(method_runs, budget, budgets_for_plot, reward):
    """The main runs at ``budget`` and the reward-against-NFE curves over ``budgets_for_plot``."""
    main = method_runs(budget)
    curves: dict[str, list[tuple[int, float]]] = {}
    for b in sorted(set(budgets_for_plot) | {budget}):
        runs = main if b == budget else method_runs(b)
        for name, (imgs, nfe, _) in runs.items():
            if name != "plain":
                curves.setdefault(name, []).append((nfe, float(reward(imgs).mean())))
    return main, curves


def format_report(report: dict) -> str:
    lines = [f"{'method':<14}{'NFE/image':>10}{'reward':>10}{'eval acc':>10}{'eval conf':>11}{'seconds':>9}"]
    for name, m in report["methods"].items():
        lines.append(
            f"{name:<14}{m['nfe_per_image']:>10}{m['reward_mean']:>10.3f}{m['eval_accuracy']:>10.2f}"
            f"{m['eval_confidence']:>11.3f}{m['seconds']:>9.2f}"
        )
    return "\n".join(lines)


_METHOD = {
    "type": "object",
    "required": ["nfe_per_image", "seconds", "reward_mean", "eval_accuracy", "eval_confidence"],
    "additionalProperties": False,
    "properties": {
        "nfe_per_image": {"type": "integer", "minimum": 1},
        "seconds": {"type": "number", "minimum": 0},
        "reward_mean": {"type": "number", "maximum": 0},  # a log-probability
        "eval_accuracy": {"type": "number", "minimum": 0, "maximum": 1},
        "eval_confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
DEMO_REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fkdiff demo report",
    "type": "object",
    "required": ["task", "settings", "methods", "reward_vs_nfe", "total_seconds", "environment", "files"],
    "properties": {
        "task": {"type": "string"},
        "settings": {
            "type": "object",
            "required": ["digit", "num_images", "budget", "steps", "lmbda", "seed"],
            "properties": {
                "digit": {"type": "integer", "minimum": 0, "maximum": 9},
                "num_images": {"type": "integer", "minimum": 1},
                "budget": {"type": "integer", "minimum": 1},
                "steps": {"type": "integer", "minimum": 1},
                "lmbda": {"type": "number"},
                "seed": {"type": "integer"},
            },
        },
        "methods": {
            "type": "object",
            "required": ["plain", "best-of-N", "FK steering"],
            "additionalProperties": _METHOD,
        },
        "reward_vs_nfe": {
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["nfe", "reward_mean"],
                    "properties": {"nfe": {"type": "integer", "minimum": 1}, "reward_mean": {"type": "number"}},
                },
            },
        },
        "total_seconds": {"type": "number", "minimum": 0},
        "environment": {"type": "object"},
        "files": {"type": "array", "items": {"enum": ["grid.png", "report.json", "reward_vs_nfe.png"]}},
    },
}
