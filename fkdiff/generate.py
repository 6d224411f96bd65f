"""`fkdiff generate`: plain sampling, FK steering or best-of-N noise search on any supported diffusers
pipeline (or the shipped digits model), with rewards chosen by name; writes images, a grid and a JSON
report into a new folder."""

from __future__ import annotations

import json
import logging
import math
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .demo import new_output_folder, to_pil

__all__ = [
    "REWARDS",
    "METHODS",
    "SEARCHES",
    "RewardSpec",
    "parse_reward_spec",
    "build_reward",
    "resolve_device",
    "resolve_dtype",
    "load_pipeline",
    "read_prompts",
    "run_generate",
    "REPORT_SCHEMA",
]

logger = logging.getLogger(__name__)

METHODS = ("plain", "fk", "search")
SEARCHES = ("random", "zero-order", "paths")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DIGITS_MODEL = "digits"  # the shipped offline model


def _clip(source, device):
    from .rewards.clip import CLIPScore

    name, _, tag = (source or "ViT-L-14:openai").partition(":")
    return CLIPScore.from_pretrained(name, tag or None, device=device)


def _aesthetic(source, device):
    from .rewards.clip import AestheticScore

    return AestheticScore.from_pretrained(source or AestheticScore.HEAD_REPO, device=device)


def _imagereward(source, device):
    from .rewards.imagereward import ImageReward

    return ImageReward.from_pretrained(source or ImageReward.REPO, device=device)


def _pickscore(source, device):
    from .rewards.pickscore import PickScore

    return PickScore.from_pretrained(source or PickScore.MODEL, device=device)


def _hpsv2(source, device):
    from .rewards.clip import HPSv2

    return HPSv2.from_pretrained(source or HPSv2.REPO, device=device)


def _digit(target: int):
    def make(source, device):
        from .digits import ASSETS, digit_reward

        return digit_reward(target, source or ASSETS).to(device)

    return make


# name -> (factory(source | None, device) -> reward, what the optional source is)
REWARDS = {
    "clip": (_clip, "open_clip MODEL:TAG or MODEL:/path/to/checkpoint (default ViT-L-14:openai)"),
    "aesthetic": (_aesthetic, "hub repo, folder or file of the LAION aesthetic head"),
    "imagereward": (_imagereward, "hub repo (THUDM/ImageReward), folder or checkpoint file"),
    "pickscore": (_pickscore, "hub id or folder of the PickScore CLIPModel"),
    "hpsv2": (_hpsv2, "hub repo, folder or file of the HPS v2.1 checkpoint"),
    **{f"digit-{d}": (_digit(d), "assets folder holding digits-classifier/") for d in range(10)},
}


@dataclass(frozen=True)
class RewardSpec:
    name: str
    weight: float = 1.0
    source: str | None = None


def parse_reward_spec(text: str) -> RewardSpec:
    """``NAME[:WEIGHT]`` (e.g. ``imagereward``, ``clip:0.5``) → RewardSpec; unknown names list the choices."""
    name, sep, weight = text.strip().partition(":")
    name = name.strip().lower()
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose from {', '.join(REWARDS)}")
    if not sep:
        return RewardSpec(name)
    try:
        w = float(weight)
    except ValueError:
        raise ValueError(f"reward weight must be a number, got {weight!r} in {text!r} (NAME[:WEIGHT])") from None
    if not math.isfinite(w):
        raise ValueError(f"reward weight must be finite, got {weight!r} in {text!r}")
    return RewardSpec(name, w)


def build_reward(specs: list[RewardSpec], sources: dict[str, str] | None = None, device="cpu"):
    """One reward, or a WeightedSum of several; returns ``(reward, {name: part})`` for per-part reporting."""
    from .rewards import WeightedSum

    sources = dict(sources or {})
    unknown = sorted(set(sources) - {s.name for s in specs})
    if unknown:
        raise ValueError(
            f"--reward-source given for {unknown}, which are not among the rewards {[s.name for s in specs]}"
        )
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"each reward may be named once, got {[s.name for s in specs]}")
    parts = {s.name: REWARDS[s.name][0](sources.get(s.name), device) for s in specs}
    if len(specs) == 1 and specs[0].weight == 1.0:
        return parts[specs[0].name], parts
    return WeightedSum([(parts[s.name], s.weight) for s in specs]), parts


def resolve_device(name: str) -> torch.device:
    """A torch device that is really there, or a ValueError saying what is available."""
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from e
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"--device {name}: no CUDA device is available here; use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"--device {name}: only {n} CUDA device(s) here (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: unsupported device type {dev.type!r}; use cpu, cuda or mps")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown --dtype {name!r}; choose from {', '.join(DTYPES)}")
    if name == "float16" and device.type == "cpu":
        raise ValueError("--dtype float16 needs a GPU (cuda or mps); on the CPU use float32 or bfloat16")
    return DTYPES[name]


def load_pipeline(model: str, dtype: torch.dtype = torch.float32):
    """The shipped digits model (``digits``), or any hub id / local folder DiffusionPipeline can load, checked
    to be a family fkdiff supports. Offline with nothing cached: an error saying what to download."""
    from diffusers import DiffusionPipeline

    from .pipelines.families import detect_family

    if model == DIGITS_MODEL:
        from .digits import load_demo_pipeline

        pipe = load_demo_pipeline().to(dtype=dtype)
    else:
        try:
            pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype)
        except (OSError, ValueError, AttributeError) as e:  # offline / missing repo / not a pipeline
            local = Path(model).exists()
            hint = (
                f"{model} is a local path but not a diffusers pipeline folder (no model_index.json?)"
                if local
                else f"could not get {model!r} from the hub (offline, or no such repo). Download it where the hub "
                f"is reachable (huggingface-cli download {model} --local-dir ./{model.split('/')[-1]}) and pass "
                "that folder as --model"
            )
            raise ValueError(f"--model {model}: {hint} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    try:
        detect_family(pipe)
    except ValueError as e:
        raise ValueError(f"--model {model}: {e}") from e
    return pipe


def read_prompts(prompts: list[str] | None, prompts_file: str | None) -> list[str]:
    """``--prompt`` values then the lines of ``--prompts-file`` (blank lines and ``#`` comments skipped)."""
    out = list(prompts or [])
    if prompts_file:
        path = Path(prompts_file)
        if not path.is_file():
            raise ValueError(f"--prompts-file {prompts_file}: no such file")
        out += [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return out


def _prepare_scheduler(pipe, family: str, method: str, scheduler: str, search: str = "random") -> dict:
    """Install the sampler the method needs; returns extra call kwargs (e.g. DDIM's eta).

    ``auto``: FK steering needs fresh noise at each step so that copies of a resampled particle diverge:
    VP pipelines whose sampler is deterministic (or PNDM) get DDIM with η = 1, flow-matching ones
    FlowMatch-Euler with stochastic sampling. Search needs the opposite (an image determined by its
    noise): a stochastic VP sampler becomes DDIM with η = 0. Plain sampling keeps the pipeline's sampler.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, EulerAncestralDiscreteScheduler

    from .pipelines.intercept import UNSUPPORTED_SCHEDULERS, is_stochastic

    choices = ("auto", "keep", "ddim", "ddpm", "euler-ancestral")
    if scheduler not in choices:
        raise ValueError(f"unknown --scheduler {scheduler!r}; choose from {', '.join(choices)}")
    cfg = pipe.scheduler.config
    flow = family in ("sd3", "flux")
    if scheduler in ("ddim", "ddpm", "euler-ancestral") and flow:
        raise ValueError(f"--scheduler {scheduler} is for VP (epsilon/v) models; {family} is flow matching")
    if scheduler == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(cfg)
        return {"eta": 1.0} if method == "fk" else {}
    if scheduler == "ddpm":
        pipe.scheduler = DDPMScheduler.from_config(cfg)
        return {}
    if scheduler == "euler-ancestral":
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(cfg)
        return {}
    if scheduler == "keep" or method == "plain":
        return {}
    name = type(pipe.scheduler).__name__
    if method == "search":  # the image must be a function of the initial noise alone
        stateless = name in ("DDIMScheduler", "EulerDiscreteScheduler")  # path search re-enters the schedule
        if not flow and (is_stochastic(pipe.scheduler, {}) or (search == "paths" and not stateless)):
            pipe.scheduler = DDIMScheduler.from_config(cfg)
        return {}
    if flow:
        if not is_stochastic(pipe.scheduler, {}):
            from diffusers import FlowMatchEulerDiscreteScheduler

            pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(cfg, stochastic_sampling=True)
        return {}
    if name in UNSUPPORTED_SCHEDULERS or not is_stochastic(pipe.scheduler, {}):
        if name == "DDIMScheduler" or family != "unconditional":
            pipe.scheduler = DDIMScheduler.from_config(cfg)
            return {"eta": 1.0}
        pipe.scheduler = DDPMScheduler.from_config(cfg)
    return {}


def _slug(text: str, n: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n] or "image"


def _save_grid(images: torch.Tensor, path: Path, min_cell: int = 64) -> None:
    from PIL import Image

    n, c, h, w = images.shape
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    scale = max(1, math.ceil(min_cell / max(h, w)))
    canvas = Image.new("RGB", (cols * w * scale, rows * h * scale), "white")
    for i, img in enumerate(images):
        tile = to_pil(img).convert("RGB").resize((w * scale, h * scale), Image.NEAREST)
        canvas.paste(tile, ((i % cols) * w * scale, (i // cols) * h * scale))
    canvas.save(path)


def run_generate(
    *,
    model: str = DIGITS_MODEL,
    prompts: list[str] | None = None,
    method: str = "fk",
    search: str = "random",
    rounds: int = 4,
    particles: int = 4,
    rewards: list[str] | None = None,
    reward_sources: dict[str, str] | None = None,
    steps: int = 50,
    guidance: float | None = None,
    lmbda: float = 10.0,
    num_images: int = 4,
    height: int | None = None,
    width: int | None = None,
    scheduler: str = "auto",
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    out_root: str | Path = "fkdiff-out",
) -> tuple[Path, dict]:
    """Generate with ``method``; returns the new output folder and the report written there."""
    from .pipelines import FKSteeringPipeline, NoiseSearchPipeline
    from .pipelines.intercept import is_stochastic

    t_start = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"unknown --method {method!r}; choose from {', '.join(METHODS)}")
    if search not in SEARCHES:
        raise ValueError(f"unknown --search {search!r}; choose from {', '.join(SEARCHES)}")
    for name, v in (("particles", particles), ("steps", steps), ("num_images", num_images), ("rounds", rounds)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
    specs = [parse_reward_spec(r) for r in (rewards or [])]
    if method != "plain" and not specs:
        raise ValueError(f"--method {method} needs at least one --reward (choose from {', '.join(REWARDS)})")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)

    t0 = time.perf_counter()
    pipe = load_pipeline(model, torch_dtype)
    pipe.to(dev)
    pipe.set_progress_bar_config(leave=False)
    steer = FKSteeringPipeline.from_pipe(pipe)
    family = steer.family.name
    conditional = family != "unconditional"
    prompts = list(prompts or [])
    if conditional and not prompts:
        raise ValueError(f"--model {model} is a text-to-image {family} pipeline: give --prompt or --prompts-file")
    if not conditional and prompts:
        raise ValueError(f"--model {model} is unconditional: it takes no prompts (use --num-images)")
    reward, parts = build_reward(specs, reward_sources, dev) if specs else (None, {})
    extra = _prepare_scheduler(pipe, family, method, scheduler, search)
    load_seconds = time.perf_counter() - t0

    call = dict(num_inference_steps=steps, output_type="pt", **extra)
    if guidance is not None:
        if not conditional:
            raise ValueError("--guidance applies to text-to-image pipelines only")
        call["guidance_scale"] = guidance
    if height is not None:
        call["height"] = height
    if width is not None:
        call["width"] = width
    groups = prompts if conditional else [None] * num_images
    counter = {"nfe": 0}
    t0 = time.perf_counter()
    seeds: list[int | None]
    noises: list[torch.Tensor] = []
    if method == "search":
        searcher = NoiseSearchPipeline.from_pipe(pipe)
        images, seeds = [], []
        for i, p in enumerate(groups):
            s = seed * 1000 + i
            if search == "random":
                res = searcher.random_search(p, verifier=reward, num_candidates=particles, seed=s, **call)
            elif search == "zero-order":
                res = searcher.zero_order_search(
                    p, verifier=reward, num_neighbors=particles, num_rounds=rounds, seed=s, **call
                )
            else:
                res = searcher.path_search(
                    p, verifier=reward, num_paths=particles, num_branches=particles, seed=s, **call
                )
            images.append(res.images[0])
            seeds.append(None if res.best_seed is None else int(res.best_seed))
            noises.append(res.best_noise.detach().float().cpu().contiguous())
            counter["nfe"] += res.nfe
        images = torch.stack(images)
    else:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        kwargs = dict(prompt=prompts) if conditional else dict(batch_size=num_images)
        with steer._counting(counter):
            if method == "plain":  # every diffusers pipeline has "np" (NHWC in [0, 1]); not all have "pt"
                np_images = pipe(**kwargs, generator=gen, **{**call, "output_type": "np"}).images
                images = torch.from_numpy(np_images).permute(0, 3, 1, 2)
            else:
                images = steer(
                    **kwargs, reward=reward, num_particles=particles, lmbda=lmbda, generator=gen, **call
                ).images
        seeds = [seed] * len(groups)
    images = images.float()
    gen_seconds = time.perf_counter() - t0

    scores, total = {}, None
    with torch.no_grad():
        for s in specs:
            scores[s.name] = parts[s.name](images.to(dev), prompts if conditional else None).float().cpu()
            total = s.weight * scores[s.name] + (0 if total is None else total)

    folder = new_output_folder(out_root, prefix=f"generate-{method}")
    names = [f"{i:03d}-{_slug(p) if p else 'sample'}.png" for i, p in enumerate(groups)]
    for img, name in zip(images, names):
        to_pil(img).save(folder / name)
    _save_grid(images, folder / "grid.png")
    extra_files = []
    if noises:  # the winners' initial noises: `latents=` of the stock pipeline regenerates them (random, zero-order)
        from safetensors.torch import save_file

        save_file({n[:-4]: z for n, z in zip(names, noises)}, str(folder / "noises.safetensors"))
        extra_files.append("noises.safetensors")
    report = {
        "command": "generate",
        "model": model,
        "family": family,
        "method": method,
        "search": search if method == "search" else None,
        "settings": {
            "particles": particles,
            "rounds": rounds if method == "search" and search == "zero-order" else None,
            "steps": steps,
            "guidance": guidance,
            "lmbda": lmbda if method == "fk" else None,
            "scheduler": type(pipe.scheduler).__name__,
            "scheduler_kwargs": extra,
            "scheduler_stochastic": is_stochastic(pipe.scheduler, extra),
            "height": int(images.shape[-2]),
            "width": int(images.shape[-1]),
            "seed": seed,
            "device": str(dev),
            "dtype": dtype,
            "rewards": [
                {"name": s.name, "weight": s.weight, "source": (reward_sources or {}).get(s.name)} for s in specs
            ],
        },
        "images": [
            {
                "file": names[i],
                "prompt": groups[i],
                "seed": seeds[i],
                "reward": None if total is None else float(total[i]),
                "rewards": {k: float(v[i]) for k, v in scores.items()},
            }
            for i in range(len(groups))
        ],
        "nfe": counter["nfe"],
        "nfe_per_image": counter["nfe"] / len(groups),
        "timings": {
            "load_seconds": load_seconds,
            "generate_seconds": gen_seconds,
            "total_seconds": time.perf_counter() - t_start,
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
        },
        "files": ["grid.png", "report.json", *extra_files, *names],
    }
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    return folder, report


_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fkdiff generate report",
    "type": "object",
    "required": ["command", "model", "family", "method", "settings", "images", "nfe", "timings", "files"],
    "properties": {
        "command": {"const": "generate"},
        "model": {"type": "string"},
        "family": {"enum": ["flux", "sd3", "sdxl", "sd", "unconditional"]},
        "method": {"enum": list(METHODS)},
        "search": {"enum": [*SEARCHES, None]},
        "settings": {
            "type": "object",
            "required": ["particles", "steps", "seed", "device", "dtype", "rewards", "scheduler"],
            "properties": {
                "particles": {"type": "integer", "minimum": 1},
                "steps": {"type": "integer", "minimum": 1},
                "guidance": _NUM_OR_NULL,
                "lmbda": _NUM_OR_NULL,
                "seed": {"type": "integer"},
                "device": {"type": "string"},
                "dtype": {"enum": list(DTYPES)},
                "scheduler": {"type": "string"},
                "rewards": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "weight"],
                        "properties": {"name": {"enum": list(REWARDS)}, "weight": _NUM},
                    },
                },
            },
        },
        "images": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["file", "prompt", "seed", "reward", "rewards"],
                "properties": {
                    "file": {"type": "string", "pattern": r"^\d{3}-[a-z0-9-]+\.png$"},
                    "prompt": {"type": ["string", "null"]},
                    "seed": {"type": ["integer", "null"]},
                    "reward": _NUM_OR_NULL,
                    "rewards": {"type": "object", "additionalProperties": _NUM},
                },
            },
        },
        "nfe": {"type": "integer", "minimum": 1},
        "nfe_per_image": _NUM,
        "timings": {
            "type": "object",
            "required": ["load_seconds", "generate_seconds", "total_seconds"],
            "additionalProperties": {"type": "number", "minimum": 0},
        },
        "files": {"type": "array", "items": {"type": "string"}},
    },
}
